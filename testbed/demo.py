"""The main job: bring up a lab, fail the active port, show that the bond *and* the offload followed,
then prove it with real VF and RDMA traffic through a second failover (``testbed traffic failover``).

Used by ``testbed demo`` (and through it by ``tools/demo``). Everything it
builds is removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any, Dict, List, Optional

from testbed import bringup, labstore, status, teardown, wire
from testbed.agent import status as agent_status
from testbed.nl import open_ns, wait_until
from testbed.progress import Progress
from testbed.topology import Host, Topology


def ping(ns: str, addr: str, count: int = 3) -> Dict[str, Any]:
    """Ping from namespace ``ns``; the received count is parsed from ping's own summary."""
    argv = ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "2", addr]
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    received = 0
    for line in res.stdout.splitlines():
        if "received" in line:
            received = int(line.split(",")[1].split()[0])
    return {"from": ns, "to": addr, "sent": count, "received": received}


def _snapshot(topo: Topology, host: Host) -> Dict[str, Any]:
    st = status.lab_status(topo.name)
    h = next(x for x in st["hosts"] if x["name"] == host.name)
    agent = agent_status.nic(topo.name, host.name)
    rules = {f"{r['where']}/{r['label']}": r["packets"] for r in h.get("rules", [])}
    return {"active_port": h["bond"].get("active_port"),
            "ports": {p["name"]: p.get("carrier") for p in h["bond"]["ports"]},
            "offload_usable": list(agent.usable), "offload_mapping": list(agent.mapping),
            "rule_packets": rules}


def traffic_failover(topo: Topology, host: Host, agent: bool, progress: Progress) -> Dict[str, Any]:
    """Real packets through a second failover: the first VF's and the RDMA function's streams beside the
    bond's, both directions, the active port failed and repaired 2 s later (``testbed traffic failover``)."""
    from testbed.lab import Lab
    from testbed.verify import LabTraffic

    nic = host.nic
    targets = [f"{host.name}:{fn.name}" for fn in (*nic.vfs[:1], *([nic.rdma] if nic.rdma else []))]
    res = LabTraffic(Lab(topo, agent=agent), progress=progress).failover(
        targets=targets or [f"{host.name}:bond"], fail=f"{host.name}:active", restore_after_s=2.0)
    return {"verdict": res.verdict, "fail": res.fail, "targets": targets, "rate_pps": res.rate_pps, "lost": res.lost,
            "lost_total": res.lost_total, "bond_gap_ms": res.bond_gap_ms, "offload_gap_ms": res.offload_gap_ms,
            "summary": res.summary, "checks": len(res.checks), "failed": [c.to_dict() for c in res.failures]}


def _with_verbs(topo: Topology) -> tuple[Topology, Optional[str]]:
    """Real RDMA when the kernel can host Soft-RoCE in a namespace; else why not."""
    from testbed import kfeatures, rdma

    if not kfeatures.has("rxe_netns"):
        return topo, (f"skipped real RDMA (Soft-RoCE): kernel {kfeatures.running_release()} cannot host it in a "
                      f"namespace; it needs {kfeatures.needed_kernel('rxe_netns')}")
    return rdma.with_verbs(topo), None


