"""Verdicts on captured traffic (pure; records are ``RxRecord`` or alike).

A record needs ``seq``, ``flow_id``, ``rx_ns`` and ``ifname`` (the wire).
Arrival order is ``rx_ns`` order (ties keep capture order).

Definitions:
- lost: expected sequence numbers never received.  Expected is
  ``first_seq .. first_seq + expected - 1`` when ``expected`` is given (the
  sender's count), else ``min .. max`` of what arrived.
- duplicated: arrivals of a sequence number beyond its first.
- reordered: arrivals (first copies only) whose seq is below the highest seq
  seen before them -- over the whole stream (``reordered``) and within each
  flow (``reordered_in_flow``; what TCP would notice).  When the flows of a
  stream take different wires, cross-flow reordering is expected; in-flow
  reordering is not.
- gaps: differences between consecutive arrival times; ``largest_gap_ms`` is
  the largest, ``gap_around(records, event_ns, window_ms)`` the largest gap
  overlapping ``[event - window, event + window]`` (e.g. the outage around a
  link failure; the event time must be CLOCK_REALTIME, as ``time.time_ns()``).

Public API:
    StreamReport (dataclass; .to_dict(), .clean -> bool)
    analyze_stream(records, *, expected=None, first_seq=0, event_ns=None, window_ms=500.0)
        -> StreamReport
    Gap(ms, start_ns, end_ns)                                      NamedTuple
    gaps(records) -> list[Gap];  gap_around(records, event_ns, window_ms=500.0) -> Gap | None
    Timeline(start_ns, bucket_ns, wires: dict[str, list[int]])     (.to_dict())
    timeline(records, *, bucket_ms=1.0, start_ns=None, end_ns=None) -> Timeline
    count_by_wire(records) -> dict[str, int]
    flow_wires(records) -> dict[int, dict[str, int]]               flow -> wire -> packets
    flow_wire_map(records) -> dict[int, str]                       flow -> its (majority) wire
    DistributionReport (dataclass; .to_dict())
    distribution(counts: Mapping[str, int], expected_share: Mapping[str, float] | None = None)
        -> DistributionReport           (chi-squared vs expected shares; uniform by default)
    StickReport; stickiness(records) -> StickReport                every flow on one wire?
    MoveReport; moved_flows(before, after, dead) -> MoveReport     only the dead wire's flows moved?
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from traffic.stats import chi_square


def _by_arrival(records: Iterable[Any]) -> List[Any]:
    return sorted(records, key=lambda r: r.rx_ns)  # stable: ties keep capture order


def _runs(values: Sequence[int]) -> List[Tuple[int, int]]:
    """Sorted ints as inclusive (first, last) runs: [1,2,3,7] -> [(1,3),(7,7)]."""
    out: List[Tuple[int, int]] = []
    for v in values:
        if out and v == out[-1][1] + 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


class Gap(NamedTuple):
    ms: float
    start_ns: int  # arrival before the gap
    end_ns: int  # arrival after it


def gaps(records: Iterable[Any]) -> List[Gap]:
    times = [r.rx_ns for r in _by_arrival(records)]
    return [Gap((b - a) / 1e6, a, b) for a, b in zip(times, times[1:])]


def gap_around(records: Iterable[Any], event_ns: int, window_ms: float = 500.0) -> Optional[Gap]:
    """The largest inter-arrival gap overlapping ``event_ns +- window_ms`` (None if none)."""
    lo = event_ns - int(window_ms * 1e6)
    hi = event_ns + int(window_ms * 1e6)
    near = [g for g in gaps(records) if g.end_ns >= lo and g.start_ns <= hi]
    return max(near, key=lambda g: g.ms) if near else None


@dataclass(frozen=True)
class StreamReport:
    expected: int
    received: int  # arrivals, duplicates included
    unique: int
    lost: int
    duplicated: int
    reordered: int
    reordered_in_flow: int
    largest_gap_ms: float
    largest_gap_start_ns: Optional[int]  # arrival before the largest gap
    largest_gap_end_ns: Optional[int]  # arrival after it
    first_rx_ns: Optional[int]
    last_rx_ns: Optional[int]
    lost_runs: List[Tuple[int, int]] = field(default_factory=list)  # inclusive seq ranges
    event_gap_ms: Optional[float] = None
    event_gap_start_ns: Optional[int] = None
    event_gap_end_ns: Optional[int] = None

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.reordered_in_flow == 0

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["lost_runs"] = [list(r) for r in self.lost_runs]
        return out


def analyze_stream(
    records: Iterable[Any],
    *,
    expected: Optional[int] = None,
    first_seq: int = 0,
    event_ns: Optional[int] = None,
    window_ms: float = 500.0,
) -> StreamReport:
    arrivals = _by_arrival(records)
    seen: set = set()
    duplicated = reordered = reordered_in_flow = 0
    top = -1
    flow_top: Dict[int, int] = {}
    for r in arrivals:
        if r.seq in seen:
            duplicated += 1
            continue
        seen.add(r.seq)
        if r.seq < top:
            reordered += 1
        else:
            top = r.seq
        ft = flow_top.get(r.flow_id, -1)
        if r.seq < ft:
            reordered_in_flow += 1
        else:
            flow_top[r.flow_id] = r.seq
    if expected is not None:
        lo, hi = first_seq, first_seq + expected - 1
    elif seen:
        lo, hi = min(seen), max(seen)
    else:
        lo, hi = 0, -1
    missing = [s for s in range(lo, hi + 1) if s not in seen]
    all_gaps = gaps(arrivals)
    biggest = max(all_gaps, key=lambda g: g.ms) if all_gaps else None
    event_gap = gap_around(arrivals, event_ns, window_ms) if event_ns is not None else None
    return StreamReport(
        expected=hi - lo + 1,
        received=len(arrivals),
        unique=len(seen),
        lost=len(missing),
        duplicated=duplicated,
        reordered=reordered,
        reordered_in_flow=reordered_in_flow,
        largest_gap_ms=biggest.ms if biggest else 0.0,
        largest_gap_start_ns=biggest.start_ns if biggest else None,
        largest_gap_end_ns=biggest.end_ns if biggest else None,
        first_rx_ns=arrivals[0].rx_ns if arrivals else None,
        last_rx_ns=arrivals[-1].rx_ns if arrivals else None,
        lost_runs=_runs(missing),
        event_gap_ms=event_gap.ms if event_gap else None,
        event_gap_start_ns=event_gap.start_ns if event_gap else None,
        event_gap_end_ns=event_gap.end_ns if event_gap else None,
    )


# -- per-wire views -----------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    start_ns: int
    bucket_ns: int
    wires: Dict[str, List[int]]  # wire -> packets per bucket

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def timeline(
    records: Iterable[Any],
    *,
    bucket_ms: float = 1.0,
    start_ns: Optional[int] = None,
    end_ns: Optional[int] = None,
) -> Timeline:
    """Packets per ``bucket_ms`` bucket per wire, from ``start_ns`` (default: first arrival)."""
    recs = list(records)
    bucket = max(1, int(bucket_ms * 1e6))
    if not recs:
        return Timeline(start_ns or 0, bucket, {})
    start = min(r.rx_ns for r in recs) if start_ns is None else start_ns
    end = max(r.rx_ns for r in recs) if end_ns is None else end_ns
    n = max(0, (end - start) // bucket) + 1
    wires: Dict[str, List[int]] = {}
    for r in recs:
        i = (r.rx_ns - start) // bucket
        if 0 <= i < n:
            wires.setdefault(r.ifname, [0] * n)[i] += 1
    return Timeline(start, bucket, dict(sorted(wires.items())))


def count_by_wire(records: Iterable[Any]) -> Dict[str, int]:
    out: Dict[str, int] = defaultdict(int)
    for r in records:
        out[r.ifname] += 1
    return dict(sorted(out.items()))


def flow_wires(records: Iterable[Any]) -> Dict[int, Dict[str, int]]:
    out: Dict[int, Dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        out[r.flow_id][r.ifname] += 1
    return {f: dict(sorted(w.items())) for f, w in sorted(out.items())}


def flow_wire_map(records: Iterable[Any]) -> Dict[int, str]:
    """Each flow's wire: the one that carried most of its packets (ties: first by name)."""
    return {f: max(sorted(w), key=lambda k: w[k]) for f, w in flow_wires(records).items()}


