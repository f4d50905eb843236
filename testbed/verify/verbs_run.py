"""Run the verbs verification on a lab: a real RC QP (``traffic.verbs_peer`` in two lab namespaces,
connected over RDMA CM) sending continuously while a port fails and is repaired.

Sequence: wait until bond, partner and agent agree; (negative control: stop the agent); open the
switch-side RoCE capture and the bond's own UDP streams; start the listening end on the target
(the RDMA function or a VF with ``verbs: true``) and the connecting end on the peer (a plain host
with ``verbs: true``); once both report ``connected`` let the traffic run ``fail_at_s``; fail the
port (``auto``: the one that carried most of the target's RoCE frames so far) for
``restore_after_s`` -- by default longer than the QP's retry budget, so a QP the offload does not
rescue must die; repair it; let it run ``tail_s`` more; tell the sender to stop and collect both
ends' results, the rxe counters and the agent's reactions, and judge (``testbed.verify.verbs``).
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from testbed import rdma
from testbed.errors import UsageError, WaitTimeout
from testbed.topology import VerbsDevice
from testbed.verify import stations
from testbed.verify.faults import Fault
from testbed.verify.labview import LabView
from testbed.verify.verbs import VerbsResult, budget_ms, end_figures, evaluate_verbs

Progress = Callable[[str], None]
CONNECT_TIMEOUT_S = 180.0  # two Python start-ups with pyverbs, and RDMA CM, in a loaded TCG guest
SETTLE_TIMEOUT_S = 30.0
CM_PORT = 7471


def _quiet(_msg: str) -> None:
    pass


def _now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_REALTIME)


class _Proc:
    """One ``traffic.verbs_peer`` in a namespace; its JSON lines arrive on a queue."""

    def __init__(self, name: str, netns: str, argv: List[str]) -> None:
        self.name = name
        full = ["ip", "netns", "exec", netns, sys.executable, "-m", "traffic.verbs_peer", *argv]
        self.proc = subprocess.Popen(full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[Dict[str, Any]] = queue.Queue()
        self.last: Dict[str, Dict[str, Any]] = {}
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            self.last[obj.get("event", "")] = obj
            self.lines.put(obj)
        self.lines.put({"event": "exit"})

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()[-2000:]

    def wait_event(self, event: str, deadline: float) -> Dict[str, Any]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"{self.name}: no '{event}' from the RDMA program in time",
                                  fix="raise connect_timeout on a loaded machine")
            try:
                obj = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if obj.get("event") == event:
                return obj
            if obj.get("event") in ("error", "exit"):
                err = obj.get("error") or (self.stderr.strip().splitlines() or ["exited"])[-1]
                raise UsageError(f"{self.name}: the RDMA program failed before '{event}': {err}",
                                 fix="check the rxe devices with `testbed status` (verbs lines)")

    def stop(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def finish(self, timeout: float) -> Dict[str, Any]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + 5.0
        while "result" not in self.last and "error" not in self.last and time.monotonic() < deadline:
            try:
                if self.lines.get(timeout=0.2).get("event") == "exit":
                    break
            except queue.Empty:
                pass
        return self.last.get("result") or self.last.get("error") or {"event": "error", "error": "killed: no result"}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _device(topo: Any, owner: str, what: str) -> VerbsDevice:
    for d in topo.verbs_devices:
        if d.owner == owner:
            return d
    raise UsageError(f"lab {topo.name}: {what} {owner} has no Soft-RoCE device",
                     fix="give it `verbs: true` in the topology (e.g. topologies/rdma-active-backup.yaml)")


def run_verbs(lab: Any, target: str = "server:rdma0", *, peer: Optional[str] = None, initiator: str = "peer",
              fail: Optional[str] = "auto", fail_at_s: float = 2.0, restore_after_s: Optional[float] = None,
              tail_s: float = 2.0, agent: bool = True, rate: float = 200.0, size: int = 1024, depth: int = 16,
              ack_timeout: int = 16, retry: int = 6, window_ms: float = 1000.0, family: int = 4,
              progress: Progress = _quiet) -> VerbsResult:
    topo = lab.topo
    if initiator not in ("peer", "target"):
        raise UsageError(f"initiator {initiator!r}", fix="peer (the plain host sends) or target")
    if not (1 <= ack_timeout <= 31 and 0 <= retry <= 6 and rate > 0 and fail_at_s >= 0.5):
        raise UsageError(f"ack timeout {ack_timeout}, retry {retry}, rate {rate}, fail at {fail_at_s} s",
                         fix="ack timeout 1..31, retry 0..6 (Soft-RoCE retries forever at 7), rate > 0, "
                             "fail at >= 0.5 s")
    if family not in (4, 6):
        raise UsageError(f"IP version {family}", fix="4 (RoCEv2 GIDs IPv4-mapped) or 6 (the devices' IPv6 GIDs)")
    t = stations.resolve_target(topo, target, family)  # RDMA CM resolves the GIDs from these addresses
    if t.kind == "bond":
        raise UsageError(f"{target}: the bond is kernel traffic, not an RDMA device", fix="use server:rdma0 or a VF")
    pst = stations.peer_station(topo, peer, family)
    dev_t = _device(topo, t.spec, "target")
    dev_p = _device(topo, pst.label, "peer")
    host = t.host
    budget = budget_ms(ack_timeout, retry)
    if restore_after_s is None:
        restore_after_s = round(max(2.0, budget * 1.5 / 1000.0 + 0.5), 1)
    port_fixed: Optional[str] = None
    if fail not in (None, "auto"):
        fhost, port_fixed = stations.port_endpoint(topo, fail)
        if fhost.name != host.name:
            raise UsageError(f"fail {fail}: not on the target's host {host.name}")
    if fail is None and not agent:
        raise UsageError("the negative control (agent stopped) needs a fault", fix="leave --no-fail out")
    view = LabView(lab)
    usable = view.bond_usable(host)
    view.wait_settled(host, usable, SETTLE_TIMEOUT_S)
    if not agent:
        from testbed.teardown import stop_agent

        progress(f"negative control: stopping the offload agent of lab {topo.name} (restart: testbed agent "
                 f"{topo.name})")
        stop_agent(topo.name)
    devices = [dev_t.name, dev_p.name]
    before = {d: rdma.counters(d) for d in devices}
    wires = {sw: p for sw, p in stations.wires(topo, host).items()}
    from traffic.rocewire import RoceWires
    from traffic.udpprobe import UdpProbe

    common = ["--rate", str(rate), "--size", str(size), "--depth", str(depth), "--ack-timeout", str(ack_timeout),
              "--retry", str(retry), "--stall-limit", str(round(budget / 1000.0 * 2 + 5, 1)),
              "--connect-timeout", str(CONNECT_TIMEOUT_S), "--port", str(CM_PORT)]
    send_t = ["--send"] if initiator == "target" else []
    send_p = ["--send"] if initiator == "peer" else []
    procs: List[_Proc] = []
    events: List[Dict[str, Any]] = []
    fail_ns = fail_end_ns = repair_ns = None
    port: Optional[str] = None
    with RoceWires(topo.switch_netns, {p: sw for sw, p in wires.items()}, {t.station.ip, pst.ip}) as cap, \
            UdpProbe(pst.netns, host.netns, str(host.nic.address.ip)) as bond_rx, \
            UdpProbe(host.netns, pst.netns, stations.peer_station(topo, peer, 4).ip) as bond_tx:
        try:
            progress(f"starting the RDMA programs: listen on {dev_t.name} ({t.station.ip}), connect from "
                     f"{dev_p.name} ({pst.ip})")
            lis = _Proc(t.spec, dev_t.netns, ["--role", "listen", "--address", t.station.ip, *send_t, *common])
            procs.append(lis)
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            lis.wait_event("ready", deadline)
            con = _Proc(pst.label, dev_p.netns, ["--role", "connect", "--address", pst.ip, "--peer", t.station.ip,
                                                 *send_p, *common])
            procs.append(con)
            con.wait_event("connected", deadline)
            lis.wait_event("connected", deadline)
            start_ns = _now_ns()
            progress(f"connected; RC QP with local ACK timeout {ack_timeout} x retry {retry}: budget {budget:.0f} ms; "
                     f"sending {rate:g} ops/s")
            stop = threading.Event()
            stop.wait(fail_at_s)  # the schedule: traffic before the fault
            if fail is not None:
                port = port_fixed or _busiest(cap, t.station.ip, start_ns) or (usable[0] if usable else None)
                if port is None:
                    raise UsageError(f"{host.name}: no port carries the target's traffic", fix="check the lab")
                f = Fault(topo, host, port, "carrier")
                try:
                    progress(f"failing {host.name}:{port} for {restore_after_s:g} s")
                    fail_ns = _now_ns()
                    f.apply()
                    fail_end_ns = _now_ns()
                    events.append({"name": f"fail {host.name}:{port}", "at_ns": fail_ns,
                                   "took_ms": round((fail_end_ns - fail_ns) / 1e6, 2)})
                    stop.wait(restore_after_s)
                    repair_ns = _now_ns()
                    f.revert()
                    events.append({"name": f"restore {host.name}:{port}", "at_ns": repair_ns,
                                   "took_ms": round((_now_ns() - repair_ns) / 1e6, 2)})
                finally:
                    if f.applied:
                        f.revert()
                    f.close()
            stop.wait(tail_s)  # the schedule: traffic after the repair
            sender, receiver = (con, lis) if initiator == "peer" else (lis, con)
            sender.stop()
            wait_s = budget / 1000.0 * 2 + 30.0
            res_s = sender.finish(wait_s)
            res_r = receiver.finish(wait_s)
        finally:
            for p in procs:
                p.kill()
        end_ns = _now_ns()
    after = {d: rdma.counters(d) for d in devices}
    names = {t.spec: dev_t.name, pst.label: dev_p.name}
    ends = []
    for who, res in ((con.name, res_s if sender is con else res_r), (lis.name, res_s if sender is lis else res_r)):
        ends.append(end_figures(who, names[who], res, fail_ns, repair_ns, window_ms))
    reactions = view.reactions_since(host, fail_ns) if (agent and fail_ns) else []
    phases: List[Tuple[str, int, Optional[int]]] = [("before the fault", start_ns, fail_ns or end_ns)]
    if fail_ns and repair_ns:
        phases += [("during the fault", fail_end_ns or fail_ns, repair_ns), ("after the repair", repair_ns, end_ns)]
    wire_counts = {name: cap.counts(None, a, b) for name, a, b in phases}
    counters = {d: rdma.counter_delta(before[d], after[d]) for d in devices}
    if agent and fail_ns:
        view.wait_settled(host, usable, SETTLE_TIMEOUT_S)
    series = {"start_ns": start_ns, "end_ns": end_ns, "fail_ns": fail_ns, "repair_ns": repair_ns,
              "completions": {e.name: (res_s if e.role == "sender" else res_r).get("completions_ns") or []
                              for e in ends},
              "bond": {"rx": list(bond_rx.arrivals), "tx": list(bond_tx.arrivals)},
              "wires": [[t_ns, p] for t_ns, p, _s, _d in cap.frames], "restamped": cap.restamped}
    return evaluate_verbs(
        lab=topo.name, target=t.spec, peer=pst.label, initiator=t.spec if initiator == "target" else pst.label,
        fail=f"{host.name}:{port}" if port else "none", agent=agent, expect_survive=agent, ack_timeout=ack_timeout,
        retry=retry, ends=ends, fail_ns=fail_ns, repair_ns=repair_ns,
        bond_arrivals={"rx": bond_rx.arrivals, "tx": bond_tx.arrivals}, agent_reactions=reactions,
        wires=wire_counts, counters=counters, failed_port=port, window_ms=window_ms, events=events, series=series)


def _busiest(cap: Any, src: str, since_ns: int) -> Optional[str]:
    counts = cap.counts(src, since_ns)
    if not counts or not any(counts.values()):
        return None
    return max(counts, key=lambda p: counts[p])


def demo_step(topo: Any, progress: Progress = _quiet) -> Dict[str, Any]:
    """The main job's real RDMA workload (``testbed demo``): the RC QP client -> RDMA function through a failover
    of the port carrying it, on a lab built with ``rdma.with_verbs``; a short dict for the demo's output."""
    from testbed.lab import Lab

    host = next(h for h in topo.hosts if h.nic and h.nic.rdma)
    lab = Lab(topo, agent=True)
    res = run_verbs(lab, f"{host.name}:{host.nic.rdma.name}", progress=progress)
    return {"verdict": res.verdict, "passed": res.passed, "summary": res.summary, "lines": res.lines()}
