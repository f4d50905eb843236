"""802.3ad over 4 ports with the hash offload: a port dies and the switch rehashes (issue 12, item 5).

::

    client (198.18.4.100) ── br0 (switch ns) ── server-lag (802.3ad partner bond, hash % live ports)
                                                  ├─ server-pf0 ═ pf0 ─┐
                                                  ├─ server-pf1 ═ pf1 ─┤
                                                  ├─ server-pf2 ═ pf2 ─┼─ bond0 (802.3ad) 198.18.4.1
                                                  └─ server-pf3 ═ pf3 ─┘
    server ns: vf0-rep ═ vf0 (198.18.4.11); TX: 32-entry bucket table -> pf0..pf3

The switch's partner bond picks each RX flow's port as ``hash % live ports``: when pf2 dies it moves
most flows, not only pf2's.  The verification judges RX by what the NIC controls (every flow
delivered once to vf0, only on ports it receives on) and reports the switch's rehash as the switch's
figure; TX, the NIC's own table, must move exactly pf2's flows.

The same lab with a resilient switch (``topologies/lacp-4port-resilient.yaml``, ``partner_select:
resilient``): the switch's partner bond meets a bucket table on its egress, kept by the offload agent,
so RX moves exactly pf2's flows too, and all return after the repair -- judged like TX.
"""

from __future__ import annotations

import pytest

from testbed.verify.render import render

pytestmark = pytest.mark.integration


@pytest.mark.topology("topologies/lacp-4port-hash.yaml")
def test_a_dead_port_of_four_moves_only_its_tx_flows_and_rx_is_delivered_whatever_the_switch_does(lab):
    r = lab.traffic.hash(flows=256, fail="server:pf2")
    text = render(r)
    assert r.passed, "\n" + text
    tx, rx = r.moves["tx"]["failed"], r.moves["rx"]["failed"]
    assert tx["moved"] == tx["flows_on_dead_port"] > 0 and tx["moved_unexpectedly"] == 0, text
    assert r.moves["rx"]["decided_by"] == "switch" and rx["moved"] == rx["flows_on_dead_port"] > 0, text
    assert rx["switch_rehash"] > 0, text  # a modulo switch over 4 -> 3 ports moves survivors' flows too
    assert f"switch's figure (its own rehash, not judged): {rx['switch_rehash']} flows" in text
    for phase in ("before", "failed", "restored"):
        assert r.phase(phase, "rx").delivery["delivered_once"] == 256, text
    assert "pf2" not in r.tables["failed"] and r.tables["restored"] == r.tables["before"], text
    assert set(r.phase("before", "tx").per_port) == {"pf0", "pf1", "pf2", "pf3"}, text
    print(text)


@pytest.mark.topology("topologies/lacp-4port-resilient.yaml")
def test_a_resilient_switch_moves_only_the_dead_ports_rx_flows(lab):
    r = lab.traffic.hash(flows=256, fail="server:pf2")
    text = render(r)
    assert r.passed, "\n" + text
    rx = r.moves["rx"]
    assert rx["decided_by"] == "switch" and rx["switch_select"] == "resilient", text
    f = rx["failed"]
    assert f["moved"] == f["flows_on_dead_port"] > 0 and f["switch_rehash"] == 0, text
    assert rx["restored"]["returned"] == rx["restored"]["of"] == 256, text
    assert "rx: only the dead port's flows moved" in [c.name for c in r.checks], text
    for phase in ("before", "failed", "restored"):
        assert r.phase(phase, "rx").delivery["delivered_once"] == 256, text
    assert set(r.phase("before", "rx").per_port) == {"pf0", "pf1", "pf2", "pf3"}, text  # the table spreads
    switches = lab.status()["agent"]["switches"]["server"]["partners"]["server-lag"]
    assert len(switches["table"]) == 32 and set(switches["table"]) == {f"server-pf{i}" for i in range(4)}, switches
    print(text)