def run(topo: Topology, *, agent: bool = True, keep: bool = False, traffic: bool = True,
        progress: Progress) -> Dict[str, Any]:
    topo, skipped = _with_verbs(topo)
    host, client = topo.nic_host(), topo.plain_host()
    nic = host.nic
    vf = nic.vfs[0] if nic.vfs else None
    result: Dict[str, Any] = {"lab": topo.name, "file": topo.file, "host": host.name, "steps": []}
    if skipped:
        result["verbs"] = {"skipped": skipped}
    t0 = time.monotonic()
    bringup.up(topo, agent=agent, progress=progress)
    try:
        targets = [("bond", str(nic.address.ip))] + ([(vf.name, str(vf.address.ip))] if vf else [])
        result["up_s"] = round(time.monotonic() - t0, 2)
        before = _snapshot(topo, host)
        before["ping"] = {name: ping(client.netns, addr) for name, addr in targets}
        result["before"] = before
        victim = before["active_port"] or nic.ports[0]
        survivor = next(p for p in nic.ports if p != victim)
        progress(f"fail {host.name}:{victim} (switch side of the wire goes down)")
        with open_ns(host.netns) as ipr:  # one handle, polled: a full status per poll is slow in a TCG guest
            t_fail = time.monotonic()
            wire.set_wire(topo.name, host.name, victim, up=False)
            if nic.bond.mode == "active-backup":
                wait_until(lambda: status.read_bond(ipr, nic).get("active_port") == survivor, 30,
                           f"the bond to move to {survivor}", interval=0.005)
                result["bond_moved_ms"] = round((time.monotonic() - t_fail) * 1000, 1)
        if agent:
            agent_status.wait_nic(topo.name, host.name, lambda n: bool(n.usable) and victim not in n.usable, 30,
                                  f"the agent to stop using {victim}", interval=0.005)
            result["offload_moved_ms"] = round((time.monotonic() - t_fail) * 1000, 1)
        after = _snapshot(topo, host)
        after["ping"] = {name: ping(client.netns, addr) for name, addr in targets}
        result["after"] = after
        result["failed_port"], result["survivor"] = victim, survivor
        ok = after["active_port"] == survivor if nic.bond.mode == "active-backup" else True
        ok = ok and all(p["received"] > 0 for p in after["ping"].values())
        if agent:
            ok = ok and victim not in (after["offload_usable"] or []) and survivor in (after["offload_usable"] or [])
        agent_state = agent_status.read(topo.name)
        result["agent_reactions"] = [r.text for r in agent_state.reactions][-3:] if agent_state else []
        if traffic and agent:
            progress(f"restore {host.name}:{victim}, then real traffic through a second failover")
            wire.set_wire(topo.name, host.name, victim, up=True)
            result["traffic"] = traffic_failover(topo, host, agent, progress)
            ok = ok and result["traffic"]["verdict"] == "PASS"
            if topo.verbs_devices:  # real RDMA (Soft-RoCE): an RC QP through a third failover
                from testbed.verify.verbs_run import demo_step

                progress("real RDMA: an RC queue pair client -> RDMA function through a failover")
                result["verbs"] = demo_step(topo, progress)
                ok = ok and result["verbs"]["passed"]
        result["verdict"] = "PASS" if ok else "FAIL"
        return result
    finally:
        if not keep:
            progress(f"removing lab {topo.name}")
            teardown.down(topo.name)
        else:
            progress(f"lab {topo.name} kept; remove it with `testbed down {topo.name}`")
        assert keep or labstore.try_read(topo.name) is None


def render(result: Dict[str, Any]) -> str:
    b, a = result.get("before", {}), result.get("after", {})
    lines: List[str] = [f"lab {result['lab']} ({result['file']}), host {result['host']}: up in {result.get('up_s')} s"]
    lines.append(f"{'':22}{'before':>18}{'after':>18}")

    def row(name: str, x: Optional[Any], y: Optional[Any]) -> None:
        lines.append(f"{name:22}{str(x):>18}{str(y):>18}")

    row("bond active port", b.get("active_port"), a.get("active_port"))
    for port in b.get("ports", {}):
        row(f"{port} carrier", "up" if b["ports"][port] else "down", "up" if a.get("ports", {}).get(port) else "down")
    row("offload uses", ",".join(b.get("offload_usable") or []) or "-", ",".join(a.get("offload_usable") or []) or "-")
    for name in b.get("ping", {}):
        pb, pa = b["ping"][name], a.get("ping", {}).get(name, {})
        row(f"ping client->{name}", f"{pb['received']}/{pb['sent']}", f"{pa.get('received')}/{pa.get('sent')}")
    lines.append(f"failed {result.get('failed_port')} (wire down): bond's active port moved after "
                 f"{result.get('bond_moved_ms', '-')} ms, offload rules moved after "
                 f"{result.get('offload_moved_ms', '-')} ms (as seen by polling)")
    for text in result.get("agent_reactions", []):
        lines.append(f"  agent: {text}")
    tr = result.get("traffic")
    if tr:
        lines.append(f"traffic failover ({', '.join(tr['targets'])} and the bond, {tr.get('rate_pps', 0):g} pps each "
                     f"way, fail {tr['fail']}, repair 2 s later): {tr['verdict']} "
                     f"({tr['checks'] - len(tr['failed'])}/{tr['checks']} checks), "
                     f"{tr['lost']} packets lost beyond the bond's own window")
        lines += [f"  {part}" for part in tr["summary"].split("; ")]
        lines += [f"  FAIL {c['name']}: {c['measured']} (want {c['tolerance']})" for c in tr["failed"]]
    v = result.get("verbs")
    if v and v.get("skipped"):
        lines.append(v["skipped"])
    elif v:
        lines.append(f"real RDMA (RC QP over RDMA CM, Soft-RoCE): {v['verdict']}")
        lines += [f"  {line}" for line in v["lines"][:-1]]
    lines.append(f"verdict: {result.get('verdict')}")
    return "\n".join(lines)
