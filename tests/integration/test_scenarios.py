"""Scenario suite: what the Linux bonding selftests check, with the offload, on every shipped topology.

::

    client (198.18.0.100) ── client-eth0 ─┐
                                          br0 (switch ns) ─┬─ server-pf0 ═══ pf0 ─┐
                                          [server-lag]     └─ server-pf1 ═══ pf1 ─┴─ bond0 198.18.0.1
    server ns:  vfN-rep ═ vfN (own ns)   rdma0-rep ═ rdma0 (own ns, RoCEv2 on the bond's MAC/address)
    tc flower on pfX / vfN-rep / rdma0-rep: the NIC's eswitch, programmed by the offload agent

Each class builds its topology once (the plugin's ``shared_lab``: a lab takes about a minute to build
in a TCG guest) and every test leaves it as it found it (ports up, options back).  Traffic comes from
``lab.traffic`` (``testbed.verify``): sequenced streams client <-> VF / RDMA function / bond on one
schedule, captured at the destination and on the switch side of both wires.

- active-backup (mode 1): VF and RDMA streams next to the bond's through a failure and repair, via
  the command (``testbed traffic failover --json --pcap``); recovery when the repaired port comes back as
  the other one fails, for several updelay values (``mode-1-recovery-updelay.sh``: with no other port
  up the bond must not wait for updelay, and the offload must follow at once);
- balance-xor with RX-hash buckets: 256 flows, per-port shares, exactly the dead port's flows move and
  come back; the bond's transmit hash predicted for layer2, layer2+3, layer3+4; RoCEv2 QPs spread and
  failed over;
- balance-xor with each VF split over both ports (mode 2): flows move and return; recovery with
  several updelay values (``mode-2-recovery-updelay.sh``); a repair with updelay (RX accepted during it);
- 802.3ad: LACP blocked on one link -> the port stops collecting/distributing and VF traffic moves.
"""

from __future__ import annotations

import json
import time

import pytest

from testbed import cli
from testbed.bond.state import read_state
from testbed.nl import open_ns, wait_until
from testbed.verify.faults import Fault

pytestmark = pytest.mark.integration


def server(lab):
    return lab.topo.host("server")


def put_back(lab, updelay: int = 0) -> None:
    """Every port up, updelay back, and bond, switch partner and agent agreeing on all ports again."""
    h = server(lab)
    for p in h.nic.ports:
        lab.restore(f"server:{p}")
    lab.traffic.view.set_updelay(h, updelay)
    want = [h.nic.primary] if h.nic.bond.mode == "active-backup" else list(h.nic.ports)
    lab.traffic.view.wait_settled(h, want, timeout=60)


def failover_with_updelay(lab, updelay: int, **kwargs):
    """``lab.traffic.failover(**kwargs)`` with the bond's updelay set to ``updelay`` ms; the lab is put back
    (every port up, updelay 0, all settled) whatever happens."""
    lab.traffic.view.set_updelay(server(lab), updelay)
    try:
        return lab.traffic.failover(**kwargs)
    finally:
        put_back(lab)


def explain(result) -> str:
    from testbed.verify.render import render

    return "\n" + render(result)


# -- mode 1 ---------------------------------------------------------------------------------------------


