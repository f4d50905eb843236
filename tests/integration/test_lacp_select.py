"""Aggregator choice across two partner switches (issue 12): the offload follows the bond's active aggregator.

Bonding selftests' ``drivers/net/bonding/bond_lacp_prio.sh`` (``ad_select prio`` with per-port
``ad_actor_port_prio``, Linux 6.18+: the 7.3 lane; Debian's 6.1 and 6.12 have the port option but not
``ad_select prio``) where the kernel has it, else the same two-switch layout with
``ad_select count`` (``bond_lacp_ad_select.sh``'s policies, on every kernel of the lane): the NIC's four
ports go to two partner bonds on the switch, each its own LACP system (``nic.partners: 2``), so the bond
forms two aggregators of two ports::

    client ── br0 ─┬─ server-lag  (partner A) ── pf0, pf1 ─┐
                   └─ server-lag1 (partner B) ── pf2, pf3 ─┴─ bond0 (802.3ad) ── vf0, rdma0

With prio the bond selects A (255 + 1 against 100 + 100); with count the two tie and the bond keeps
whichever it selected first. The agent uses exactly the selected aggregator's distributing ports,
although the other's have carrier too (``link_up && tx_enabled``: a port outside the active aggregator
carries nothing). Failing the first port of the selected aggregator leaves it one port (prio: pf1's 1
against 200; count: one port against two), the bond reselects the other partner's, and the failover
verification with vf0's and rdma0's streams beside the bond's must PASS with their traffic on the
other partner's ports afterwards. After the repair prio goes back to A; count (a tie again) stays.
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from testbed import kfeatures, wire
from testbed.agent import status as agent_status
from testbed.demo import ping
from testbed.lab import Lab
from testbed.nl import open_ns, wait_until
from testbed.status import lab_status, read_bond
from testbed.topology import Topology
from testbed.verify.labview import LabView
from testbed.verify.render import render

pytestmark = [pytest.mark.integration, pytest.mark.needs("bonding", "flower", "mirred")]
A, B = ["pf0", "pf1"], ["pf2", "pf3"]


def policy() -> str:
    return "prio" if kfeatures.AD_SELECT_PRIO in kfeatures.bond_options() else "count"


def bond(topo: Topology) -> Dict[str, Any]:
    host = topo.nic_host()
    with open_ns(host.netns) as ipr:
        return read_bond(ipr, host.nic)


def agent_usable(topo: Topology) -> List[str]:
    return list(agent_status.nic(topo.name, "server").usable)


def bond_usable(topo: Topology) -> List[str]:
    return list(LabView(Lab(topo, agent=True)).bond_usable(topo.nic_host()))


def aggregators(b: Dict[str, Any]) -> Dict[str, Any]:
    return {p["name"]: p["aggregator"] for p in b["ports"]}


def settled_on(topo: Topology, ports: List[str]) -> bool:
    return bond_usable(topo) == ports and agent_usable(topo) == ports


def selected(topo: Topology) -> List[str]:
    """The partner group whose aggregator the bond selected once LACP settled (prio: A)."""
    def settled() -> bool:
        usable = bond_usable(topo)
        return usable in (A, B) and agent_usable(topo) == usable

    wait_until(settled, 60, "the bond and the agent to use one partner's two ports")
    return bond_usable(topo)


@pytest.mark.topology(f"topologies/lacp-select-{policy()}.yaml")
class TestTwoPartners:
    def test_two_partners_two_aggregators_the_offload_on_the_active_one(self, shared_lab):
        lsel = shared_lab.topo
        group = selected(lsel)
        if policy() == "prio":
            assert group == A, "255 + 1 beats 100 + 100"
        b = bond(lsel)
        assert b["options"]["ad_select"] == policy(), b["options"]
        aggs = aggregators(b)
        assert aggs["pf0"] == aggs["pf1"] != aggs["pf2"] == aggs["pf3"], aggs
        assert b["ad_aggregator"] == aggs[group[0]], (b["ad_aggregator"], aggs)
        for p in b["ports"]:
            assert p["carrier"] is True, p  # the other's ports have their link: only the aggregator idles them
            assert ("distributing" in p["lacp_actor"]) == (p["name"] in group), p
        # `testbed status --json`: the agent's view is the bond's
        server = next(h for h in lab_status(lsel.name)["hosts"] if h["name"] == "server")
        assert server["bond"]["ad_aggregator"] == aggs[group[0]] and server["offload_in_step"] is True
        assert agent_usable(lsel) == group
        assert ping(lsel.plain_host().netns, "198.18.0.11", count=3)["received"] > 0, "client -> vf0"

    def test_reselection_moves_vf_and_rdma_traffic_to_the_other_partner(self, shared_lab):
        lsel = shared_lab.topo
        group = selected(lsel)
        other = B if group == A else A
        try:
            res = shared_lab.traffic.failover(targets=["server:vf0", "server:rdma0"], fail=f"server:{group[0]}",
                                              duration_s=4.0)
            print(render(res))
            assert res.passed, render(res)
            b = bond(lsel)
            assert b["ad_aggregator"] == aggregators(b)[other[0]], "the bond reselected the other partner's"
            wait_until(lambda: settled_on(lsel, other), 30, f"the bond and the agent on {other}")
            for s in res.streams:
                assert s.wire_before in group and s.wire_after in other, s
        finally:
            wire.set_wire(lsel.name, "server", group[0], up=True)
        # prio: A's 256 beats B's 200 again and the bond goes back; count: two ports each, the bond stays
        back = A if policy() == "prio" else other
        wait_until(lambda: settled_on(lsel, back), 60, f"the bond and the agent on {back} after the repair")
