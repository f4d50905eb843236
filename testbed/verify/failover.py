"""The failover verdict (pure): streams through a port failure, the offload's loss laid over the bond's.

All streams of a run share one schedule (``streams.run_streams``): packet
``k`` of every stream leaves in the same turn of the sending loop, so the
bond's own outage, read from its stream, can be laid over a VF's or the
RDMA function's stream packet by packet.

Definitions (per stream; ``rx`` = client -> target, RX steering; ``tx`` =
target -> client, TX steering):

- ``lost``, ``duplicated``, ``reordered``, ``reordered_in_flow``,
  ``largest_gap_ms``: as ``traffic.analysis.analyze_stream`` (arrivals at
  the destination, sequence numbers ``0 .. ticks-1`` expected);
- ``fail_gap_ms`` / ``restore_gap_ms``: the largest inter-arrival gap
  overlapping ``window_ms`` around the failure / the repair;
- send time of a sequence number: the ``tx_ns`` stamped in its packets
  (the same instant in every stream; from whichever stream's copy arrived,
  interpolated between neighbours for one lost everywhere).  Judging in
  send time, not in the schedule, keeps the verdict right when the sender
  falls behind and catches up (a loaded TCG guest does);
- the **bond's windows**: the span of each netlink call that made an event
  (the carrier drops somewhere inside it; in a slow guest it can take
  hundreds of ms) and each run of packets the bond's stream of the same
  direction lost near an event (up to ``window_ms`` + ``extra_ms`` after
  it; ``extra_ms`` is the bond's updelay, after which a repaired port comes
  into use), overlapping ones merged;
- the **agent's reaction**: the offload follows the bond -- the agent hears
  the bond's netlink event, then moves its rules.  A reaction of the agent
  (``agent.json``: when it was done and how long it took from hearing the
  event) that heard of the change at most ``agent_notice_ms`` after a
  window ended extends that window to when its rules were in place.  A
  reaction heard later (a port that comes back after updelay) extends
  nothing: what the offload lost before it is not the bond's doing;
- per lost packet, by send time: ``lost_in_bond_window``, else
  ``lost_in_agent_reaction``, else ``lost_beyond_bond`` -- windows widened
  by ``agent_allowance_ms`` (packets in flight, the agent's millisecond
  stamps).  For a bond stream every loss outside its own windows is beyond.
- ``wires_before`` / ``wires_after`` / ``wires_restored``: packets of the
  stream per port on the switch-side capture, by send time: before the
  failure began, from ``agent_allowance_ms`` after it took effect (the
  event's end) to the repair, and likewise after the repair; ``wire_*`` is
  the port that carried most of them; ``wire_end`` most of the last 30 %
  after the repair (where the stream settled); ``flows_back``: flows whose
  port at the end is their port before the failure.

Validity: a sender far behind its schedule (an overloaded machine) bunches
packets and can skew the time-based figures; such a run is ``invalid``, and
``LabTraffic`` redoes a failed invalid run when the lab can be put back as
it was (``earlier_attempts``). Checks: per stream no duplicate and no
in-flow reordering; every offload
stream loses nothing beyond the bond's window and the agent's reaction
(the acceptance figure), every reaction of the agent took at most
``max_agent_latency_ms`` from the event to its rules applied; after the
failure no packet crossed the failed port and some crossed a live one;
RoCEv2 arrives with intact ICRC and its PSNs in order per QP; with
``expect_return`` (an active-backup primary failed and repaired, or a hash
mode, whose table is native again once every port is back) every flow
ends on the port it used before the failure.

Public API:
    FailoverTolerance(agent_allowance_ms=50.0, agent_notice_ms=150.0, max_agent_latency_ms=500.0,
                      window_ms=500.0, max_duplicated=0, max_reordered_in_flow=0,
                      max_send_late_ms=250.0)                                 frozen dataclass
    StreamMeta(name, target, kind, direction, flows)                      frozen dataclass
    Reaction(done_ns, latency_ms, trigger)                                NamedTuple (the agent's)
    StreamFigures                                                          dataclass; .to_dict()
    FailoverResult                                                         dataclass; kind "failover",
        .passed, .verdict, .checks, .invalid, .earlier_attempts, .lost (beyond the bond's window and the
        agent's reaction, offload streams), .lost_total, .stream(name), .bond_gap_ms, .offload_gap_ms,
        .summary, .to_dict(series=False)
    RdmaResult(FailoverResult)                                             kind "rdma"; .icrc_bad, .psn_errors
    SendTimes(record_lists, start_ns, rate_pps)(seq) -> ns                 send time of a sequence number
    evaluate_failover(metas, records, wire_records, *, ticks, rate_pps, start_ns, events,
                      failed_port, refused=None, reactions=(), extra_ms=0.0, expect_return=False,
                      tolerance=FailoverTolerance()) -> (list[StreamFigures], list[Check], series dict)
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from testbed.verify.checks import Check, Verdicts, check
from testbed.verify.psn import psn_order
from traffic.analysis import analyze_stream, count_by_wire, flow_wire_map, gap_around, timeline

SERIES_BUCKET_MS = 10.0  # the finest timeline bucket (plots)


@dataclass(frozen=True)
class FailoverTolerance:
    agent_allowance_ms: float = 50.0  # slack around the windows (packets in flight, ms time stamps)
    agent_notice_ms: float = 150.0  # the agent hears of a change at most this long after a window ended
    max_agent_latency_ms: float = 500.0  # event -> rules applied, per reaction (TCG-sized; ~ms on a host)
    window_ms: float = 500.0  # how far after an event its gap and the bond's loss are sought
    max_duplicated: int = 0
    max_reordered_in_flow: int = 0
    max_send_late_ms: float = 250.0  # the sender further behind its schedule: the run is ``invalid``

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class Reaction(NamedTuple):
    done_ns: int  # CLOCK_REALTIME when the agent had applied its rules
    latency_ms: Optional[float]  # the agent's own figure: event read -> last rule applied
    trigger: str = ""


@dataclass(frozen=True)
class StreamMeta:
    name: str  # "vf0 rx"
    target: str  # "server:vf0"
    kind: str  # "vf" | "rdma" | "bond"
    direction: str  # "rx" (client -> target) | "tx" (target -> client)
    flows: int = 1

    @property
    def offload(self) -> bool:
        return self.kind != "bond"


@dataclass
class StreamFigures:
    name: str
    target: str
    kind: str
    direction: str
    flows: int
    sent: int
    refused: int
    received: int
    lost: int
    lost_in_bond_window: int
    lost_in_agent_reaction: int
    lost_beyond_bond: int
    duplicated: int
    reordered: int
    reordered_in_flow: int
    largest_gap_ms: float
    fail_gap_ms: Optional[float]
    restore_gap_ms: Optional[float]
    lost_runs: List[Tuple[int, int]]
    windows: List[Dict[str, Optional[float]]]  # ms from the start: bond window [from, to], agent done
    wires_before: Dict[str, int]
    wires_after: Dict[str, int]
    wires_restored: Dict[str, int]
    wire_before: Optional[str]
    wire_after: Optional[str]
    wire_restored: Optional[str]
    wire_end: Optional[str]
    flows_back: Optional[int]  # flows ending on their port from before the failure (None: no repair)
    roce: Optional[Dict[str, Any]] = None  # psn.PsnReport.to_dict() for RoCEv2 streams

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["lost_runs"] = [list(r) for r in self.lost_runs]
        return out


@dataclass
class FailoverResult(Verdicts):
    lab: str
    fail: str
    rate_pps: float
    duration_s: float
    ticks: int
    events: List[Dict[str, Any]]
    tolerance: FailoverTolerance
    streams: List[StreamFigures]
    checks: List[Check]
    agent: Dict[str, Any] = field(default_factory=dict)  # the agent's reactions to the events
    send: Dict[str, Any] = field(default_factory=dict)  # schedule figures (max lateness, elapsed)
    series: Dict[str, Any] = field(default_factory=dict, repr=False)  # per-wire timelines, for plots
    earlier_attempts: List[Dict[str, Any]] = field(default_factory=list)  # runs redone as not valid
    kind: str = "failover"

    @property
    def max_late_ms(self) -> Optional[float]:
        return (self.send or {}).get("max_late_ms")

    @property
    def invalid(self) -> bool:
        """The sender fell further behind its schedule than ``tolerance.max_send_late_ms``: an overloaded
        machine, whose timing may have skewed the figures. Not a check (a run whose figures all pass
        passes); a failed run that is invalid is redone by ``LabTraffic`` when it can be."""
        late = self.max_late_ms
        return late is not None and late > self.tolerance.max_send_late_ms

    def stream(self, name: str) -> StreamFigures:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(f"no stream {name!r}; streams: {', '.join(s.name for s in self.streams)}")

    @property
    def lost(self) -> int:
        """Packets the offload (VF/RDMA streams) lost beyond the bond's own failover window and the
        agent's reaction to it (see the module docstring)."""
        return sum(s.lost_beyond_bond for s in self.streams if s.kind != "bond")

    @property
    def lost_in_agent_reaction(self) -> int:
        """Packets the offload lost after the bond's window, while the agent was moving its rules."""
        return sum(s.lost_in_agent_reaction for s in self.streams if s.kind != "bond")

    @property
    def lost_total(self) -> int:
        """Every packet the offload streams lost, the bond's window included."""
        return sum(s.lost for s in self.streams if s.kind != "bond")

    @property
    def bond_gap_ms(self) -> Dict[str, Optional[float]]:
        return {s.direction: s.fail_gap_ms for s in self.streams if s.kind == "bond"}

    @property
    def offload_gap_ms(self) -> Dict[str, Optional[float]]:
        return {s.name: s.fail_gap_ms for s in self.streams if s.kind != "bond"}

    @property
    def summary(self) -> str:
        """``vf0 rx gap 31.2 ms (bond 24.0 ms), lost 9 (0 beyond the bond's window); ...``"""
        bond = {s.direction: s for s in self.streams if s.kind == "bond"}
        parts = []
        for s in self.streams:
            if s.kind == "bond":
                continue
            ref = bond.get(s.direction)
            ref_gap = f" (bond {_ms(ref.fail_gap_ms)})" if ref is not None else ""
            parts.append(f"{s.name} gap {_ms(s.fail_gap_ms)}{ref_gap}, lost {s.lost} "
                         f"({s.lost_in_agent_reaction} during the agent's reaction, {s.lost_beyond_bond} beyond)")
        return "; ".join(parts)

    def to_dict(self, series: bool = False) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "kind": self.kind, "lab": self.lab, "verdict": self.verdict, "passed": self.passed,
            "fail": self.fail, "rate_pps": self.rate_pps, "duration_s": self.duration_s, "ticks": self.ticks,
            "lost": self.lost, "lost_total": self.lost_total, "lost_in_agent_reaction": self.lost_in_agent_reaction,
            "bond_gap_ms": self.bond_gap_ms, "offload_gap_ms": self.offload_gap_ms,
            "events": self.events, "tolerance": self.tolerance.to_dict(),
            "streams": [s.to_dict() for s in self.streams], "checks": [c.to_dict() for c in self.checks],
            "agent": self.agent, "send": self.send, "earlier_attempts": self.earlier_attempts,
        }
        if series:
            out["series"] = self.series
        return out


