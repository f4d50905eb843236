"""The failover verdict (pure): streams through a port failure, the offload's loss laid over the bond's.

All streams of a run share one schedule (``traffic.streams.run_streams``): packet
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
  nothing: what the offload lost before it is not the bond's doing.  For
  hearing, a window ends no sooner than the bond's stream shows: at the
  first packet of it sent after the event's call that arrived -- at 3 pps a
  bond stream that lost nothing may have been cut for 300 ms, and the
  agent hears of the bond's change when the bond makes it;
- each window extended by one packet spacing of the streams: the bond's
  stream shows where its outage ended only to within it (the first packet
  after its last lost one, or after the event when it lost none; at 3 pps,
  64 VFs' staggered packets each fell where the bond's one stream had none);
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

The negative control (``agent=False``: the agent was stopped before the
fault, so nothing moves the offload's rules): each offload stream's one
check is that it lost packets beyond the bond's window -- the traffic died,
proof that the fault reached it and that a PASS owes its survival to the
agent. The bond's own streams are reported, not judged: with the rules
left as they were, the inactive port's drop rule meets the bond's received
traffic too, as it would on a NIC whose driver stopped following the bond;
so its losses are not its window either -- the windows are the event calls
alone (widened by ``agent_allowance_ms``).

Public API:
    FailoverTolerance(agent_allowance_ms=50.0, agent_notice_ms=150.0, max_agent_latency_ms=1000.0,
                      window_ms=500.0, max_duplicated=0, max_reordered_in_flow=0,
                      max_send_late_ms=250.0)                                 frozen dataclass
    StreamMeta(name, target, kind, direction, flows)                      frozen dataclass
    Reaction(done_ns, latency_ms, trigger)                                NamedTuple (the agent's)
    StreamFigures                                                          dataclass; .to_dict()
    FailoverResult                                                         dataclass; kind "failover",
        .passed, .verdict, .checks, .invalid, .earlier_attempts, .lost (beyond the bond's window and the
        agent's reaction, offload streams), .lost_total, .stream(name), .bond_gap_ms, .offload_gap_ms,
        .summary, .gap_spread (per direction: the offload's gaps, least/median/worst, beside the bond's),
        .negative_control, .to_dict(series=False)
    RdmaResult(FailoverResult)                                             kind "rdma"; .icrc_bad, .psn_errors
    SendTimes(record_lists, start_ns, rate_pps)(seq) -> ns                 send time of a sequence number
                                                       (estimated: what a run without its send stamps has)
    evaluate_failover(metas, records, wire_records, *, ticks, rate_pps, start_ns, events,
                      failed_port, refused=None, reactions=(), extra_ms=0.0, expect_return=False,
                      tolerance=FailoverTolerance(), wires_captured=True, agent=True, sent_ns=None)
        -> (list[StreamFigures], list[Check], series dict)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from testbed.verify import windows as tw
from testbed.verify.checks import Check, check
from testbed.verify.failover_result import FailoverResult, FailoverTolerance, RdmaResult, StreamFigures, StreamMeta
from testbed.verify.psn import psn_order
from testbed.verify.windows import Reaction, SendTimes

__all__ = ["FailoverResult", "FailoverTolerance", "RdmaResult", "Reaction", "SendTimes", "StreamFigures",
           "StreamMeta", "evaluate_failover"]
from traffic.analysis import analyze_stream, count_by_wire, flow_wire_map, gap_around


@dataclass(frozen=True)
class _Run:
    """What every stream of one run is judged against."""

    ticks: int
    start_ns: int
    spans: List[Tuple[int, int]]  # each event's netlink call, CLOCK_REALTIME
    fail: Optional[Tuple[int, int]]
    restore: Optional[Tuple[int, int]]
    posts: List[int]  # per event: how far after it its effect is sought (ns)
    when: tw.SendTimes
    reports: Mapping[str, Any]  # stream -> traffic.analysis.StreamReport
    bonds: Mapping[str, StreamMeta]  # direction -> the bond's stream
    reactions: Sequence[Reaction]
    delivered: Mapping[str, List[int]]  # the bond's streams: send times of what arrived, sorted
    extra_ms: float
    tol: FailoverTolerance
    agent: bool = True  # False: the negative control -- windows from the event calls alone
    interval_ns: int = 0  # the streams' packet spacing: how closely the bond's stream can show its outage's end
    sent: Mapping[str, Sequence[int]] = field(default_factory=dict)  # stream -> its frame k's send stamp at [k]

    PRE_NS = 5_000_000  # 5 ms before an event: the threads read the clock separately

    def send_time(self, name: str) -> Callable[[int], int]:
        """Send time of a stream's frame by sequence number: the sender's own stamp where it kept them (with
        130 streams a tick's frames go out tens of ms apart, so a lost frame was sent when its own stream sent
        it, not when the tick began), else ``when`` (from what arrived anywhere)."""
        stamps = self.sent.get(name)
        if not stamps:
            return self.when
        return lambda seq: stamps[seq] if 0 <= seq < len(stamps) else self.when(seq)


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
    tolerance: Optional[FailoverTolerance] = None,
    wires_captured: bool = True,
    agent: bool = True,
    sent_ns: Optional[Mapping[str, Sequence[int]]] = None,
) -> Tuple[List[StreamFigures], List[Check], Dict[str, Any]]:
    """``events``: (name, start ns[, end ns]) in CLOCK_REALTIME -- names start with ``fail`` or ``restore``;
    ``extra_ms``: how much later than ``window_ms`` a repair's effect may come (the bond's updelay);
    ``agent=False``: the negative control (see the module docstring); ``sent_ns``: each stream's send stamps
    by sequence number (``StreamsRun.sent_ns``) -- without them a lost frame's send time is estimated."""
    tolerance = tolerance or FailoverTolerance()
    spans = [(ev[1], ev[2] if len(ev) > 2 else ev[1]) for ev in events]
    fail = next((sp for ev, sp in zip(events, spans) if ev[0].startswith("fail")), None)
    restore = next((sp for ev, sp in zip(events, spans) if ev[0].startswith("restore")), None)
    run = _Run(ticks, start_ns, spans, fail, restore,
               [int((tolerance.window_ms + (extra_ms if ev[0].startswith("restore") else 0)) * 1e6) for ev in events],
               tw.SendTimes([*records.values(), *wire_records.values()], start_ns, rate_pps),
               {m.name: analyze_stream(records.get(m.name, ()), expected=ticks, first_seq=0,
                                       event_ns=fail[0] if fail else None, window_ms=tolerance.window_ms)
                for m in metas},
               {m.direction: m for m in metas if m.kind == "bond"}, reactions,
               {m.name: sorted(r.tx_ns for r in records.get(m.name, ())) for m in metas if m.kind == "bond"},
               extra_ms, tolerance, agent, int(1e9 / rate_pps) if rate_pps > 0 else 0, dict(sent_ns or {}))
    figures: List[StreamFigures] = []
    checks: List[Check] = []
    for m in metas:
        f = _figures(run, m, records.get(m.name, ()), wire_records.get(m.name, ()), (refused or {}).get(m.name, 0))
        figures.append(f)
        if not agent:
            if m.offload:
                checks.append(check(f"{m.name}: lost beyond the bond's window (agent stopped: the traffic must "
                                    "die)", f.lost_beyond_bond, f.lost_beyond_bond > 0, "> 0"))
            continue
        checks += _stream_checks(m, f, tolerance, failed_port, fail[0] if fail else None,
                                 restore[0] if restore else None, expect_return, wires_captured)
    for r in reactions:
        if r.latency_ms is not None and spans and r.done_ns >= spans[0][0]:
            checks.append(check(f"agent reaction ({r.trigger or 'event'})", round(r.latency_ms, 1),
                                r.latency_ms <= tolerance.max_agent_latency_ms,
                                f"<= {tolerance.max_agent_latency_ms:g} ms event -> rules applied"))
    end_ns = start_ns + int(ticks * 1e9 / rate_pps)
    marks = [(ev[0], a, b) for ev, (a, b) in zip(events, spans)]
    return figures, checks, tw.series([m.name for m in metas], records, wire_records, start_ns, end_ns, marks,
                                      rate_pps)


