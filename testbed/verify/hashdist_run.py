"""Running the hash-distribution verification on an active-active lab: phases before / failed / restored.

``run(ctx, plan)`` sends ``flows`` flows through the target in each phase,
reads the agent's table and the TX rules' counters around each, predicts the
switch partner's choice for the rx flows, reads the ports the NIC receives on
(rx is judged by its delivery there), and leaves the verdict to the pure
``hashdist.evaluate_phase`` / ``evaluate_moves``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from testbed import naming
from testbed.errors import UsageError
from testbed.nl import open_ns
from testbed.topology import Host
from testbed.verify import stations
from testbed.verify.checks import Check, check
from testbed.verify.context import SETTLE_TIMEOUT_S, RunContext, flow_templates, stream_ids
from testbed.verify.faults import Fault
from testbed.verify.hashdist import HashResult, HashTolerance, PhaseFigures, evaluate_moves, evaluate_phase
from testbed.verify.stations import Target
from traffic.streams import StreamSpec, run_streams


@dataclass(frozen=True)
class HashPlan:
    flows: int
    fail: Optional[str]
    target: str
    directions: Tuple[str, ...]
    packets_per_flow: int
    rate_pps: float
    restore: bool
    fault: str
    tolerance: HashTolerance
    pcap: Optional[str] = None
    peer: Optional[str] = None

    def __post_init__(self) -> None:
        if not 2 <= self.flows <= 1000 or self.packets_per_flow < 1:
            raise UsageError(f"flows {self.flows}, packets per flow {self.packets_per_flow}",
                             fix="2..1000 flows, >= 1 packet each")


@dataclass
class _Phases:
    """What the phases gathered, for the result."""

    figs: List[PhaseFigures]
    checks: List[Check]
    buckets: Dict[str, List[Dict[str, Any]]]
    tables: Dict[str, List[Optional[str]]]
    maps: Dict[str, Dict[str, Dict[int, str]]]


def _target(ctx: RunContext, plan: HashPlan) -> Target:
    t = stations.resolve_target(ctx.topo, plan.target)
    nic = t.host.nic
    assert nic is not None
    if nic.offload.mode not in ("hash", "vf-split") or t.kind == "bond":
        raise UsageError(f"lab {ctx.topo.name}: hash distribution needs an active-active offload and a VF or "
                         f"RDMA target (offload here: {nic.offload.mode}, target {t.kind})",
                         fix="use a lab with offload hash or vf-split, e.g. topologies/active-active-hash.yaml")
    return t


def run(ctx: RunContext, plan: HashPlan) -> HashResult:
    t = _target(ctx, plan)
    host = t.host
    client = stations.peer_station(ctx.topo, plan.peer, t.station.version)
    proto = "roce" if t.kind == "rdma" else "udp"
    ids = stream_ids(len(plan.directions))
    specs: List[StreamSpec] = []
    for i, d in enumerate(plan.directions):
        src, dst = (client, t.station) if d == "rx" else (t.station, client)
        specs.append(StreamSpec(f"{t.station.label} {d}", ids[i], src, dst,
                                flow_templates(src, dst, plan.flows, proto, ids[i], 10000 + 2000 * i)))
    all_ports = ctx.steady(host)
    dead = ctx.fail_port(plan.fail)[1] if plan.fail is not None else None
    phases = ["before"] + ((["failed"] + (["restored"] if plan.restore else [])) if dead else [])
    got = _Phases([], [], {}, {}, {d: {} for d in plan.directions})
    fault = Fault(ctx.topo, host, dead, plan.fault) if dead is not None else None
    try:
        for phase in phases:
            if phase == "failed":
                assert fault is not None
                ctx.progress(f"fail {host.name}:{dead} ({plan.fault})")
                fault.apply()
                ctx.view.wait_settled(host, [p for p in all_ports if p != dead], SETTLE_TIMEOUT_S)
            elif phase == "restored":
                assert fault is not None
                ctx.progress(f"restore {host.name}:{dead}")
                fault.revert()
                ctx.view.wait_settled(host, all_ports, SETTLE_TIMEOUT_S)
            _phase(ctx, plan, phase, t, specs, got)
    finally:
        if fault is not None:
            if fault.applied and plan.restore:
                fault.revert()
            fault.close()
    moves: Dict[str, Dict[str, Any]] = {}
    for d in plan.directions:
        m = got.maps[d]
        moves[d], cks = evaluate_moves(d, m["before"], m.get("failed"), m.get("restored"), dead,
                                       resilient_switch=host.nic.resilient_switch)
        got.checks += cks
    return HashResult(lab=ctx.topo.name, target=t.spec, flows=plan.flows, packets_per_flow=plan.packets_per_flow,
                      fail=f"{host.name}:{dead}" if dead else None, fault=plan.fault,
                      directions=list(plan.directions), phases=got.figs, moves=moves, buckets=got.buckets,
                      tables=got.tables, tolerance=plan.tolerance, checks=got.checks)


def _phase(ctx: RunContext, plan: HashPlan, phase: str, t: Target, specs: List[StreamSpec], got: _Phases) -> None:
    """One phase: the table, the streams, the figures per direction, the TX counters against the wire."""
    host, nic, dirs = t.host, t.host.nic, plan.directions
    assert nic is not None
    table = _table(ctx, host)
    got.tables[phase] = table
    shares = {p: table.count(p) / len(table) for p in nic.ports} if table else {}
    predicted = _partner_prediction(ctx, host, specs) if "rx" in dirs else {}
    receiving = ctx.view.bond_receiving(host) if "rx" in dirs else None
    counters0 = _bucket_counters(host, t)
    ctx.progress(f"phase {phase}: {plan.flows} flows x {plan.packets_per_flow} packets, {', '.join(dirs)}")
    streams = run_streams(specs, rate_pps=plan.rate_pps, count=plan.flows * plan.packets_per_flow,
                          wires=ctx.wires(host), progress=ctx.progress,
                          pcap=f"{plan.pcap}.{phase}" if plan.pcap and phase != "before" else plan.pcap)
    counters1 = _bucket_counters(host, t)
    for spec, d in zip(specs, dirs):
        if d == "tx":
            exp = shares
        else:
            live = ctx.view.partner_usable(host) or ()
            exp = {p: (1.0 / len(live) if p in live else 0.0) for p in nic.ports} if live else {}
        fig, cks = evaluate_phase(phase, d, streams.records[spec.name], streams.wire_records[spec.name],
                                  sent=streams.ticks, flows=plan.flows, expected_share=exp,
                                  predicted=predicted.get(spec.name) if d == "rx" else None, tolerance=plan.tolerance,
                                  receiving=receiving if d == "rx" else None,
                                  into=spec.rx.ifname if d == "rx" else None)
        got.figs.append(fig)
        got.checks += cks
        got.maps[d][phase] = fig.mapping
    if counters0 is not None and counters1 is not None:
        rows = [{"entry": e, "port": table[e] if e < len(table) else None,
                 "packets": counters1.get(e, 0) - counters0.get(e, 0)} for e in sorted(counters1)]
        for r in rows:
            r["flows"] = round(r["packets"] / plan.packets_per_flow, 2)
        got.buckets[phase] = rows
        if "tx" in dirs:
            tx = dirs.index("tx")
            got.checks.append(counter_check(phase, rows, streams.wire_records[specs[tx].name]))


def _table(ctx: RunContext, host: Host) -> List[Optional[str]]:
    """The agent's bucket -> port table (without an agent: what it would compute from the bond's state)."""
    agent = ctx.view.agent_view(host)
    if agent is not None and agent.mapping:
        return list(agent.mapping)
    from testbed.agent import mapping

    nic = host.nic
    assert nic is not None
    return list(mapping.for_nic(nic, ctx.view.bond_usable(host)))


def _bucket_counters(host: Host, t: Target) -> Optional[Dict[int, int]]:
    """Packets per TX table entry (the ``entry:<e>`` rules' counters in the representors' shared block).

    The table is held once for every function: during a phase only the target transmits in bulk, so
    the counters' increase is its flows (plus a few ARP/ND frames of the others, within the check's slack).
    """
    if t.function is None:
        return None
    from testbed.tc import ops

    with open_ns(host.netns) as ipr:
        rules = ops.dump(ipr, [], [naming.BLOCK_REPS])
    out = {}
    for inst in rules:
        label = inst.rule.label or ""
        if label.startswith("entry:") and label[6:].isdigit():
            out[int(label[6:])] = inst.packets
    return out or None


def counter_check(phase: str, rows: List[Dict[str, Any]], wire_records: Sequence[Any]) -> Check:
    """The TX rules' packet counters per port against what the wires saw (pure)."""
    by_rules: Dict[str, int] = {}
    for r in rows:
        if r["port"]:
            by_rules[r["port"]] = by_rules.get(r["port"], 0) + r["packets"]
    by_wire: Dict[str, int] = {}
    for r in wire_records:
        by_wire[r.ifname] = by_wire.get(r.ifname, 0) + 1
    ports = sorted(set(by_rules) | set(by_wire))
    worst = max((abs(by_rules.get(p, 0) - by_wire.get(p, 0)) for p in ports), default=0)
    limit = 2 + int(0.01 * sum(by_wire.values()))
    return check(f"{phase} tx: rule counters per port match the wire",
                 {"rules": by_rules, "wire": by_wire}, worst <= limit, f"within {limit} packets")


def _partner_prediction(ctx: RunContext, host: Host, specs: Sequence[StreamSpec]) -> Dict[str, Dict[int, str]]:
    """rx streams: flow -> the port the switch's partner bond will pick (its hash over its usable ports)."""
    from traffic.bondhash import POLICIES as KNOWN
    from traffic.bondhash import predict_port

    nic = host.nic
    assert nic is not None
    if nic.resilient_switch:  # the switch's table follows skb->hash: seeded per boot, not predicted
        return {}
    partner = ctx.view.partner(host)
    live = ctx.view.partner_usable(host)
    if partner is None or not live or partner[2] not in KNOWN:
        return {}
    live_ordered = [p for p in nic.ports if p in live]
    return {s.name: {t.flow.flow_id: live_ordered[predict_port(partner[2], bytes(t.frame), len(live_ordered))]
                     for t in s.templates} for s in specs}