# -- distribution ---------------------------------------------------------------


@dataclass(frozen=True)
class DistributionReport:
    counts: Dict[str, int]
    total: int
    shares: Dict[str, float]
    expected_share: Dict[str, float]
    chi2: float
    dof: int
    p_value: float
    max_deviation: float  # max |share - expected share| (absolute, 0..1)

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        if not math.isfinite(self.chi2):
            out["chi2"] = None  # JSON has no infinity: a port got packets it should never get
        return out


def distribution(counts: Mapping[str, int], expected_share: Optional[Mapping[str, float]] = None) -> DistributionReport:
    """Chi-squared goodness of fit of ``counts`` (port -> packets or flows) to the shares.

    ``expected_share`` defaults to uniform over the ports in ``counts``; it is
    normalized, and a port it names but ``counts`` lacks counts as 0.
    """
    ports = sorted(set(counts) | set(expected_share or {}))
    if expected_share is None:
        expected_share = {p: 1.0 for p in ports}
    norm = sum(expected_share.get(p, 0.0) for p in ports)
    if norm <= 0 or len(ports) < 2:
        raise ValueError("distribution needs >= 2 ports and a positive expected share")
    share_exp = {p: expected_share.get(p, 0.0) / norm for p in ports}
    obs = {p: counts.get(p, 0) for p in ports}
    total = sum(obs.values())
    shares = {p: (obs[p] / total if total else 0.0) for p in ports}
    if total:
        chi2, dof, p_value = chi_square([obs[p] for p in ports], [share_exp[p] * total for p in ports])
    else:
        chi2, dof, p_value = 0.0, len(ports) - 1, 1.0
    dev = max(abs(shares[p] - share_exp[p]) for p in ports) if total else 0.0
    return DistributionReport(obs, total, shares, share_exp, chi2, dof, p_value, dev)


