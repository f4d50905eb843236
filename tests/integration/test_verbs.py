"""Real RDMA through the LAG: Soft-RoCE devices in the lab and an RC QP through a failover (needs rxe in
a namespace: Linux 7.1+; in the VM lane `--kernel 7.3`). Part of the scenario suite: PASS on every
offload mode (active-backup, hash, vf-split over 802.3ad), both initiators, and the negative control
(agent stopped before the fault: the QP must die).

::

    client (rxe on eth0) ── br0 (switch ns) ═══ pf0/pf1 ── bond0 ── rdma0-rep ═ rdma0 (rxe)
                                                                └─ vf0-rep ═ vf0 (rxe)
"""

from __future__ import annotations

import json
import subprocess

import pytest

from testbed import cli, naming, rdma

pytestmark = [pytest.mark.integration, pytest.mark.needs("rxe_netns")]

AB = "topologies/rdma-active-backup.yaml"
HASH = "topologies/rdma-hash.yaml"
LACP = "topologies/rdma-lacp.yaml"


def assert_survived(res) -> None:
    assert res.passed, "\n".join(res.lines())
    assert res.survived
    for e in res.ends:
        assert e.qp_state == "RTS" and not e.errors and e.completed == e.expected > 0
    assert res.fault_ms > res.budget_ms  # the fault outlasted what the QP alone could ride out
    during = res.wires["during the fault"]
    assert during[res.fail.split(":")[1]] == 0 and sum(during.values()) > 0


def test_devices_down_and_clean_leave_no_rxe(lab_factory, capsys):
    lab = lab_factory(HASH, agent=False)
    st = lab.status()["verbs"]
    assert {v["owner"] for v in st} == {"server:rdma0", "client"}
    for v in st:
        assert v["present"] and v["port_state"] == "ACTIVE", v
        assert v["name"].startswith(f"tb_{lab.name}_")
    rdma_gid = next(v for v in st if v["owner"] == "server:rdma0")["roce_v2_gid"]
    assert rdma_gid == rdma.roce_v2_gid(lab.topo.host("server").nic.address.ip)
    assert cli.main(["status", lab.name]) == 0
    out = capsys.readouterr().out
    assert f"verbs tb_{lab.name}_server_rdma0 (server:rdma0)" in out and "ACTIVE" in out
    lab.down()
    assert rdma.lab_devices(lab.name) == []
    # a leftover device of a lab without a record (a crash) is removed by `clean`, nothing else is
    stray = naming.rdma_device("zzgone", "h", "x")
    subprocess.run(["ip", "link", "add", "tbtstv0", "type", "veth", "peer", "name", "tbtstv1"], check=True)
    try:
        subprocess.run(["ip", "link", "set", "tbtstv0", "up"], check=True)
        subprocess.run(["rdma", "link", "add", stray, "type", "rxe", "netdev", "tbtstv0"], check=True)
        assert stray in rdma.devices()
        assert cli.main(["clean", "-q"]) == 0
        assert stray not in rdma.devices()
    finally:
        subprocess.run(["ip", "link", "del", "tbtstv0"], check=False)


@pytest.mark.topology(HASH)
class TestHash:
    def test_rdma_function_target_initiator_survives_failover(self, shared_lab):
        assert_survived(shared_lab.traffic.verbs(initiator="target"))


@pytest.mark.topology(LACP)
class TestLacpVfSplit:
    def test_vf_survives_failover(self, shared_lab):
        assert_survived(shared_lab.traffic.verbs("server:vf0"))


@pytest.mark.topology(AB)
class TestActiveBackup:
    def test_rdma_function_survives_failover(self, shared_lab, capsys):
        assert cli.main(["traffic", "verbs", shared_lab.name, "--json"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert res["passed"] and res["verdict"] == "PASS", res["summary"]
        assert res["counters"]  # rxe counters read before/after
        snd = next(e for e in res["ends"] if e["role"] == "sender")
        assert snd["name"] == "client" and snd["largest_stall_ms"] < res["budget_ms"]

    def test_vf_initiator_target_survives_failover(self, shared_lab):
        res = shared_lab.traffic.verbs("server:vf0", initiator="target")
        assert_survived(res)
        assert res.initiator == "server:vf0"
        assert shared_lab.results[-1]["kind"] == "verbs"

    def test_negative_control_without_agent(self, shared_lab):
        """Last in the class: the agent stays stopped."""
        res = shared_lab.traffic.verbs(agent=False)
        assert res.passed and not res.survived, "\n".join(res.lines())
        assert "traffic died as expected" in res.verdict
        died = [e for e in res.ends if e.qp_state == "ERR" or e.errors or e.stalled]
        assert died, "\n".join(res.lines())


@pytest.mark.topology("topologies/rdma-dual.yaml")
class TestIpv6:
    """RoCEv2 over IPv6 with real verbs (``tests/integration/topologies/rdma-dual.yaml``): RDMA CM connects the
    client to the RDMA function by their IPv6 addresses; every RoCE frame the wires carried was IPv6
    (``rocewire`` records both families, the addresses name them), and the QP survives the failover."""

    def test_rdma_function_survives_failover_over_ipv6(self, shared_lab):
        gids = {v["owner"]: v for v in shared_lab.status()["verbs"]}
        assert set(gids) == {"server:rdma0", "client"} and all(v["port_state"] == "ACTIVE" for v in gids.values())
        res = shared_lab.traffic.verbs(family=6)
        assert_survived(res)
        assert res.target == "server:rdma0"
        total = sum(sum(w.values()) for w in res.wires.values())
        assert total > 0, res.wires  # counted by the IPv6 addresses the run named: the frames were IPv6
