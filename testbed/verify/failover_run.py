"""Running a failover (or RDMA) verification on a lab: the plan, the streams, the fault, then the pure judge.

``FailoverPlan`` is what a caller asked for (frozen, checked when made);
``run(ctx, cls, plan)`` runs it once and returns ``cls`` (``FailoverResult``
or ``RdmaResult``) judged by ``failover.evaluate_failover``;
``with_attempts(run_once, plan, attempts, progress)`` redoes a run that failed
while its sender was far behind its schedule (see ``FailoverResult.invalid``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from testbed.errors import UsageError
from testbed.progress import Progress
from testbed.topology import Host, Topology
from testbed.verify import bounds, stations
from testbed.verify.checks import check
from testbed.verify.context import SETTLE_TIMEOUT_S, RunContext, flow_templates, stream_ids
from testbed.verify.failover import FailoverTolerance, Reaction, StreamMeta, evaluate_failover
from testbed.verify.faults import Fault
from testbed.verify.stations import Target
from traffic.pacing import FRAME_BUDGET_PPS, STREAM_RATE_PPS, stream_rate
from traffic.streams import Station, StreamSpec, StreamsRun, run_streams

MIN_FAILED_S = 0.5  # a repair waits at least this long after the failure's netlink call returned
SPORT_BASE = 40000  # the first stream's first source port


@dataclass(frozen=True)
class FailoverPlan:
    targets: Tuple[str, ...]
    fail: Optional[str]  # "server:pf0", "server:active", or None: no failure
    rate_pps: Optional[float]  # per stream; None: pacing.stream_rate (lowered for many streams)
    duration_s: float
    fail_at_s: float
    restore_after_s: Optional[float]  # None: the port stays failed
    flap: Optional[str]  # another port failed at the repair (the bonding selftests' recovery case)
    directions: Tuple[str, ...]
    flows: int  # per stream (an RDMA run: queue pairs)
    compare_bond: bool  # a bond stream per direction beside the targets'
    fault: str  # "carrier" | "lacp"
    tolerance: FailoverTolerance
    pcap: Optional[str] = None
    peer: Optional[str] = None  # the plain host at the other end (default: the first)
    agent: bool = True  # False: the negative control -- the agent stopped before the fault; the offload must die
    family: Optional[int] = None  # 4 or 6: every stream over that IP version; None: IPv4 where a target has it

    def __post_init__(self) -> None:
        bad_rate = self.rate_pps is not None and self.rate_pps <= 0
        if bad_rate or self.duration_s <= 0 or self.flows < 1 or self.flows > 1000:
            raise UsageError(f"rate {self.rate_pps} pps, duration {self.duration_s} s, flows {self.flows}",
                             fix="positive rate and duration, 1..1000 flows")
        if self.flap is not None and self.restore_after_s is None:
            raise UsageError("flap needs restore_after_s", fix="the flap happens at the repair")
        if not self.agent and self.fail is None:
            raise UsageError("the negative control (agent stopped) needs a fault", fix="name the port to fail")
        if self.family not in (None, 4, 6):
            raise UsageError(f"IP version {self.family}", fix="4, 6 or None (IPv4 where the target has it)")

    @property
    def puts_lab_back(self) -> bool:
        """The run leaves the lab as it found it (no failure, or one repaired in the run, no flap, the agent
        left running)."""
        return (self.fail is None or self.restore_after_s is not None) and self.flap is None and self.agent


def with_attempts(run_once: Callable[[Optional[List[str]]], Any], plan: FailoverPlan, attempts: int,
                  progress: Progress) -> Any:
    """Run; a run that failed while its sender fell far behind its schedule (``invalid``) is redone, up to
    ``attempts`` runs in all, once bond, partner and agent use the ports they used before it -- only when
    the run puts the lab back by itself. The result keeps the earlier runs' verdicts."""
    if attempts < 1:
        raise UsageError(f"attempts {attempts}", fix="1 or more")
    earlier: List[Dict[str, Any]] = []
    settle_on: Optional[List[str]] = None
    while True:
        res = run_once(settle_on)
        res.earlier_attempts = earlier
        if res.passed or not res.invalid or not plan.puts_lab_back or len(earlier) + 1 >= attempts:
            return res
        earlier.append({"verdict": res.verdict, "max_late_ms": res.max_late_ms,
                        "failed": [c.name for c in res.failures]})
        settle_on = list(res.agent.get("usable_before") or [])
        progress(f"FAIL with the sender {res.max_late_ms:g} ms behind its schedule (an overloaded "
                 f"machine): running it again ({len(earlier) + 1}/{attempts})")