@pytest.mark.topology("topologies/active-backup.yaml")
class TestActiveBackup:
    def test_cli_vf_and_rdma_fail_over_next_to_the_bond(self, shared_lab, tmp_path, capsys):
        """The acceptance run, through the command's handler (in this process: a fresh Python costs
        minutes in a loaded TCG guest): VF and RDMA lose nothing beyond the bond's own window and the
        agent's reaction to it, next to the bond's gap."""
        pcap = tmp_path / "wires.pcap"
        argv = ["traffic", "failover", shared_lab.name, "--target", "server:vf0", "--target", "server:rdma0",
                "--restore-after", "2", "--json", "--pcap", str(pcap)]
        try:
            rc = cli.main(argv)
            data = json.loads(capsys.readouterr().out)
        finally:
            put_back(shared_lab)
        failed = [c for c in data["checks"] if not c["passed"]]
        assert rc == 0 and data["verdict"] == "PASS", failed
        assert data["lost"] == 0
        streams = {s["name"]: s for s in data["streams"]}
        assert set(streams) == {"vf0 rx", "vf0 tx", "rdma0 rx", "rdma0 tx", "bond rx", "bond tx"}
        for s in streams.values():
            assert (s["wire_before"], s["wire_after"], s["wire_end"]) == ("pf0", "pf1", "pf0"), s
            assert s["duplicated"] == 0 and s["reordered_in_flow"] == 0
            assert s["received"] >= s["sent"] * 0.8, s  # a failure costs a window, not the stream
        for name in ("rdma0 rx", "rdma0 tx"):
            roce = streams[name]["roce"]
            assert roce["ok"] and roce["icrc_bad"] == 0 and roce["packets"] == streams[name]["received"]
        assert data["bond_gap_ms"]["rx"] is not None and data["offload_gap_ms"]["vf0 rx"] is not None
        bound = data["gap_bound"]  # miimon 10 + downdelay 0, beside each gap (informative)
        assert (bound["monitor"], bound["ms"]) == ("mii", 10.0) and set(bound["streams"]) == set(streams)
        print("gap bound:", json.dumps(bound))
        with open(pcap, "rb") as fh:
            head = fh.read(24)
        assert head[:4] == b"\x4d\x3c\xb2\xa1" and int.from_bytes(head[20:24], "little") == 276  # ns pcap, SLL2
        assert pcap.stat().st_size > 24 + 6 * 100 * 60  # the six streams' frames on the wires

    @pytest.mark.parametrize("updelay", [0, 200, 2000])
    def test_mode1_recovery_when_the_other_port_fails(self, shared_lab, updelay):
        """pf0 fails; 1 s later it comes back *and* pf1 fails.  With no other port up the bond takes pf0
        at once whatever updelay says (bonding.txt 13.1), and the VF's and the RDMA function's rules must
        follow."""
        r = failover_with_updelay(shared_lab, updelay, targets=["server:vf0", "server:rdma0"], fail="server:pf0",
                                  restore_after_s=1.0, flap="server:pf1", duration_s=3.5)
        assert r.passed, explain(r)
        for s in r.streams:
            assert (s.wire_before, s.wire_after, s.wire_end) == ("pf0", "pf1", "pf0"), explain(r)
        if updelay >= 1000:  # recovery did not wait for updelay
            gaps = {s.name: s.restore_gap_ms for s in r.streams}
            assert all(g is not None and g < 0.75 * updelay for g in gaps.values()), (gaps, explain(r))


# -- balance-xor with RX-hash buckets -------------------------------------------------------------------


@pytest.mark.topology("topologies/active-active-hash.yaml")
class TestActiveActiveHash:
    def test_256_flows_spread_and_only_the_dead_ports_move(self, shared_lab):
        r = shared_lab.traffic.hash(flows=256, fail="server:pf0")
        assert r.passed, explain(r)
        for d in ("tx", "rx"):
            before = r.phase("before", d)
            assert before.sticky and before.flows_on_wires == 256 and min(before.per_port.values()) > 64
            moved = r.moves[d]["failed"]
            assert moved["moved"] == moved["flows_on_dead_port"] > 0 and moved["moved_unexpectedly"] == 0
            assert r.moves[d]["restored"]["returned"] == 256
        assert r.tables["failed"] == ["pf1"] * 32 and r.tables["restored"] == r.tables["before"]
        assert sum(b["packets"] for b in r.buckets["before"]) >= 256 * 4

    def test_bond_transmit_hash_is_predicted_for_every_policy(self, shared_lab):
        r = shared_lab.traffic.bond_hash("all")
        assert r.passed, explain(r)
        assert r.agreement == {"layer2": 1.0, "layer2+3": 1.0, "layer3+4": 1.0}
        assert all(p.by_source["stack"]["seen"] == 16 for p in r.policies)  # the kernel's own UDP too
        assert shared_lab.traffic.view.set_xmit_hash_policy(server(shared_lab), "layer3+4") == "layer3+4"  # put back

    def test_rdma_queue_pairs_spread_and_fail_over(self, shared_lab):
        try:
            r = shared_lab.traffic.rdma(qps=16, fail="server:pf1", restore_after_s=1.0)
        finally:
            put_back(shared_lab)
        assert r.passed, explain(r)
        assert r.icrc_bad == 0 and r.psn_errors == 0
        for s in r.streams:
            assert set(s.wires_before) == {"pf0", "pf1"}, explain(r)  # 16 QPs over both ports
            assert set(s.wires_after) == {"pf0"} and s.flows_back == 16, explain(r)


