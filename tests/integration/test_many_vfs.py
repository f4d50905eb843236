"""NIC scale: 256 VFs on one host (``topologies/many-vfs.yaml``), the most a host may have.

::

    client ── client-eth0 ─┐
                           br0 (switch ns) ─┬─ server-pf0 ═ pf0 ─┐
                                            └─ server-pf1 ═ pf1 ─┴─ bond0 (active-backup, primary pf0)
    server ns: vf0-rep ═ vf0 (ns mv-server-vf0) ... vf255-rep ═ vf255 (ns mv-server-vf255),
               rdma0-rep ═ rdma0 (ns mv-server-rdma0)

Brought up with its agent as ``testbed up`` does (``bringup.up``); then the active port's wire is cut:
the bond moves to pf1 and every function's TX, read back from the kernel (``tc.ops``: each representor
bound to the shared block, its ``tx:<fn>`` rule into the TX table), must redirect to pf1 -- 257 of them;
after the repair all go back to pf0. Then traffic: the failover verification with 64 VFs as targets
at once (``server:vf0-vf63``, both directions, the bond's streams beside them: 130 streams on one
schedule, at the rate lowered to fit, ``pacing.stream_rate``) must PASS, with every VF's gap at the
failure measured and bounded by the bond's plus the agent's reaction; and, as its negative control with
the agent stopped before the fault, every VF stream must die (these two are marked ``soak``: the
kernel matrix runs them on one kernel). ``down`` must leave no namespace,
no host link and no rxe device behind. Every VF is checked as built: in its own marked namespace, with
its MAC and address, up, IPv6 off, and its representor marked with clsact.

Under TCG this takes minutes (bring-up, the agent's first reconcile of ~3,600 rules, teardown), so it
has its own deadline; see the module's figures in README (NIC scale).
"""

from __future__ import annotations

import os

import pytest
from pyroute2 import netns as pr_netns

from testbed import bringup, ifread, loader, teardown, wire
from testbed.agent import rules
from testbed.lab import Lab
from testbed.nl import open_ns, wait_until
from testbed.status import read_bond
from testbed.tc import ops
from testbed.tc.rule import Action
from testbed.topology import Topology
from testbed.verify.failover import FailoverTolerance
from testbed.verify.render import render
from traffic.pacing import FRAME_BUDGET_PPS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILE = os.path.join(ROOT, "topologies", "many-vfs.yaml")
AGENT_TIMEOUT = 1200.0  # the first reconcile of ~3,600 rules in a loaded TCG guest
AGENT_LATENCY_MS = 1500.0  # the agent's reaction (event -> rules applied) during the 64-VF failover run


def host_links():
    with open_ns(None) as ipr:
        return sorted(ln.get_attr("IFLA_IFNAME") for ln in ipr.get_links())


@pytest.fixture(scope="module")
def lab():
    before = (sorted(pr_netns.listnetns()), host_links())
    topo = loader.load(FILE)
    assert len(topo.nic_host().nic.vfs) == loader.MAX_VFS
    bringup.up(topo, agent=True, agent_timeout=AGENT_TIMEOUT)
    try:
        yield topo
    finally:
        teardown.down(topo.name)
        assert (sorted(pr_netns.listnetns()), host_links()) == before, "down must leave nothing behind"


def all_tx_to(topo: Topology, port: str) -> bool:
    """Every function's TX, as the kernel holds it, goes out of ``port``: each representor's clsact ingress
    is bound to the representors' shared block, whose ``tx:<fn>`` rule (indev <fn>-rep) leads into the TX
    table (chain ``CHAIN_TX``), whose every entry redirects to ``port`` -- 257 functions, one table."""
    server = topo.nic_host()
    reps = sorted(fn.rep for fn in server.nic.functions)
    with open_ns(server.netns) as ipr:
        bound = ops.clsact_blocks(ipr)
        block = [inst.rule for inst in ops.dump(ipr, [], [rules.BLOCK_REPS])]
    if any(bound.get(rep, (0, 0))[0] != rules.BLOCK_REPS for rep in reps):
        return False
    tx = {r.match.indev: r.actions for r in block if r.chain == 0 and r.label.startswith("tx:")}
    if sorted(tx) != reps or any(acts != (Action("goto", chain=rules.CHAIN_TX),) for acts in tx.values()):
        return False
    table = [r for r in block if r.chain == rules.CHAIN_TX]
    return bool(table) and all(r.actions == (Action("redirect", dev=port),) for r in table)


def active_port(topo: Topology) -> str:
    server = topo.nic_host()
    with open_ns(server.netns) as ipr:
        return read_bond(ipr, server.nic).get("active_port") or ""