def sport_stride(streams: int, flows: int) -> int:
    """Source ports per stream: stream ``i``'s flows start at ``SPORT_BASE + i * stride`` (1000 apart, closer
    when that many streams would leave the port range), so no two flows of a run share a 5-tuple."""
    stride = min(1000, (0x10000 - SPORT_BASE) // max(1, streams))
    if flows > stride:
        raise UsageError(f"{streams} streams x {flows} flows: more source ports than {SPORT_BASE}..65535 holds",
                         fix=f"at most {stride} flows per stream with {streams} streams (fewer targets, or "
                             "--direction rx/tx)")
    return stride


def stream_specs(tgts: Sequence[Target], clients: Dict[int, Station], directions: Sequence[str],
                 flows: int) -> Tuple[List[StreamSpec], List[StreamMeta]]:
    """Per target and direction a stream to / from the plain host's station of the target's IP version
    (``clients``: version -> station)."""
    ids = stream_ids(len(tgts) * len(directions))
    stride = sport_stride(len(ids), flows)
    specs: List[StreamSpec] = []
    metas: List[StreamMeta] = []
    for t in tgts:
        proto = "roce" if t.kind == "rdma" else "udp"
        for d in directions:
            i = len(specs)
            client = clients[t.station.version]
            src, dst = (client, t.station) if d == "rx" else (t.station, client)
            name = f"{t.station.label} {d}"
            specs.append(StreamSpec(name, ids[i], src, dst, flow_templates(src, dst, flows, proto, ids[i],
                                                                            SPORT_BASE + stride * i)))
            metas.append(StreamMeta(name, t.spec, t.kind, d, flows))
    return specs, metas


def targets(topo: Topology, specs: Sequence[str], compare_bond: bool, family: Optional[int] = None) -> List[Target]:
    """The run's targets (ranges spelled out, ``stations.expand_targets``), the bond's appended for
    ``compare_bond``: on one host, none named twice; each with its address of ``family``."""
    tgts = [stations.resolve_target(topo, s, family) for s in stations.expand_targets(topo, specs)]
    if len({t.host.name for t in tgts}) != 1:
        raise UsageError(f"targets {list(specs)} are on several hosts", fix="one NIC host per run")
    host = tgts[0].host
    if compare_bond and not any(t.kind == "bond" for t in tgts):
        tgts.append(stations.resolve_target(topo, f"{host.name}:bond", family))
    twice = sorted({t.spec for t in tgts if sum(u.spec == t.spec for u in tgts) > 1})
    if twice:
        raise UsageError(f"targets {list(specs)}: {', '.join(twice)} named twice", fix="name each target once")
    return tgts


def _faults(ctx: RunContext, plan: FailoverPlan, host: Host,
            faults: List[Fault]) -> Tuple[Optional[str], List[Tuple[Any, ...]]]:
    """The port to fail and the timed events; each Fault made is appended to ``faults`` (to be closed)."""
    if plan.fail is None:
        return None, []
    fhost, port = ctx.fail_port(plan.fail)
    if fhost.name != host.name:
        raise UsageError(f"fail {plan.fail}: not on the targets' host {host.name}")
    if not ctx.view.port_carrier(host, port):
        raise UsageError(f"lab {ctx.topo.name}: {host.name}:{port} is already down",
                         fix=f"testbed restore {ctx.topo.name} {host.name} {port}")
    f1 = Fault(ctx.topo, host, port, plan.fault)
    faults.append(f1)
    events: List[Tuple[Any, ...]] = [(f"fail {host.name}:{port}", plan.fail_at_s, f1.apply)]
    if plan.restore_after_s is not None:  # never sooner than MIN_FAILED_S after the failure took effect
        at = plan.fail_at_s + plan.restore_after_s
        events.append((f"restore {host.name}:{port}", at, f1.revert, MIN_FAILED_S))
        if plan.flap is not None:
            _, port2 = stations.port_endpoint(ctx.topo, plan.flap)
            f2 = Fault(ctx.topo, host, port2, plan.fault)
            faults.append(f2)
            events.append((f"fail {host.name}:{port2} (flap)", at, f2.apply))
    return port, events


def _expect_return(plan: FailoverPlan, host: Host, port: Optional[str]) -> bool:
    """Does the repaired port carry traffic again by itself (hash/vf-split, or the primary of an
    active-backup bond that reselects it)?"""
    nic = host.nic
    if plan.restore_after_s is None or plan.flap is not None or port is None or nic is None:
        return False
    return nic.offload.mode in ("hash", "vf-split") or (
        nic.bond.mode == "active-backup" and port == nic.primary and nic.bond.primary is not None
        and nic.bond.primary_reselect in (None, "always"))


def run(ctx: RunContext, cls: Any, plan: FailoverPlan, settle_on: Optional[Sequence[str]] = None) -> Any:
    """One failover run: streams on one schedule, the fault at ``fail_at_s``, judged by the pure part."""
    tgts = targets(ctx.topo, plan.targets, plan.compare_bond, plan.family)
    host = tgts[0].host
    clients = {v: stations.peer_station(ctx.topo, plan.peer, v) for v in sorted({t.station.version for t in tgts})}
    if settle_on is not None:  # a redo: the ports in use before the first run, once more
        ctx.view.wait_settled(host, settle_on, SETTLE_TIMEOUT_S)
        usable = tuple(settle_on)
    else:
        usable = ctx.steady(host)
    if not plan.agent:
        from testbed.teardown import stop_agent

        ctx.progress(f"negative control: stopping the offload agent of lab {ctx.topo.name} (restart: testbed agent "
                     f"{ctx.topo.name} --daemon)")
        stop_agent(ctx.topo.name)
    faults: List[Fault] = []
    try:
        port, events = _faults(ctx, plan, host, faults)
        updelay_s = ctx.view.updelay(host) / 1000.0
        last_event = max((ev[1] + (updelay_s if ev[0].startswith("restore") else 0.0) for ev in events),
                         default=0.0)
        total_s = max(plan.duration_s, last_event + 1.5)
        specs, metas = stream_specs(tgts, clients, plan.directions, plan.flows)
        rate = plan.rate_pps or stream_rate(len(specs))
        lowered = plan.rate_pps is None and rate < STREAM_RATE_PPS
        ctx.progress(f"streams {_names(metas)}: {rate:g} pps each for {total_s:g} s"
                     + (f" (lowered for {len(specs)} streams: {FRAME_BUDGET_PPS:g} frames/s together at most)"
                        if lowered else "")
                     + (f", {plan.fault} fault on {host.name}:{port} at {plan.fail_at_s:g} s" if port else ""))
        streams = run_streams(specs, rate_pps=rate, count=max(1, math.ceil(total_s * rate)),
                              wires=ctx.wires(host), events=events, pcap=plan.pcap, progress=ctx.progress)
    finally:
        for f in faults:
            f.close()
    res = _judge(ctx, cls, plan, rate, host, port, usable, metas, streams, updelay_s, total_s)
    if not plan.agent:
        return res  # no agent to agree with: the lab stays as the run left it
    if _expect_return(plan, host, port):
        ctx.progress(f"waiting for {host.name}:{port} to be in use again")
        ctx.view.wait_settled(host, usable, SETTLE_TIMEOUT_S)
    elif streams.events:
        ctx.steady(host)  # bond, partner and agent agree again, on whatever the bond uses now
    return res


def _names(metas: Sequence[StreamMeta], most: int = 6) -> str:
    """The streams' names, the first few and a count when there are many."""
    names = [m.name for m in metas]
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most - 2])}, ... {names[-1]} ({len(names)})"