# -- flow placement ----------------------------------------------------------------


@dataclass(frozen=True)
class StickReport:
    ok: bool
    flows: int
    violators: Dict[int, Dict[str, int]]  # flow -> wire -> packets, for flows on > 1 wire

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def stickiness(records: Iterable[Any]) -> StickReport:
    """Every flow seen on exactly one wire?"""
    per_flow = flow_wires(records)
    bad = {f: w for f, w in per_flow.items() if len(w) > 1}
    return StickReport(not bad, len(per_flow), bad)


@dataclass(frozen=True)
class MoveReport:
    ok: bool
    moved: List[int]  # flows of the dead wire now on a live one (as required)
    stuck: List[int]  # flows of the dead wire still reported on it
    moved_unexpectedly: Dict[int, Tuple[str, str]]  # live-wire flows that moved: (before, after)
    vanished: List[int]  # flows in ``before`` absent from ``after``
    appeared: List[int]  # flows in ``after`` absent from ``before``

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["moved_unexpectedly"] = {f: list(v) for f, v in self.moved_unexpectedly.items()}
        return out


def moved_flows(before: Mapping[int, str], after: Mapping[int, str], dead: str) -> MoveReport:
    """Did exactly the flows of wire ``dead`` move (each to a live wire) and no other?"""
    moved, stuck, vanished = [], [], []
    unexpected: Dict[int, Tuple[str, str]] = {}
    for f in sorted(before):
        if f not in after:
            vanished.append(f)
        elif before[f] == dead:
            (stuck if after[f] == dead else moved).append(f)
        elif after[f] != before[f]:
            unexpected[f] = (before[f], after[f])
    appeared = sorted(set(after) - set(before))
    ok = not stuck and not unexpected and not vanished
    return MoveReport(ok, moved, stuck, unexpected, vanished, appeared)
