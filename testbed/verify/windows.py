"""Time windows of a failover run (pure): send times, the bond's windows, the agent's reactions, phases.

The definitions are ``failover``'s (its docstring); this module holds the
arithmetic on CLOCK_REALTIME nanoseconds that ``evaluate_failover`` uses.

Public API:
    SendTimes(record_lists, start_ns, rate_pps)(seq) -> ns     send time of a sequence number
    Reaction(done_ns, latency_ms, trigger)                     NamedTuple (the agent's)
    lost_times, until_delivered, known_until, bond_windows, agent_windows, phases, tail, majority, series
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from traffic.analysis import timeline

SERIES_BUCKET_MS = 10.0  # the finest timeline bucket (plots)


class Reaction(NamedTuple):
    done_ns: int  # CLOCK_REALTIME when the agent had applied its rules
    latency_ms: Optional[float]  # the agent's own figure: event read -> last rule applied
    trigger: str = ""


def majority(counts: Mapping[str, int]) -> Optional[str]:
    return max(sorted(counts), key=lambda k: counts[k]) if counts else None


class SendTimes:
    """Send time (CLOCK_REALTIME ns) of every sequence number, from the stamps of what arrived anywhere."""

    def __init__(self, record_lists: Sequence[Sequence[Any]], start_ns: int, rate_pps: float) -> None:
        known: Dict[int, int] = {}
        for recs in record_lists:
            for r in recs:
                if r.seq not in known or r.tx_ns < known[r.seq]:
                    known[r.seq] = r.tx_ns
        self.seqs = sorted(known)
        self.times = [known[q] for q in self.seqs]
        self.start_ns = start_ns
        self.interval = 1e9 / rate_pps

    def __call__(self, seq: int) -> int:
        i = bisect.bisect_left(self.seqs, seq)
        if i < len(self.seqs) and self.seqs[i] == seq:
            return self.times[i]
        if 0 < i < len(self.seqs):  # between two known: interpolate
            q0, q1, t0, t1 = self.seqs[i - 1], self.seqs[i], self.times[i - 1], self.times[i]
            return t0 + (t1 - t0) * (seq - q0) // (q1 - q0)
        if i == len(self.seqs) and self.seqs:  # after the last known: its time plus the schedule's spacing
            return self.times[-1] + round((seq - self.seqs[-1]) * self.interval)
        return self.start_ns + round(seq * self.interval)


def lost_times(lost_runs: Sequence[Tuple[int, int]], when: Callable[[int], int]) -> List[int]:
    return [when(q) for a, b in lost_runs for q in range(a, b + 1)]


def until_delivered(delivered: Sequence[int], spans: Sequence[Tuple[int, int]],
                    posts_ns: Sequence[int]) -> List[Tuple[int, int]]:
    """Per event: (its start, the send time of the first packet sent after its call returned that arrived) --
    how late the reference's outage may have ended, as far as its stream can tell -- when that packet was
    sent within ``post`` of the call's end. ``delivered``: the reference's send times of what arrived, sorted."""
    out = []
    for (ev0, ev1), post in zip(spans, posts_ns):
        i = bisect.bisect_right(delivered, ev1)
        if i < len(delivered) and delivered[i] <= ev1 + post:
            out.append((ev0, delivered[i]))
    return out


def known_until(windows: Sequence[Sequence[int]], outages: Sequence[Tuple[int, int]]) -> List[int]:
    """Per window: its end, or later where an event in it shows the reference's outage may have lasted
    longer (``until_delivered``)."""
    return [max([hi] + [end for ev0, end in outages if lo <= ev0 <= hi]) for lo, hi in windows]


def merge(spans: Sequence[Tuple[int, int]]) -> List[List[int]]:
    out: List[List[int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def bond_windows(ref_runs: Sequence[Tuple[int, int]], spans: Sequence[Tuple[int, int]], pre_ns: int,
                  posts_ns: Sequence[int]) -> List[List[int]]:
    """The event calls' spans and the reference's lost runs near an event (send time), merged."""
    out = list(spans)
    for a, b in ref_runs:
        if any(ev0 - pre_ns <= b and a <= ev1 + post for (ev0, ev1), post in zip(spans, posts_ns)):
            out.append((a, b))
    return merge(out)


def agent_windows(windows: Sequence[Sequence[int]], reactions: Sequence[Reaction], start_ns: int,
                   notice_ns: int, known: Optional[Sequence[int]] = None) -> List[Optional[int]]:
    """Per window: until when the agent's reactions that heard of its change in time extend it (or None) --
    within ``notice_ns`` of its end, or of ``known[i]`` when later (``known_until``)."""
    ends: List[Optional[int]] = [None] * len(windows)
    for r in sorted(reactions, key=lambda r: r.done_ns):
        heard = r.done_ns - int((r.latency_ms or 0.0) * 1e6)
        if heard < start_ns:
            continue
        for i, (lo, hi) in enumerate(windows):
            end = max(hi, ends[i] or hi)
            if lo <= heard <= max(end, known[i] if known else end) + notice_ns:
                ends[i] = max(end, r.done_ns)
                break
    return ends


def phases(records: Sequence[Any], fail: Optional[Tuple[int, int]], restore: Optional[Tuple[int, int]],
            settle_ns: int):
    """Split by send time: before the failure began, after it took effect (+ settle) until shortly
    before the repair, after the repair took effect (+ settle); what was sent in between is in
    transition and left out."""
    before, after, restored = [], [], []
    for r in records:
        t = r.tx_ns
        if fail is None or t < fail[0]:
            before.append(r)
        elif t >= fail[1] + settle_ns and (restore is None or t < restore[0] - settle_ns):
            after.append(r)
        elif restore is not None and t >= restore[1] + settle_ns:
            restored.append(r)
    return before, after, restored


def tail(records: Sequence[Any], share: float = 0.3) -> List[Any]:
    """The records sent in the last ``share`` of the time they span."""
    if not records:
        return []
    t0 = min(r.tx_ns for r in records)
    t1 = max(r.tx_ns for r in records)
    cut = t1 - (t1 - t0) * share
    return [r for r in records if r.tx_ns >= cut]


def series(names: Sequence[str], records: Mapping[str, Sequence[Any]],
            wire_records: Mapping[str, Sequence[Any]], start_ns: int, end_ns: int,
            events: Sequence[Tuple[str, int, int]], rate_pps: float) -> Dict[str, Any]:
    bucket = max(SERIES_BUCKET_MS, float(round(5000.0 / rate_pps)))  # ~5 packets of a stream per bucket
    wires: Dict[str, Dict[str, List[int]]] = {}
    delivered: Dict[str, List[int]] = {}
    for name in names:
        tl = timeline(wire_records.get(name, ()), bucket_ms=bucket, start_ns=start_ns, end_ns=end_ns)
        for wire, counts in tl.wires.items():
            wires.setdefault(wire, {})[name] = counts
        dl = timeline(records.get(name, ()), bucket_ms=bucket, start_ns=start_ns, end_ns=end_ns)
        delivered[name] = [sum(x) for x in zip(*dl.wires.values())] if dl.wires else []
    arrivals = {name: sorted(round((r.rx_ns - start_ns) / 1e6, 2) for r in records.get(name, ()))
                for name in names}  # ms from the start, per stream: the plot's lanes and their gaps
    return {"start_ns": start_ns, "bucket_ms": bucket, "wires": dict(sorted(wires.items())),
            "delivered": delivered, "arrivals": arrivals,
            "events": [{"name": n, "ns": ns, "end_ns": e} for n, ns, e in events]}
