"""``LabTraffic``: the verifications on a running lab (``lab.traffic``), each returning a result with a verdict.

::

    lab = Lab.up("topologies/active-backup.yaml")
    r = lab.traffic.failover(targets=["server:vf0", "server:rdma0"], fail="server:pf0")
    print(r.summary, r.verdict)   # vf0 rx gap 91.0 ms (bond 46.0 ms), lost 8 (0 during the agent's ... PASS
    assert r.lost == 0            # nothing lost beyond the bond's own failover window and the agent's reaction

Streams run between a target on the NIC host (``server:vf0``,
``server:rdma0``, ``server:bond``) and a plain host (``client``), in both
directions by default: ``rx`` client -> target exercises the NIC's RX
steering, ``tx`` target -> client its TX steering.  Which port carried each
frame is read on the switch side of the wires.  Every result is appended
to ``lab.results`` (``to_dict()``, with its ``kind``), which the pytest
plugin attaches to the JUnit report.

Methods (tolerances are dataclasses with stated defaults; see the modules):

- ``failover(target="server:vf0", fail="server:pf0", *, targets=None, rate_pps=100, duration_s=3.0,
  fail_at_s=1.0, restore_after_s=None, flap=None, directions=("rx", "tx"), flows=1, compare_bond=True,
  fault="carrier", tolerance=None, pcap=None, peer=None) -> FailoverResult`` -- the port fails
  ``fail_at_s`` into the streams (and is repaired ``restore_after_s`` later; ``flap="server:pf1"``
  fails that port at the same moment, the bonding selftests' recovery case; the repair waits at least
  0.5 s after the failure's netlink call returned); a bond stream per
  direction runs beside the targets' (``compare_bond``).  Without ``restore_after_s`` the port stays
  failed (``lab.restore(...)`` repairs it).  ``fail="server:active"`` picks the bond's active port.
- ``rdma(target="server:rdma0", fail="server:pf0", *, qps=4, ...) -> RdmaResult`` -- the same with
  RoCEv2 (one flow per QP); ``fail=None`` checks integrity without a failure.
- ``hash(flows=256, fail=None, *, target="server:vf0", directions=("rx", "tx"), packets_per_flow=4,
  rate_pps=400, restore=True, fault="carrier", tolerance=None, pcap=None, peer=None) -> HashResult``
  -- active-active labs (offload ``hash`` / ``vf-split``): phases before / failed / restored.
- ``bond_hash(policy=None, *, host=None, flows=64, stack_flows=16, packets_per_flow=2, rate_pps=500,
  pcap=None) -> BondHashResult`` -- balance-xor / 802.3ad: ``policy`` one of layer2, layer2+3, layer3+4,
  a list of them, or "all"; the bond's policy is switched over netlink for the run and put back.
"""

from __future__ import annotations

import math
import random
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from testbed.errors import UsageError, WaitTimeout
from testbed.nl import open_ns, wait_until
from testbed.topology import Host
from testbed.verify import stations
from testbed.verify.checks import check
from testbed.verify.failover import (
    FailoverResult,
    FailoverTolerance,
    RdmaResult,
    Reaction,
    StreamMeta,
    evaluate_failover,
)
from testbed.verify.faults import Fault
from testbed.verify.hashdist import HashResult, HashTolerance, PhaseFigures, evaluate_moves, evaluate_phase
from testbed.verify.labview import LabView
from testbed.verify.stations import Station, Target
from testbed.verify.streams import StreamSpec, run_streams, write_pcap
from testbed.verify.txhash import BondHashResult, FlowObservation, evaluate_policy
from traffic.netns import run_in_netns
from traffic.parse import parse_stream_frame
from traffic.receiver import Receiver
from traffic.sender import RawSender
from traffic.stream import pack_stream_header