# -- mode 2: balance-xor, every VF split over both ports --------------------------------------------------


@pytest.mark.topology("topologies/vf-active-active.yaml")
class TestVfActiveActive:
    def test_each_vf_split_moves_to_the_survivor_and_the_same_flows_return(self, shared_lab):
        r = shared_lab.traffic.hash(flows=64, fail="server:pf1", target="server:vf2")
        assert r.passed, explain(r)
        assert r.tables["before"] == ["pf0", "pf1"] and r.tables["failed"] == ["pf0", "pf0"]

    @pytest.mark.parametrize("updelay", [0, 200, 2000])
    def test_mode2_recovery_when_the_other_port_fails(self, shared_lab, updelay):
        r = failover_with_updelay(shared_lab, updelay, target="server:vf1", fail="server:pf0",
                                  restore_after_s=1.0, flap="server:pf1", duration_s=3.5, flows=8)
        assert r.passed, explain(r)
        for s in r.streams:
            assert s.wire_end == "pf0" and set(s.wires_after) == {"pf1"}, explain(r)
        if updelay >= 1000:
            gaps = {s.name: s.restore_gap_ms for s in r.streams}
            assert all(g is not None and g < 0.75 * updelay for g in gaps.values()), (gaps, explain(r))

    def test_mode2_repair_with_updelay_loses_no_more_than_the_bond(self, shared_lab):
        """A repaired port in its updelay: the bond already takes frames there and the switch's LAG sends on
        it, so the offload must deliver them too (balance-xor receives on every enslaved port; until the
        agent learned that, VF RX lost 38 packets beyond the bond's window here at updelay 500)."""
        r = failover_with_updelay(shared_lab, 500, target="server:vf1", fail="server:pf0",
                                  restore_after_s=1.0, directions="rx", flows=8)
        assert r.passed, explain(r)


# -- 802.3ad -----------------------------------------------------------------------------------------------


@pytest.mark.topology("topologies/lacp.yaml")
class TestLacp:
    def test_lacp_blocked_on_one_link_stops_it_and_vf_traffic_moves(self, shared_lab):
        """LACPDUs dropped on pf1's wire (tc on the switch side) while data still flows: after the LACP
        timeout pf1 is no longer collecting+distributing, bond and agent leave it, VF flows move to pf0;
        unblocked, they come back."""
        h = server(shared_lab)
        nic = h.nic
        with Fault(shared_lab.topo, h, "pf1", "lacp") as block:
            block.apply()
            t0 = time.monotonic()
            try:
                with open_ns(h.netns) as ipr:
                    wait_until(lambda: not read_state(ipr, nic, h.netns).port("pf1").collecting_distributing, 30,
                               "pf1 to stop collecting+distributing")
                took = time.monotonic() - t0
                shared_lab.traffic.view.wait_settled(h, ["pf0"], timeout=30)
                assert shared_lab.agent_nic("server")["usable"] == ["pf0"]
            finally:
                block.revert()
        assert took > 1.0, "LACP timed out; no carrier event made the port leave"
        shared_lab.traffic.view.wait_settled(h, ["pf0", "pf1"], timeout=60)
        r = shared_lab.traffic.hash(flows=64, fail="server:pf1", fault="lacp")
        assert r.passed, explain(r)
        for d in ("tx", "rx"):
            assert r.phase("failed", d).per_port == {"pf0": 64}, explain(r)
            assert r.moves[d]["restored"]["returned"] == 64, explain(r)
