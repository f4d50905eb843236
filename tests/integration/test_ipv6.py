"""IPv6 in the lab (issue 12, item 3): dual stack, an IPv6-only VF, RoCEv2 over IPv6, the NS monitor.

Two labs, each with its agent, shared by a class's tests (the plugin's ``shared_lab``):

* ``topologies/dual-stack.yaml``: the bond, vf0 and the client carry IPv4 and IPv6, vf1
  only IPv6, the RDMA function the bond's addresses. Neighbour discovery reaches the VFs as ARP does
  (the eswitch replicates multicast): the client resolves and pings the bond, vf0 and vf1 by IPv6 with
  no static neighbour, before and after a failover. The failover verification over IPv6 (``family=6``:
  vf0, the IPv6-only vf1 and rdma0's RoCEv2 over IPv6 to the bond's IPv6 address, the bond's own IPv6
  streams beside them) must PASS; its negative control, the agent stopped before the fault, must see
  every VF and RDMA stream die (the ``rx:roce6`` steering and the TX table are what keep them alive).

* ``tests/integration/topologies/ns-ab.yaml`` (bonding selftests'
  ``drivers/net/bonding/bond_options.sh``, ``ns_ip6_target`` with ``arp_validate``): active-backup
  watched by the NS monitor (miimon 0, ``arp_interval`` + ``ns_ip6_target`` = the client). The switch
  drops every ICMPv6 frame it sends down pf0's wire (a flower drop on ``server-pf0``'s egress): pf0 keeps
  its carrier, the NS monitor fails it, and the agent moves the IPv6-only VF's traffic to pf1 -- the
  bond's verdict, not carrier -- and back when the drop goes.
"""

from __future__ import annotations

import subprocess
from typing import Any, Dict

import pytest

from testbed import ifread, naming
from testbed.agent import status as agent_status
from testbed.demo import ping
from testbed.nl import open_ns, wait_until
from testbed.status import read_bond
from testbed.topology import Topology
from testbed.verify.render import render
from traffic.netns import run_in_netns

pytestmark = [pytest.mark.integration, pytest.mark.needs("bonding", "flower", "mirred")]


def bond(topo: Topology) -> Dict[str, Any]:
    host = topo.nic_host()
    with open_ns(host.netns) as ipr:
        return read_bond(ipr, host.nic)


def usable(topo: Topology):
    return list(agent_status.nic(topo.name, "server").usable)


def pings(topo: Topology, addr: str, ns: str = "") -> bool:
    return ping(ns or topo.plain_host().netns, addr, count=3)["received"] > 0


def neighbours(ns: str, dev: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "ip", "-6", "neigh", "show", "dev", dev], check=True,
                          capture_output=True, text=True).stdout