Progress = Callable[[str], None]
DPORT = 5201
DIRECTIONS = ("rx", "tx")
POLICIES = ("layer2", "layer2+3", "layer3+4")
SETTLE_TIMEOUT_S = 30.0  # bond, partner and agent agreeing after a change (LACP times out in 3 s)
MIN_FAILED_S = 0.5  # a repair waits at least this long after the failure's netlink call returned


def _quiet(_msg: str) -> None:
    pass


def _stream_ids(n: int) -> List[int]:
    base = random.SystemRandom().randrange(1 << 20, 1 << 31)
    return [base + i for i in range(n)]


def _templates(src: Station, dst: Station, n: int, proto: str, stream_id: int, sport_base: int) -> List[Any]:
    from traffic.packets import build_templates, flows  # scapy: imported only when traffic is built

    fl = flows(n, src.ip, dst.ip, proto=proto, vary="sport", sport_base=sport_base, dport=DPORT,
               src_mac=src.mac, dst_mac=dst.mac)
    return build_templates(fl, stream_id)


def _directions(directions: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    if isinstance(directions, str):
        directions = DIRECTIONS if directions == "both" else (directions,)
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or not directions:
        raise UsageError(f"direction {bad or directions!r}", fix="rx (client -> target), tx (target -> client) or both")
    return tuple(dict.fromkeys(directions))


class LabTraffic:
    def __init__(self, lab: Any, progress: Optional[Progress] = None) -> None:
        self.lab = lab
        self.topo = lab.topo
        self.view = LabView(lab)
        self.progress: Progress = progress or _quiet

    # -- helpers ------------------------------------------------------------------------------------

    def _record(self, result: Any) -> Any:
        self.lab.results.append(result.to_dict())
        return result

    def _fail_port(self, spec: str) -> Tuple[Host, str]:
        hname, _, port = spec.partition(":")
        if port == "active":
            host = stations.resolve_target(self.topo, f"{hname}:bond").host
            usable = self.view.bond_usable(host)
            if not usable:
                raise UsageError(f"lab {self.topo.name}: {spec}: {hname}'s bond has no active port")
            return host, usable[0]
        return stations.port_endpoint(self.topo, spec)

    def _wires(self, host: Host) -> Tuple[str, Dict[str, str]]:
        return self.topo.switch_netns, stations.wires(self.topo, host)

    def _steady(self, host: Host) -> Tuple[str, ...]:
        """Wait until bond, partner and agent agree on the ports in use; return them."""
        usable = self.view.bond_usable(host)
        self.view.wait_settled(host, usable, SETTLE_TIMEOUT_S)
        return usable

    # -- failover / rdma ----------------------------------------------------------------------------

    def failover(self, target: str = "server:vf0", fail: Optional[str] = "server:pf0", *,
                 targets: Optional[Sequence[str]] = None, rate_pps: float = 100.0, duration_s: float = 3.0,
                 fail_at_s: float = 1.0, restore_after_s: Optional[float] = None, flap: Optional[str] = None,
                 directions: Union[str, Sequence[str]] = DIRECTIONS, flows: int = 1, compare_bond: bool = True,
                 fault: str = "carrier", tolerance: Optional[FailoverTolerance] = None, pcap: Optional[str] = None,
                 peer: Optional[str] = None, attempts: int = 2) -> FailoverResult:
        args = (list(targets or [target]), fail, rate_pps, duration_s, fail_at_s, restore_after_s, flap,
                _directions(directions), flows, compare_bond, fault, tolerance or FailoverTolerance(), pcap, peer)
        return self._record(self._attempts(FailoverResult, args, attempts, fail, restore_after_s, flap))

    def rdma(self, target: str = "server:rdma0", fail: Optional[str] = "server:pf0", *, qps: int = 4,
             rate_pps: float = 100.0, duration_s: float = 3.0, fail_at_s: float = 1.0,
             restore_after_s: Optional[float] = None, directions: Union[str, Sequence[str]] = DIRECTIONS,
             compare_bond: bool = True, fault: str = "carrier", tolerance: Optional[FailoverTolerance] = None,
             pcap: Optional[str] = None, peer: Optional[str] = None, attempts: int = 2) -> RdmaResult:
        t = stations.resolve_target(self.topo, target)
        if t.kind != "rdma":
            rdma = t.host.nic.rdma if t.host.nic else None
            raise UsageError(f"{target} is a {t.kind}, not an RDMA function",
                             fix=f"use {t.host.name}:{rdma.name}" if rdma else "this lab has no RDMA function "
                                                                              "(topology: rdma: true)")
        args = ([target], fail, rate_pps, duration_s, fail_at_s, restore_after_s, None, _directions(directions),
                qps, compare_bond, fault, tolerance or FailoverTolerance(), pcap, peer)
        return self._record(self._attempts(RdmaResult, args, attempts, fail, restore_after_s))

    def _attempts(self, cls: Any, args: Tuple[Any, ...], attempts: int, fail: Optional[str],
                  restore_after_s: Optional[float], flap: Optional[str] = None) -> Any:
        """Run; a run that failed while its sender fell far behind its schedule (``invalid``) is redone, up
        to ``attempts`` runs in all, once bond, partner and agent use the ports they used before it -- only
        when the run puts the lab back by itself (no failure, or one repaired in the run, and no flap).
        The result keeps the earlier runs' verdicts."""
        if attempts < 1:
            raise UsageError(f"attempts {attempts}", fix="1 or more")
        earlier: List[Dict[str, Any]] = []
        redo_ok = (fail is None or restore_after_s is not None) and flap is None
        settle_on: Optional[List[str]] = None
        while True:
            res = self._failover(cls, *args, settle_on=settle_on)
            res.earlier_attempts = earlier
            if res.passed or not res.invalid or not redo_ok or len(earlier) + 1 >= attempts:
                return res
            earlier.append({"verdict": res.verdict, "max_late_ms": res.max_late_ms,
                            "failed": [c.name for c in res.failures]})
            settle_on = list(res.agent.get("usable_before") or [])
            self.progress(f"FAIL with the sender {res.max_late_ms:g} ms behind its schedule (an overloaded "
                          f"machine): running it again ({len(earlier) + 1}/{attempts})")

    def _failover(self, cls: Any, target_specs: List[str], fail: Optional[str], rate_pps: float, duration_s: float,
                  fail_at_s: float, restore_after_s: Optional[float], flap: Optional[str],
                  directions: Tuple[str, ...], flows: int, compare_bond: bool, fault: str,
                  tolerance: FailoverTolerance, pcap: Optional[str], peer: Optional[str],
                  settle_on: Optional[Sequence[str]] = None) -> Any:
        if rate_pps <= 0 or duration_s <= 0 or flows < 1 or flows > 1000:
            raise UsageError(f"rate {rate_pps} pps, duration {duration_s} s, flows {flows}",
                             fix="positive rate and duration, 1..1000 flows")
        tgts: List[Target] = [stations.resolve_target(self.topo, s) for s in target_specs]
        hosts = {t.host.name for t in tgts}
        if len(hosts) != 1:
            raise UsageError(f"targets {target_specs} are on several hosts", fix="one NIC host per run")
        host = tgts[0].host
        if compare_bond and not any(t.kind == "bond" for t in tgts):
            tgts.append(stations.resolve_target(self.topo, f"{host.name}:bond"))
        if len({t.spec for t in tgts}) != len(tgts):
            raise UsageError(f"targets {target_specs}: named twice")
        client = stations.peer_station(self.topo, peer)
        port = None
        faults: List[Tuple[str, Fault]] = []
        events: List[Tuple[Any, ...]] = []
        if settle_on is not None:  # a redo: the ports in use before the first run, once more
            self.view.wait_settled(host, settle_on, SETTLE_TIMEOUT_S)
            usable = tuple(settle_on)
        else:
            usable = self._steady(host)
        try:
            if fail is not None:
                fhost, port = self._fail_port(fail)
                if fhost.name != host.name:
                    raise UsageError(f"fail {fail}: not on the targets' host {host.name}")
                if not self.view.port_carrier(host, port):
                    raise UsageError(f"lab {self.topo.name}: {host.name}:{port} is already down",
                                     fix=f"testbed restore {self.topo.name} {host.name} {port}")
                f1 = Fault(self.topo, host, port, fault)
                faults.append(("fail", f1))
                events.append((f"fail {host.name}:{port}", fail_at_s, f1.apply))
                if restore_after_s is not None:  # never sooner than MIN_FAILED_S after the failure took effect
                    events.append((f"restore {host.name}:{port}", fail_at_s + restore_after_s, f1.revert,
                                   MIN_FAILED_S))
                if flap is not None:
                    if restore_after_s is None:
                        raise UsageError("flap needs restore_after_s", fix="the flap happens at the repair")
                    _, port2 = stations.port_endpoint(self.topo, flap)
                    f2 = Fault(self.topo, host, port2, fault)
                    faults.append(("flap", f2))
                    events.append((f"fail {host.name}:{port2} (flap)", fail_at_s + restore_after_s, f2.apply))
            updelay_s = self.view.updelay(host) / 1000.0
            last_event = max((ev[1] + (updelay_s if ev[0].startswith("restore") else 0.0) for ev in events),
                             default=0.0)
            total_s = max(duration_s, last_event + 1.5)
            count = max(1, math.ceil(total_s * rate_pps))
            specs, metas = self._failover_specs(tgts, client, directions, flows)
            what = ", ".join(m.name for m in metas)
            self.progress(f"streams {what}: {rate_pps:g} pps each for {total_s:g} s"
                          + (f", {fault} fault on {host.name}:{port} at {fail_at_s:g} s" if port else ""))
            run = run_streams(specs, rate_pps=rate_pps, count=count, wires=self._wires(host), events=events,
                              pcap=pcap, progress=self.progress)
        finally:
            for _, f in faults:
                f.close()
        ev = [(e.name, e.ns, e.end_ns) for e in run.events]
        mode = host.nic.bond.mode if host.nic else ""
        offload = host.nic.offload.mode if host.nic else ""
        expect_return = restore_after_s is not None and flap is None and port is not None and (
            offload in ("hash", "vf-split")
            or (mode == "active-backup" and port == host.nic.primary and host.nic.bond.primary is not None
                and host.nic.bond.primary_reselect in (None, "always")))
        agent: Dict[str, Any] = {"usable_before": list(usable), "reactions": []}
        if run.events:
            agent["reactions"] = self.view.reactions_since(host, run.events[0].ns)
        reactions = [Reaction(r["done_ns"], r.get("latency_ms"), r.get("trigger") or "")
                     for r in agent["reactions"] if not r.get("error")]
        figures, checks, series = evaluate_failover(
            metas, run.records, run.wire_records, ticks=run.ticks, rate_pps=rate_pps, start_ns=run.start_ns,
            events=ev, failed_port=port, refused=run.refused, reactions=reactions, extra_ms=updelay_s * 1000,
            expect_return=expect_return, tolerance=tolerance)
        errors = [e for e in run.events if e.error] + [r for r in agent["reactions"] if r.get("error")]
        if errors:
            first = errors[0]
            checks.insert(0, check("failure injected and followed", getattr(first, "error", None) or first["error"],
                                   False, "no error"))
        if expect_return:
            self.progress(f"waiting for {host.name}:{port} to be in use again")
            self.view.wait_settled(host, usable, SETTLE_TIMEOUT_S)
        elif run.events:
            self._steady(host)  # bond, partner and agent agree again, on whatever the bond uses now
        return cls(
            lab=self.topo.name, fail=f"{host.name}:{port}" if port else "none", rate_pps=rate_pps,
            duration_s=round(total_s, 3), ticks=run.ticks,
            events=[{"name": e.name, "at_s": e.at_s, "took_ms": round((e.end_ns - e.ns) / 1e6, 2), "error": e.error}
                    for e in run.events],
            tolerance=tolerance, streams=figures, checks=checks, agent=agent,
            send={"elapsed_s": round(run.elapsed_s, 3), "max_late_ms": round(run.max_late_us / 1000, 2),
                  "rx_stats": run.rx_stats},
            series=series,
        )

    def _failover_specs(self, tgts: Sequence[Target], client: Station, directions: Sequence[str],
                        flows: int) -> Tuple[List[StreamSpec], List[StreamMeta]]:
        ids = _stream_ids(len(tgts) * len(directions))
        specs: List[StreamSpec] = []
        metas: List[StreamMeta] = []
        i = 0
        for t in tgts:
            proto = "roce" if t.kind == "rdma" else "udp"
            for d in directions:
                src, dst = (client, t.station) if d == "rx" else (t.station, client)
                name = f"{t.station.label} {d}"
                templates = _templates(src, dst, flows, proto, ids[i], 40000 + 1000 * i)
                specs.append(StreamSpec(name, ids[i], src, dst, templates))
                metas.append(StreamMeta(name, t.spec, t.kind, d, flows))
                i += 1
        return specs, metas

    # -- verbs: a real RC queue pair -----------------------------------------------------------------

    def verbs(self, target: str = "server:rdma0", fail: Optional[str] = "auto", *, agent: bool = True,
              **kwargs: Any) -> Any:
        """A real RDMA workload through a failover (``testbed.verify.verbs_run.run_verbs``); ``agent=False`` is
        the negative control (the agent stopped before the fault; passes when the traffic died)."""
        from testbed.verify.verbs_run import run_verbs

        return self._record(run_verbs(self.lab, target, fail=fail, agent=agent, progress=self.progress, **kwargs))

    # -- hash distribution ----------------------------------------------------------------------------

    def hash(self, flows: int = 256, fail: Optional[str] = None, *, target: str = "server:vf0",
             directions: Union[str, Sequence[str]] = DIRECTIONS, packets_per_flow: int = 4,
             rate_pps: float = 400.0, restore: bool = True, fault: str = "carrier",
             tolerance: Optional[HashTolerance] = None, pcap: Optional[str] = None,
             peer: Optional[str] = None) -> HashResult:
        tol = tolerance or HashTolerance()
        dirs = _directions(directions)
        t = stations.resolve_target(self.topo, target)
        host, nic = t.host, t.host.nic
        assert nic is not None
        if nic.offload.mode not in ("hash", "vf-split") or t.kind == "bond":
            raise UsageError(f"lab {self.topo.name}: hash distribution needs an active-active offload and a VF or "
                             f"RDMA target (offload here: {nic.offload.mode}, target {t.kind})",
                             fix="use a lab with offload hash or vf-split, e.g. topologies/active-active-hash.yaml")
        if not 2 <= flows <= 1000 or packets_per_flow < 1:
            raise UsageError(f"flows {flows}, packets per flow {packets_per_flow}",
                             fix="2..1000 flows, >= 1 packet each")
        client = stations.peer_station(self.topo, peer)
        proto = "roce" if t.kind == "rdma" else "udp"
        ids = _stream_ids(len(dirs))
        specs: List[StreamSpec] = []
        for i, d in enumerate(dirs):
            src, dst = (client, t.station) if d == "rx" else (t.station, client)
            specs.append(StreamSpec(f"{t.station.label} {d}", ids[i], src, dst,
                                    _templates(src, dst, flows, proto, ids[i], 10000 + 2000 * i)))
        all_ports = self._steady(host)
        phases = ["before"]
        dead = None
        if fail is not None:
            _, dead = self._fail_port(fail)
            phases += ["failed"] + (["restored"] if restore else [])
        figs: List[PhaseFigures] = []
        checks = []
        buckets: Dict[str, List[Dict[str, Any]]] = {}
        tables: Dict[str, List[Optional[str]]] = {}
        maps: Dict[str, Dict[str, Dict[int, str]]] = {d: {} for d in dirs}
        fault_obj = Fault(self.topo, host, dead, fault) if dead is not None else None
        try:
            for phase in phases:
                if phase == "failed":
                    assert fault_obj is not None and dead is not None
                    self.progress(f"fail {host.name}:{dead} ({fault})")
                    fault_obj.apply()
                    self.view.wait_settled(host, [p for p in all_ports if p != dead], SETTLE_TIMEOUT_S)
                elif phase == "restored":
                    assert fault_obj is not None
                    self.progress(f"restore {host.name}:{dead}")
                    fault_obj.revert()
                    self.view.wait_settled(host, all_ports, SETTLE_TIMEOUT_S)
                table = self._table(host)
                tables[phase] = table
                shares = {p: table.count(p) / len(table) for p in nic.ports} if table else {}
                predicted = self._partner_prediction(host, specs) if "rx" in dirs else {}
                counters0 = self._bucket_counters(host, t)
                self.progress(f"phase {phase}: {flows} flows x {packets_per_flow} packets, {', '.join(dirs)}")
                run = run_streams(specs, rate_pps=rate_pps, count=flows * packets_per_flow,
                                  wires=self._wires(host), progress=self.progress,
                                  pcap=f"{pcap}.{phase}" if pcap and phase != "before" else pcap)
                counters1 = self._bucket_counters(host, t)
                for spec, d in zip(specs, dirs):
                    if d == "tx":
                        exp = shares
                    else:
                        live = self.view.partner_usable(host) or ()
                        exp = {p: (1.0 / len(live) if p in live else 0.0) for p in nic.ports} if live else {}
                    fig, cks = evaluate_phase(phase, d, run.records[spec.name], run.wire_records[spec.name],
                                              sent=run.ticks, flows=flows, expected_share=exp,
                                              predicted=predicted.get(spec.name) if d == "rx" else None,
                                              tolerance=tol)
                    figs.append(fig)
                    checks += cks
                    maps[d][phase] = fig.mapping
                if counters0 is not None and counters1 is not None:
                    rows = [{"entry": e, "port": table[e] if e < len(table) else None,
                             "packets": counters1.get(e, 0) - counters0.get(e, 0)} for e in sorted(counters1)]
                    for r in rows:
                        r["flows"] = round(r["packets"] / packets_per_flow, 2)
                    buckets[phase] = rows
                    if "tx" in dirs:
                        checks.append(self._counter_check(phase, rows, figs[-len(dirs) + dirs.index("tx")],
                                                          run.wire_records[specs[dirs.index("tx")].name]))
        finally:
            if fault_obj is not None:
                if fault_obj.applied and restore:
                    fault_obj.revert()
                fault_obj.close()
        moves: Dict[str, Dict[str, Any]] = {}
        for d in dirs:
            m = maps[d]
            mv, cks = evaluate_moves(d, m["before"], m.get("failed"), m.get("restored"), dead)
            moves[d] = mv
            checks += cks
        res = HashResult(lab=self.topo.name, target=t.spec, flows=flows, packets_per_flow=packets_per_flow,
                         fail=f"{host.name}:{dead}" if dead else None, fault=fault, directions=list(dirs),
                         phases=figs, moves=moves, buckets=buckets, tables=tables, tolerance=tol, checks=checks)
        return self._record(res)

    def _table(self, host: Host) -> List[Optional[str]]:
        """The agent's bucket -> port table (without an agent: what it would compute from the bond's state)."""
        agent = self.view.agent_view(host)
        if agent is not None and agent.get("mapping"):
            return list(agent["mapping"])
        from testbed.agent.rules import plan
        from testbed.agent.state import read_state

        nic = host.nic
        assert nic is not None
        with open_ns(host.netns) as ipr:
            return list(plan(nic, read_state(ipr, nic, host.netns)).table)

    def _bucket_counters(self, host: Host, t: Target) -> Optional[Dict[int, int]]:
        """Packets per TX table entry on the target's representor (the ``tx:<e>`` rules' counters)."""
        if t.function is None:
            return None
        from testbed.tc import ops

        with open_ns(host.netns) as ipr:
            rules = ops.dump(ipr, [t.function.rep])
        out = {}
        for inst in rules:
            label = inst.rule.label or ""
            if label.startswith("tx:") and label[3:].isdigit():
                out[int(label[3:])] = inst.packets
        return out or None

    @staticmethod
    def _counter_check(phase: str, rows: List[Dict[str, Any]], fig: PhaseFigures, wire_records: Sequence[Any]):
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

    def _partner_prediction(self, host: Host, specs: Sequence[StreamSpec]) -> Dict[str, Dict[int, str]]:
        """rx streams: flow -> the port the switch's partner bond will pick (its hash over its usable ports)."""
        from traffic.bondhash import POLICIES as KNOWN
        from traffic.bondhash import predict_port

        partner = self.view.partner(host)
        live = self.view.partner_usable(host)
        if partner is None or not live or partner[2] not in KNOWN:
            return {}
        nic = host.nic
        assert nic is not None
        live_ordered = [p for p in nic.ports if p in live]
        out: Dict[str, Dict[int, str]] = {}
        for s in specs:
            out[s.name] = {t.flow.flow_id: live_ordered[predict_port(partner[2], bytes(t.frame), len(live_ordered))]
                           for t in s.templates}
        return out

    # -- bond transmit hash -----------------------------------------------------------------------------

    def bond_hash(self, policy: Union[None, str, Sequence[str]] = None, *, host: Optional[str] = None,
                  flows: int = 64, stack_flows: int = 16, packets_per_flow: int = 2,
                  rate_pps: float = 500.0, pcap: Optional[str] = None) -> BondHashResult:
        h = self._nic_host(host)
        nic = h.nic
        assert nic is not None
        if nic.bond.mode not in ("balance-xor", "802.3ad"):
            raise UsageError(f"lab {self.topo.name}: bond mode {nic.bond.mode} has no transmit hash",
                             fix="use a balance-xor or 802.3ad lab (e.g. topologies/active-active-hash.yaml)")
        if policy is None:
            policies: List[str] = [nic.bond.xmit_hash_policy or "layer2"]
        elif isinstance(policy, str):
            policies = list(POLICIES) if policy == "all" else [policy]
        else:
            policies = list(policy)
        bad = [p for p in policies if p not in POLICIES]
        if bad:
            raise UsageError(f"xmit_hash_policy {bad}", fix=f"one of: {', '.join(POLICIES)} (or all)")
        if flows < 1 or stack_flows < 0 or packets_per_flow < 1:
            raise UsageError(f"flows {flows}, stack flows {stack_flows}, packets per flow {packets_per_flow}")
        client = stations.peer_station(self.topo)
        raw_id, stack_id = _stream_ids(2)
        templates = self._raw_hash_templates(h, flows, raw_id)
        figs = []
        checks = []
        original: Optional[str] = None
        try:
            for pol in policies:
                old = self.view.set_xmit_hash_policy(h, pol)
                if original is None:
                    original = old
                usable = list(self._steady(h))
                self.progress(f"{pol}: {flows} raw + {stack_flows} kernel UDP flows through "
                              f"{nic.bond.name} (usable {', '.join(usable)})")
                obs = self._capture_bond_tx(h, client, templates, raw_id, stack_id, stack_flows, packets_per_flow,
                                            rate_pps, f"{pcap}.{pol}" if pcap and len(policies) > 1 else pcap)
                fig, cks = evaluate_policy(pol, usable, obs, expected_flows=flows + stack_flows)
                figs.append(fig)
                checks += cks
        finally:
            if original is not None:
                self.view.set_xmit_hash_policy(h, original)
        return self._record(BondHashResult(lab=self.topo.name, mode=nic.bond.mode, policies=figs, checks=checks))

    def _nic_host(self, name: Optional[str]) -> Host:
        hosts = [h for h in self.topo.hosts if h.nic and (name is None or h.name == name)]
        if not hosts:
            raise UsageError(f"lab {self.topo.name}: no NIC host{f' named {name}' if name else ''}")
        return hosts[0]

    def _raw_hash_templates(self, h: Host, n: int, stream_id: int) -> List[Any]:
        """Frames from the bond's MAC/address with random destination MAC, address and ports (a fixed seed)."""
        from traffic.flows import Flow
        from traffic.packets import build_templates

        nic = h.nic
        assert nic is not None
        rnd = random.Random(4791)  # independent fields per flow (correlated ones could cancel in the XOR)
        fl = []
        for i in range(n):
            mac = rnd.randrange(1 << 16)
            fl.append(Flow(flow_id=i, proto="udp", src_ip=str(nic.address.ip),
                           dst_ip=f"198.19.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                           sport=rnd.randrange(10000, 60000), dport=rnd.randrange(5000, 6000), src_mac=nic.mac,
                           dst_mac=f"02:74:62:01:{mac >> 8:02x}:{mac & 0xFF:02x}"))
        return build_templates(fl, stream_id)

    def _capture_bond_tx(self, h: Host, client: Station, templates: Sequence[Any], raw_id: int, stack_id: int,
                         stack_flows: int, ppf: int, rate_pps: float, pcap: Optional[str]) -> List[FlowObservation]:
        nic = h.nic
        assert nic is not None
        sw_ns, ports = self._wires(h)
        bond_ip = str(nic.address.ip)
        expected = (len(templates) + stack_flows) * ppf
        rxs = {"wires": Receiver(sw_ns, None, ifnames=set(ports), keep_frames=True)}
        socks: List[socket.socket] = []
        try:
            for rx in rxs.values():
                rx.start()
            with RawSender(h.netns, nic.bond.name) as tx:
                tx.send(templates, count=len(templates) * ppf, rate_pps=rate_pps)

            def open_udp(sport: int) -> socket.socket:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((bond_ip, sport))
                return s

            for i in range(stack_flows):
                socks.append(run_in_netns(h.netns, open_udp, 30000 + 17 * i))
            for k in range(ppf):
                for i, s in enumerate(socks):
                    s.sendto(pack_stream_header(stack_id, i, k * stack_flows + i, time.time_ns()), (client.ip, DPORT))
            wait_until(lambda: sum(rx.count for rx in rxs.values()) >= expected, 10.0,
                       f"{expected} frames from {nic.bond.name} on the wires", interval=0.05)
        except WaitTimeout:
            pass  # what was captured is judged: "flows captured" fails if frames are missing
        finally:
            for s in socks:
                s.close()
            for rx in rxs.values():
                rx.stop()
        if pcap:
            write_pcap(pcap, [f for rx in rxs.values() for f in rx.frames])
        obs: Dict[Tuple[str, int], Tuple[bytes, Dict[str, int]]] = {}
        for rx in rxs.values():
            for f in rx.frames:
                p = parse_stream_frame(f.data, check_icrc=False)
                if p is None or p.stream_id not in (raw_id, stack_id):
                    continue
                key = ("raw" if p.stream_id == raw_id else "stack", p.flow_id)
                frame, wires = obs.setdefault(key, (f.data, {}))
                port = ports[f.ifname]
                wires[port] = wires.get(port, 0) + 1
        return [FlowObservation(src, fid, frame, wires) for (src, fid), (frame, wires) in sorted(obs.items())]