def _classify(run: _Run, m: StreamMeta) -> Tuple[List[List[int]], List[Optional[int]], Tuple[int, int, int]]:
    """The windows the stream is judged in, the agent's extension of each, and its losses: (in the bond's
    window, during the agent's reaction, beyond)."""
    tol, pre = run.tol, _Run.PRE_NS
    slack_ns = int(tol.agent_allowance_ms * 1e6)
    ref = run.bonds.get(m.direction) or next(iter(run.bonds.values()), None)
    ref_when = run.send_time(ref.name) if ref is not None else run.when
    ref_runs = ([(ref_when(a), ref_when(b)) for a, b in run.reports[ref.name].lost_runs]
                if ref is not None and run.agent else [])
    windows = tw.bond_windows(ref_runs, run.spans, pre, run.posts)
    if run.agent:  # the bond's stream shows where its outage ended only to within its packet spacing: the
        # next packet after its last lost one (or after the event, if it lost none) -- 333 ms at 3 pps
        windows = [[lo, hi + run.interval_ns] for lo, hi in windows]
    seen = tw.known_until(windows, tw.until_delivered(run.delivered[ref.name], run.spans, run.posts)
                          if ref is not None and run.agent else [])
    done = (tw.agent_windows(windows, run.reactions, run.start_ns, int(tol.agent_notice_ms * 1e6), seen)
            if m.offload else [None] * len(windows))
    pad = slack_ns if m.offload else pre
    in_bond = in_agent = beyond = 0
    for t in tw.lost_times(run.reports[m.name].lost_runs, run.send_time(m.name)):
        if any(lo - pre <= t <= hi + pad for lo, hi in windows):
            in_bond += 1
        elif any(d is not None and lo - pre <= t <= d + slack_ns for (lo, _), d in zip(windows, done)):
            in_agent += 1
        else:
            beyond += 1
    return windows, done, (in_bond, in_agent, beyond)