def test_every_function_is_built_marked_and_addressed(lab):
    server = lab.nic_host()
    mark = f"testbed:{lab.name}"
    for fn in server.nic.functions:
        assert teardown.netns_mark(fn.netns) == mark, fn.netns
        st = ifread.iface(fn.netns, fn.name)
        assert (st["alias"], st["up"], st["mac"], st["addresses"]) == (mark, True, fn.mac, [str(fn.address)]), fn.name
    last = server.nic.vfs[-1]
    assert last.name == "vf255" and str(last.address) == "198.18.1.1/23"
    path = "/proc/sys/net/ipv6/conf/all/disable_ipv6"
    from traffic.netns import run_in_netns

    assert run_in_netns(last.netns, lambda: open(path).read().strip()) == "1", "IPv6 off in the VF's namespace"
    with open_ns(server.netns) as ipr:
        reps = {ln.get_attr("IFLA_IFNAME"): ln for ln in ipr.get_links()}
    for fn in server.nic.functions:
        rep = reps[fn.rep]
        assert rep.get_attr("IFLA_IFALIAS") == mark and rep.get_attr("IFLA_ADDRESS") == server.nic.mac
        assert rep.get_attr("IFLA_OPERSTATE") == "UP", fn.rep


def test_failover_moves_every_vfs_tx_and_back(lab):
    assert active_port(lab) == "pf0"
    wait_until(lambda: all_tx_to(lab, "pf0"), 120, "every TX rule on pf0 after bring-up")
    wire.set_wire(lab.name, "server", "pf0", up=False)
    try:
        wait_until(lambda: active_port(lab) == "pf1", 30, "bond0 to fail over to pf1")
        wait_until(lambda: all_tx_to(lab, "pf1"), 600, "all 257 TX rules to redirect to pf1 (the survivor)")
    finally:
        wire.set_wire(lab.name, "server", "pf0", up=True)
    wait_until(lambda: active_port(lab) == "pf0", 30, "bond0 back on pf0 (primary, reselect always)")
    wait_until(lambda: all_tx_to(lab, "pf0"), 600, "all 257 TX rules back on pf0")


# soak (one kernel of the matrix): 130 streams load the 2-CPU TCG guest most of all; on a machine
# loaded from outside its sender fell 600-855 ms behind in all three attempts of one 7.3 run, and
# 22 VF rx frames counted beyond (they passed on 7.3, 6.12 and 6.1 in the run before)
@pytest.mark.soak
def test_failover_verification_with_64_vfs_at_once(lab):
    """64 VFs x rx/tx + the bond's rx/tx: 130 streams; the port fails 1 s in and is repaired 1.5 s later."""
    # the agent reacts for 257 functions while 130 streams load the 2 TCG vCPUs: 1.5 s, not the default 0.5 s
    tol = FailoverTolerance(max_agent_latency_ms=AGENT_LATENCY_MS)
    # attempts=3: a run that FAILs while its sender falls far behind (an overloaded machine: in one CI run
    # on 6.1 the guest's timer interrupt took 16 ms and the sender ran 3.2 s behind, sending nothing during
    # the outage) is redone; a run whose sender kept up is judged as it is
    res = Lab(lab, agent=True).traffic.failover(targets=["server:vf0-vf63"], fail="server:pf0", restore_after_s=1.5,
                                               tolerance=tol, attempts=3)
    print(render(res))  # the figures, in the guest's log (pytest -s / -rfEs on failure)
    # Each lost frame is judged at its own send time (the sender's stamps): the 130 streams' frames of one tick
    # go out tens of ms apart under TCG, and a VF's frame sent after the fault began is inside the bond's
    # window even when the bond's frame of the same tick, sent before it, passed. (Judged at the tick's
    # start instead, such frames counted "beyond": for 22 of 64 VFs' rx on 7.3, 4 rx and 5 tx on 6.12.)
    assert res.passed, render(res)
    vf_streams = [s for s in res.streams if s.kind == "vf"]
    assert sorted({s.target for s in vf_streams}) == sorted(f"server:vf{i}" for i in range(64))
    assert len(vf_streams) == 128 and len(res.streams) == 130
    assert res.rate_pps * len(res.streams) <= FRAME_BUDGET_PPS, "the rate per stream is lowered to fit"
    spacing_ms = 1000.0 / res.rate_pps
    slack_ms = res.tolerance.max_agent_latency_ms + res.tolerance.agent_allowance_ms + 2 * spacing_ms
    for d, g in res.gap_spread.items():
        assert g["streams"] == 64 and g["with_gap"] == 64, (d, g)  # every VF's gap at the failure measured
        assert g["bond_gap_ms"] is not None, (d, g)
        assert g["max_ms"] <= g["bond_gap_ms"] + slack_ms, (d, g)  # bounded: the bond's + the agent's reaction
    assert {s.wire_before for s in vf_streams} == {"pf0"} and {s.wire_after for s in vf_streams} == {"pf1"}


@pytest.mark.soak  # with the verification above, on the same kernel
def test_negative_control_64_vfs_die_without_the_agent(lab):
    """The same 64 VFs with the agent stopped before the fault: every VF stream must lose packets beyond the
    bond's window (so the PASS above owes their survival to the agent). Last in the module: the agent stays
    stopped, and ``down`` follows."""
    res = Lab(lab, agent=True).traffic.failover(targets=["server:vf0-vf63"], fail="server:pf0",
                                               restore_after_s=1.5, agent=False)
    print(render(res))
    assert res.negative_control and res.passed, render(res)
    assert sum(s.kind == "vf" and s.lost_beyond_bond > 0 for s in res.streams) == 128