@dataclass
class RdmaResult(FailoverResult):
    """``failover`` restricted to RoCEv2 streams (and the bond's, for reference): ICRC and PSN order first."""

    kind: str = "rdma"

    @property
    def icrc_bad(self) -> int:
        return sum((s.roce or {}).get("icrc_bad", 0) for s in self.streams if s.kind == "rdma")

    @property
    def psn_errors(self) -> int:
        return sum((s.roce or {}).get("regressions", 0) + (s.roce or {}).get("duplicates", 0)
                   + (s.roce or {}).get("psn_mismatch", 0) for s in self.streams if s.kind == "rdma")


def _ms(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f} ms"


# -- evaluation ----------------------------------------------------------------------------------------


def _majority(counts: Mapping[str, int]) -> Optional[str]:
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


def _lost_times(lost_runs: Sequence[Tuple[int, int]], when: SendTimes) -> List[int]:
    return [when(q) for a, b in lost_runs for q in range(a, b + 1)]


def _merge(spans: Sequence[Tuple[int, int]]) -> List[List[int]]:
    out: List[List[int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _bond_windows(ref_runs: Sequence[Tuple[int, int]], spans: Sequence[Tuple[int, int]], pre_ns: int,
                  posts_ns: Sequence[int]) -> List[List[int]]:
    """The event calls' spans and the reference's lost runs near an event (send time), merged."""
    out = list(spans)
    for a, b in ref_runs:
        if any(ev0 - pre_ns <= b and a <= ev1 + post for (ev0, ev1), post in zip(spans, posts_ns)):
            out.append((a, b))
    return _merge(out)


def _agent_windows(windows: Sequence[Sequence[int]], reactions: Sequence[Reaction], start_ns: int,
                   notice_ns: int) -> List[Optional[int]]:
    """Per window: until when the agent's reactions that heard of its change in time extend it (or None)."""
    ends: List[Optional[int]] = [None] * len(windows)
    for r in sorted(reactions, key=lambda r: r.done_ns):
        heard = r.done_ns - int((r.latency_ms or 0.0) * 1e6)
        if heard < start_ns:
            continue
        for i, (lo, hi) in enumerate(windows):
            end = max(hi, ends[i] or hi)
            if lo <= heard <= end + notice_ns:
                ends[i] = max(end, r.done_ns)
                break
    return ends


def _phases(records: Sequence[Any], fail: Optional[Tuple[int, int]], restore: Optional[Tuple[int, int]],
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


def _tail(records: Sequence[Any], share: float = 0.3) -> List[Any]:
    """The records sent in the last ``share`` of the time they span."""
    if not records:
        return []
    t0 = min(r.tx_ns for r in records)
    t1 = max(r.tx_ns for r in records)
    cut = t1 - (t1 - t0) * share
    return [r for r in records if r.tx_ns >= cut]


def _series(metas: Sequence[StreamMeta], records: Mapping[str, Sequence[Any]],
            wire_records: Mapping[str, Sequence[Any]], start_ns: int, end_ns: int,
            events: Sequence[Tuple[str, int, int]], rate_pps: float) -> Dict[str, Any]:
    bucket = max(SERIES_BUCKET_MS, float(round(5000.0 / rate_pps)))  # ~5 packets of a stream per bucket
    wires: Dict[str, Dict[str, List[int]]] = {}
    delivered: Dict[str, List[int]] = {}
    for m in metas:
        tl = timeline(wire_records.get(m.name, ()), bucket_ms=bucket, start_ns=start_ns, end_ns=end_ns)
        for wire, counts in tl.wires.items():
            wires.setdefault(wire, {})[m.name] = counts
        dl = timeline(records.get(m.name, ()), bucket_ms=bucket, start_ns=start_ns, end_ns=end_ns)
        delivered[m.name] = [sum(x) for x in zip(*dl.wires.values())] if dl.wires else []
    arrivals = {m.name: sorted(round((r.rx_ns - start_ns) / 1e6, 2) for r in records.get(m.name, ()))
                for m in metas}  # ms from the start, per stream: the plot's lanes and their gaps
    return {"start_ns": start_ns, "bucket_ms": bucket, "wires": dict(sorted(wires.items())),
            "delivered": delivered, "arrivals": arrivals,
            "events": [{"name": n, "ns": ns, "end_ns": e} for n, ns, e in events]}


def evaluate_failover(
    metas: Sequence[StreamMeta],
    records: Mapping[str, Sequence[Any]],
    wire_records: Mapping[str, Sequence[Any]],
    *,
    ticks: int,
    rate_pps: float,
    start_ns: int,
    events: Sequence[Tuple[Any, ...]],
    failed_port: Optional[str],
    refused: Optional[Mapping[str, int]] = None,
    reactions: Sequence[Reaction] = (),
    extra_ms: float = 0.0,
    expect_return: bool = False,
    tolerance: FailoverTolerance = FailoverTolerance(),
    wires_captured: bool = True,
) -> Tuple[List[StreamFigures], List[Check], Dict[str, Any]]:
    """``events``: (name, start ns[, end ns]) in CLOCK_REALTIME -- names start with ``fail`` or ``restore``;
    ``extra_ms``: how much later than ``window_ms`` a repair's effect may come (the bond's updelay)."""
    spans = [(ev[1], ev[2] if len(ev) > 2 else ev[1]) for ev in events]
    fail = next((sp for ev, sp in zip(events, spans) if ev[0].startswith("fail")), None)
    restore = next((sp for ev, sp in zip(events, spans) if ev[0].startswith("restore")), None)
    fail_ns = fail[0] if fail else None
    restore_ns = restore[0] if restore else None
    pre_ns = 5_000_000  # 5 ms before an event: the threads read the clock separately
    posts = [int((tolerance.window_ms + (extra_ms if ev[0].startswith("restore") else 0)) * 1e6) for ev in events]
    slack_ns = int(tolerance.agent_allowance_ms * 1e6)
    notice_ns = int(tolerance.agent_notice_ms * 1e6)
    when = SendTimes([*records.values(), *wire_records.values()], start_ns, rate_pps)
    reports = {m.name: analyze_stream(records.get(m.name, ()), expected=ticks, first_seq=0, event_ns=fail_ns,
                                      window_ms=tolerance.window_ms) for m in metas}
    lost_at = {m.name: _lost_times(reports[m.name].lost_runs, when) for m in metas}
    bonds = {m.direction: m for m in metas if m.kind == "bond"}
    figures: List[StreamFigures] = []
    checks: List[Check] = []
    for m in metas:
        rep = reports[m.name]
        ref = bonds.get(m.direction) or next(iter(bonds.values()), None)
        ref_runs = [(when(a), when(b)) for a, b in reports[ref.name].lost_runs] if ref is not None else []
        windows = _bond_windows(ref_runs, spans, pre_ns, posts)
        done = _agent_windows(windows, reactions, start_ns, notice_ns) if m.offload else [None] * len(windows)
        pad = slack_ns if m.offload else pre_ns
        in_bond = in_agent = beyond = 0
        for t in lost_at[m.name]:
            if any(lo - pre_ns <= t <= hi + pad for lo, hi in windows):
                in_bond += 1
            elif any(d is not None and lo - pre_ns <= t <= d + slack_ns for (lo, _), d in zip(windows, done)):
                in_agent += 1
            else:
                beyond += 1
        recs = records.get(m.name, ())
        wrecs = wire_records.get(m.name, ())
        rgap = gap_around(recs, restore_ns, tolerance.window_ms + extra_ms) if restore_ns is not None else None
        before, after, restored = _phases(wrecs, fail, restore, slack_ns)
        wb, wa, wr = count_by_wire(before), count_by_wire(after), count_by_wire(restored)
        end = _tail(restored)
        flows_back = None
        if restore is not None and end:
            fb, fe = flow_wire_map(before), flow_wire_map(end)
            flows_back = sum(1 for f, w in fb.items() if fe.get(f) == w)
        roce = psn_order(recs).to_dict() if m.kind == "rdma" else None
        f = StreamFigures(
            name=m.name, target=m.target, kind=m.kind, direction=m.direction, flows=m.flows, sent=ticks,
            refused=(refused or {}).get(m.name, 0), received=rep.received, lost=rep.lost,
            lost_in_bond_window=in_bond, lost_in_agent_reaction=in_agent, lost_beyond_bond=beyond,
            duplicated=rep.duplicated, reordered=rep.reordered,
            reordered_in_flow=rep.reordered_in_flow, largest_gap_ms=round(rep.largest_gap_ms, 3),
            fail_gap_ms=None if rep.event_gap_ms is None else round(rep.event_gap_ms, 3),
            restore_gap_ms=None if rgap is None else round(rgap.ms, 3),
            lost_runs=list(rep.lost_runs),
            windows=[{"from_ms": _rel(lo, start_ns), "bond_to_ms": _rel(hi, start_ns), "agent_to_ms": _rel(d, start_ns)}
                     for (lo, hi), d in zip(windows, done)],
            wires_before=wb, wires_after=wa, wires_restored=wr,
            wire_before=_majority(wb), wire_after=_majority(wa), wire_restored=_majority(wr),
            wire_end=_majority(count_by_wire(end)), flows_back=flows_back, roce=roce,
        )
        figures.append(f)
        checks += _stream_checks(m, f, tolerance, failed_port, fail_ns, restore_ns, expect_return, wires_captured)
    for r in reactions:
        if r.latency_ms is not None and spans and r.done_ns >= spans[0][0]:
            checks.append(check(f"agent reaction ({r.trigger or 'event'})", round(r.latency_ms, 1),
                                r.latency_ms <= tolerance.max_agent_latency_ms,
                                f"<= {tolerance.max_agent_latency_ms:g} ms event -> rules applied"))
    end_ns = start_ns + int(ticks * 1e9 / rate_pps)
    marks = [(ev[0], a, b) for ev, (a, b) in zip(events, spans)]
    series = _series(metas, records, wire_records, start_ns, end_ns, marks, rate_pps)
    return figures, checks, series


def _rel(ns: Optional[int], start_ns: int) -> Optional[float]:
    return None if ns is None else round((ns - start_ns) / 1e6, 1)


def _stream_checks(m: StreamMeta, f: StreamFigures, tol: FailoverTolerance, failed_port: Optional[str],
                   fail_ns: Optional[int], restore_ns: Optional[int], expect_return: bool,
                   wires_captured: bool) -> List[Check]:
    out = [
        check(f"{m.name}: duplicated", f.duplicated, f.duplicated <= tol.max_duplicated, f"<= {tol.max_duplicated}"),
        check(f"{m.name}: reordered within a flow", f.reordered_in_flow,
              f.reordered_in_flow <= tol.max_reordered_in_flow, f"<= {tol.max_reordered_in_flow}"),
    ]
    if m.offload:
        out.append(check(f"{m.name}: lost beyond the bond's window and the agent's reaction", f.lost_beyond_bond,
                         f.lost_beyond_bond == 0, f"0 (+ {tol.agent_allowance_ms:g} ms)"))
    else:
        out.append(check(f"{m.name}: lost outside its failover window", f.lost_beyond_bond, f.lost_beyond_bond == 0,
                         "0"))
    if fail_ns is not None and wires_captured:
        on_dead = f.wires_after.get(failed_port, 0) if failed_port else 0
        live = sum(n for w, n in f.wires_after.items() if w != failed_port)
        out.append(check(f"{m.name}: after the failure, packets on {failed_port} / on live ports",
                         f"{on_dead} / {live}", on_dead == 0 and live > 0, "0 / > 0"))
    if expect_return and restore_ns is not None and wires_captured and f.wires_before:
        out.append(check(f"{m.name}: flows back on their port at the end", f"{f.flows_back}/{f.flows}",
                         f.flows_back == f.flows, f"all {f.flows}"))
    if f.roce is not None:
        out.append(check(f"{m.name}: ICRC intact", f.roce["icrc_bad"], f.roce["icrc_bad"] == 0 and f.received > 0,
                         "0 bad, packets arrived"))
        bad = f.roce["regressions"] + f.roce["duplicates"] + f.roce["psn_mismatch"]
        out.append(check(f"{m.name}: PSNs in order per QP", bad, bad == 0, "0 regressions/duplicates"))
    return out