def _figures(run: _Run, m: StreamMeta, recs: Sequence[Any], wrecs: Sequence[Any], refused: int) -> StreamFigures:
    rep = run.reports[m.name]
    windows, done, (in_bond, in_agent, beyond) = _classify(run, m)
    restore_ns = run.restore[0] if run.restore else None
    rgap = gap_around(recs, restore_ns, run.tol.window_ms + run.extra_ms) if restore_ns is not None else None
    before, after, restored = tw.phases(wrecs, run.fail, run.restore, int(run.tol.agent_allowance_ms * 1e6))
    wb, wa, wr = count_by_wire(before), count_by_wire(after), count_by_wire(restored)
    end = tw.tail(restored)
    flows_back = None
    if run.restore is not None and end:
        fb, fe = flow_wire_map(before), flow_wire_map(end)
        flows_back = sum(1 for f, w in fb.items() if fe.get(f) == w)
    return StreamFigures(
        name=m.name, target=m.target, kind=m.kind, direction=m.direction, flows=m.flows, sent=run.ticks,
        refused=refused, received=rep.received, lost=rep.lost,
        lost_in_bond_window=in_bond, lost_in_agent_reaction=in_agent, lost_beyond_bond=beyond,
        duplicated=rep.duplicated, reordered=rep.reordered,
        reordered_in_flow=rep.reordered_in_flow, largest_gap_ms=round(rep.largest_gap_ms, 3),
        fail_gap_ms=None if rep.event_gap_ms is None else round(rep.event_gap_ms, 3),
        restore_gap_ms=None if rgap is None else round(rgap.ms, 3),
        lost_runs=list(rep.lost_runs),
        windows=[{"from_ms": _rel(lo, run.start_ns), "bond_to_ms": _rel(hi, run.start_ns),
                  "agent_to_ms": _rel(d, run.start_ns)} for (lo, hi), d in zip(windows, done)],
        wires_before=wb, wires_after=wa, wires_restored=wr,
        wire_before=tw.majority(wb), wire_after=tw.majority(wa), wire_restored=tw.majority(wr),
        wire_end=tw.majority(count_by_wire(end)), flows_back=flows_back,
        roce=psn_order(recs).to_dict() if m.kind == "rdma" else None,
    )


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