def switch_tc(topo: Topology, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", topo.switch_netns, "tc", *args], check=True)


@pytest.mark.topology("topologies/dual-stack.yaml")
class TestDualStack:
    """``topologies/dual-stack.yaml``: as built, neighbour discovery, the IPv6 failover, its negative control."""

    def test_dual_stack_addresses_as_built(self, shared_lab):
        ds = shared_lab.topo
        server = ds.nic_host()
        vf0, vf1 = server.nic.vfs
        assert ifread.iface(vf0.netns, "vf0")["addresses"] == ["198.18.0.11/24", "2001:2::11/64"]
        assert ifread.iface(vf1.netns, "vf1")["addresses"] == ["2001:2::12/64"], "vf1 is IPv6-only"
        rdma = server.nic.rdma
        assert ifread.iface(rdma.netns, rdma.name)["addresses"] == ["198.18.0.1/24", "2001:2::1/64"]
        path = "/proc/sys/net/ipv6/conf/all/disable_ipv6"
        assert run_in_netns(vf1.netns, lambda: open(path).read().strip()) == "0", "IPv6 on in a dual-stack lab"
        assert run_in_netns(ds.switch_netns, lambda: open(path).read().strip()) == "1", "and off in the switch's"
        b = bond(ds)
        assert b["active_port"] == "pf0"

    def test_neighbour_discovery_reaches_the_vfs(self, shared_lab):
        """The client resolves the bond and both VFs by neighbour discovery (the solicitations are multicast:
        the eswitch replicates them to the VFs' representors), before and after a failover; so does vf1."""
        ds = shared_lab.topo
        client = ds.plain_host()
        wait_until(lambda: usable(ds) == ["pf0"], 30, "the agent to use the primary pf0")
        for addr in ("2001:2::1", "2001:2::11", "2001:2::12"):
            assert pings(ds, addr), f"client -> {addr} through pf0"
        neigh = neighbours(client.netns, naming.HOST_IF)
        assert "2001:2::12 lladdr " + ds.nic_host().nic.vfs[1].mac in neigh, neigh
        assert "PERMANENT" not in neigh, "learned by neighbour discovery, not pinned"
        vf1 = ds.nic_host().nic.vfs[1]
        assert pings(ds, "2001:2::100", vf1.netns), "vf1 -> client"
        shared_lab.fail("server:pf0")
        try:
            wait_until(lambda: usable(ds) == ["pf1"], 30, "the agent to follow to pf1")
            subprocess.run(["ip", "netns", "exec", client.netns, "ip", "-6", "neigh", "flush", "dev",
                            naming.HOST_IF], check=True)
            for addr in ("2001:2::1", "2001:2::12"):
                assert pings(ds, addr), f"client -> {addr} through pf1, resolved again"
        finally:
            shared_lab.restore("server:pf0")
        wait_until(lambda: usable(ds) == ["pf0"], 30, "the agent back on pf0")

    def test_ipv6_failover_of_vfs_and_rocev2(self, shared_lab):
        """RoCEv2 over IPv6 and an IPv6-only VF through a failover and repair: every stream PASSes, next to the
        bond's own IPv6 streams."""
        res = shared_lab.traffic.failover(targets=["server:vf0", "server:vf1", "server:rdma0"],
                                                   fail="server:pf0", restore_after_s=1.5, family=6)
        print(render(res))
        assert res.passed, render(res)
        kinds = {s.target: s.kind for s in res.streams}
        assert kinds == {"server:vf0": "vf", "server:vf1": "vf", "server:rdma0": "rdma", "server:bond": "bond"}
        for s in res.streams:
            assert s.received > 0 and s.wire_before == "pf0", s

    def test_ipv6_negative_control_dies_without_the_agent(self, shared_lab):
        """The same with the agent stopped before the fault: every VF and RDMA stream loses packets beyond the
        bond's window, so the PASS above owes their survival to the agent's rules. Last in the class: the
        agent stays stopped."""
        res = shared_lab.traffic.failover(targets=["server:vf0", "server:vf1", "server:rdma0"],
                                                   fail="server:pf0", restore_after_s=1.5, family=6, agent=False)
        print(render(res))
        assert res.negative_control and res.passed, render(res)
        dead = {s.name for s in res.streams if s.kind in ("vf", "rdma") and s.lost_beyond_bond > 0}
        assert len(dead) == 6, render(res)


@pytest.mark.topology("topologies/ns-ab.yaml")
class TestNsMonitor:
    def test_ns_monitor_verdict_not_carrier_moves_the_offload(self, shared_lab):
        """bond_options.sh's NS monitor: pf0 keeps its carrier but hears no neighbour discovery; the bond fails it
        by its NS verdict, and the agent moves the IPv6-only VF's traffic to pf1; without the drop pf0 comes
        back (primary)."""
        nsab = shared_lab.topo
        b = bond(nsab)
        assert b["options"]["arp_interval"] == 100 and b["options"]["ns_ip6_target"] == ("2001:2::100",), b["options"]
        wait_until(lambda: bond(nsab)["active_port"] == "pf0", 30, "the NS monitor to bring up the primary pf0")
        wait_until(lambda: usable(nsab) == ["pf0"], 30, "the agent to use pf0")
        assert pings(nsab, "2001:2::11"), "client -> vf0 through pf0"
        wire_dev = naming.switch_port("server", "pf0")
        switch_tc(nsab, "qdisc", "add", "dev", wire_dev, "clsact")
        try:
            switch_tc(nsab, "filter", "add", "dev", wire_dev, "egress", "protocol", "ipv6", "prio", "1",
                      "flower", "ip_proto", "icmpv6", "action", "drop")
            wait_until(lambda: bond(nsab)["active_port"] == "pf1", 30, "the NS monitor to fail pf0 over to pf1")
            p0 = next(p for p in bond(nsab)["ports"] if p["name"] == "pf0")
            assert p0["carrier"] is True and p0["mii_status"] != "up", p0
            wait_until(lambda: usable(nsab) == ["pf1"], 30, "the agent to leave pf0 although its carrier is up")
            vf0 = nsab.nic_host().nic.vfs[0]
            assert pings(nsab, "2001:2::100", vf0.netns), "vf0 -> client through pf1"
            assert pings(nsab, "2001:2::11"), "client -> vf0 through pf1"
            res = shared_lab.traffic.failover(targets=["server:vf0", "server:rdma0"], fail=None,
                                                         duration_s=2.0, family=6)
            print(render(res))
            assert res.passed and {s.wire_before for s in res.streams} == {"pf1"}, render(res)
            server = next(h for h in shared_lab.status()["hosts"] if h["name"] == "server")
            assert server["offload_in_step"] is True and server["bond"]["usable_ports"] == ["pf1"], server["bond"]
        finally:
            switch_tc(nsab, "qdisc", "del", "dev", wire_dev, "clsact")
        wait_until(lambda: bond(nsab)["active_port"] == "pf0", 30, "pf0 back by its NS verdict (primary)")
        wait_until(lambda: usable(nsab) == ["pf0"], 30, "the agent back on pf0")