def _judge(ctx: RunContext, cls: Any, plan: FailoverPlan, rate: float, host: Host, port: Optional[str],
           usable: Sequence[str], metas: List[StreamMeta], streams: StreamsRun, updelay_s: float,
           total_s: float) -> Any:
    agent: Dict[str, Any] = {"usable_before": list(usable), "reactions": []}
    if streams.events:
        agent["reactions"] = ctx.view.reactions_since(host, streams.events[0].ns)
    reactions = [Reaction(r["done_ns"], r.get("latency_ms"), r.get("trigger") or "")
                 for r in agent["reactions"] if not r.get("error")]
    tolerance = plan.tolerance
    if host.nic is not None:  # the ARP/NS monitor notifies late: the judge allows for it
        tolerance = replace(tolerance, agent_notice_ms=bounds.notice_ms(host.nic.bond, tolerance.agent_notice_ms))
    figures, checks, series = evaluate_failover(
        metas, streams.records, streams.wire_records, ticks=streams.ticks, rate_pps=rate,
        start_ns=streams.start_ns, events=[(e.name, e.ns, e.end_ns) for e in streams.events], failed_port=port,
        refused=streams.refused, reactions=reactions, extra_ms=updelay_s * 1000,
        expect_return=_expect_return(plan, host, port), tolerance=tolerance, agent=plan.agent,
        sent_ns=streams.sent_ns)
    bound = bounds.failure_bound(host.nic.bond, plan.fault, rate) if port and host.nic else None
    gap_bound = bounds.judge_gaps(bound, {f.name: (f.kind, f.fail_gap_ms) for f in figures})
    errors = [e.error for e in streams.events if e.error] + [r["error"] for r in agent["reactions"] if r.get("error")]
    if errors:
        checks.insert(0, check("failure injected and followed", errors[0], False, "no error"))
    return cls(
        lab=ctx.topo.name, fail=f"{host.name}:{port}" if port else "none", rate_pps=rate,
        duration_s=round(total_s, 3), ticks=streams.ticks,
        events=[{"name": e.name, "at_s": e.at_s, "took_ms": round((e.end_ns - e.ns) / 1e6, 2), "error": e.error}
                for e in streams.events],
        tolerance=tolerance, streams=figures, checks=checks, agent=agent,
        send={"elapsed_s": round(streams.elapsed_s, 3), "max_late_ms": round(streams.max_late_us / 1000, 2),
              "rx_stats": streams.rx_stats},
        series=series, bound=gap_bound, negative_control=not plan.agent,
    )
