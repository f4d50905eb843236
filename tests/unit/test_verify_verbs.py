"""The pure parts of real RDMA in the lab: topology keys, device names, refusal on an old kernel,
``rdma statistic -j`` parsing, the retry budget, stalls, and the verbs verdict."""

from __future__ import annotations

import ipaddress
import socket
import struct
import time

import pytest

from testbed import kfeatures, loader, naming, rdma
from testbed.errors import CapabilityError, TopologyError
from testbed.verify import verbs
from traffic import rocewire, stamps, verbs_peer

BASE = """
name: v
hosts:
  server:
    nic:
      address: 198.18.0.1/24
      bond: {mode: active-backup, miimon: 10}
      vfs:
        - {name: vf0, address: 198.18.0.11/24, verbs: true}
        - {name: vf1}
      rdma: {name: rdma0, verbs: true}
  client:
    address: 198.18.0.100/24
    verbs: true
"""


def test_topology_verbs_devices():
    t = loader.loads(BASE)
    devs = {d.owner: d for d in t.verbs_devices}
    assert set(devs) == {"server:vf0", "server:rdma0", "client"}
    assert devs["server:rdma0"].name == "tb_v_server_rdma0"
    assert devs["server:rdma0"].netns == "v-server-rdma0" and devs["server:rdma0"].netdev == "rdma0"
    assert str(devs["server:rdma0"].address.ip) == "198.18.0.1"  # the bond's address, as RoCE uses it
    assert devs["client"].netdev == "eth0" and devs["client"].netns == "v-client"
    assert t.with_name("t9").verbs_devices[0].name.startswith("tb_t9_")


def test_topology_without_verbs_has_none():
    t = loader.load("topologies/active-backup.yaml")
    assert t.verbs_devices == ()


def test_verbs_on_nic_host_is_rejected():
    text = BASE.replace("  client:\n", "  client:\n").replace("      bond:", "      bond:", 1)
    bad = text.replace("name: v\nhosts:\n  server:\n", "name: v\nhosts:\n  server:\n    verbs: true\n")
    with pytest.raises(TopologyError, match=r"hosts\.server\.verbs: a NIC host's verbs devices go on its"):
        loader.loads(bad)


def test_verbs_wrong_type_is_rejected():
    with pytest.raises(TopologyError, match=r"hosts\.server\.nic\.rdma"):
        loader.loads(BASE.replace("rdma: {name: rdma0, verbs: true}", "rdma: {name: rdma0, verbs: 3}"))


def test_shipped_rdma_topologies_load():
    for f in ("rdma-active-backup", "rdma-hash", "rdma-lacp"):
        t = loader.load(f"topologies/{f}.yaml")
        assert any(d.owner == "client" for d in t.verbs_devices)
        assert any(d.owner == "server:rdma0" for d in t.verbs_devices)


def test_device_names_say_their_lab():
    assert naming.rdma_device("ab", "client", "eth0") == "tb_ab_client_eth0"
    assert naming.rdma_lab("tb_ab_client_eth0") == "ab"
    assert naming.rdma_lab("rxe0") is None and naming.rdma_lab("tb_") is None and naming.rdma_lab("tb_ab") is None


def test_require_refuses_old_kernel_before_anything(monkeypatch):
    t = loader.loads(BASE)
    monkeypatch.setattr(kfeatures, "has", lambda f, *a, **k: f == "rxe")
    monkeypatch.setattr(kfeatures, "running_release", lambda: "6.1.0-56-amd64")
    with pytest.raises(CapabilityError) as err:
        rdma.require(t)
    msg = str(err.value)
    assert err.value.exit_code == 4
    assert "server:rdma0" in msg and "6.1.0-56-amd64" in msg and "initial namespace" in msg
    assert "Linux 7.1" in msg and "--kernel 7.3" in msg
    monkeypatch.setattr(kfeatures, "has", lambda f, *a, **k: True)
    rdma.require(t)  # a capable kernel: nothing to say
    rdma.require(loader.load("topologies/active-backup.yaml"))


STAT = """[{"ifname":"tb_ab_client_eth0","port":1,"sent_pkts":120,"rcvd_pkts":118,"duplicate_request":2,
"out_of_seq_request":1,"rcvd_rnr_err":0,"send_rnr_err":0,"rcvd_seq_err":3,"ack_deferred":0,
"retry_exceeded_err":0,"retry_rnr_exceeded_err":0,"completer_retry_err":4,"send_err":0,"link_downed":0,
"rdma_sends":100,"rdma_recvs":0}]"""


def test_parse_statistic():
    got = rdma.parse_statistic(STAT)
    c = got["tb_ab_client_eth0/1"]
    assert c["completer_retry_err"] == 4 and c["duplicate_request"] == 2 and c["sent_pkts"] == 120
    assert "port" not in c and "ifname" not in c
    assert rdma.parse_statistic("") == {} and rdma.parse_statistic("not json") == {}
    nested = '[{"ifname":"d","port":1,"counters":{"sent_pkts":5}}]'
    assert rdma.parse_statistic(nested) == {"d/1": {"sent_pkts": 5}}
    assert rdma.counter_delta({"a": 1}, {"a": 4, "b": 2}) == {"a": 3, "b": 2}


def test_gids():
    assert rdma.roce_v2_gid(ipaddress.IPv4Address("198.18.0.1")) == "0000:0000:0000:0000:0000:ffff:c612:0001"
    info = {"gids": [{"index": 0, "gid": "fe80:0000:0000:0000:0000:00ff:fe00:0001", "type": "IB/RoCE v1"},
                     {"index": 3, "gid": "0000:0000:0000:0000:0000:ffff:c612:0001", "type": "RoCE v2"}]}
    assert rdma.ipv4_gid(info)["index"] == 3
    assert rdma.ipv4_gid({"gids": []}) is None


def test_budget_and_gaps():
    assert verbs.budget_ms(16, 7) == pytest.approx(2147.5, abs=0.1)
    assert verbs.budget_ms(14, 0) == pytest.approx(67.1, abs=0.1)
    ms = 1_000_000
    times = [0, 5 * ms, 10 * ms, 400 * ms, 405 * ms, 2000 * ms]
    assert verbs.largest_gap_ms(times) == 1595.0
    assert verbs.largest_gap_ms(times, around_ns=200 * ms, window_ms=100) == 390.0
    assert verbs.largest_gap_ms([0], end_ns=50 * ms) == 50.0  # silence until the end counts
    assert verbs.largest_gap_ms([]) is None


def _res(sender: bool, n: int, start: int, step: int, hole=None, **kw):
    t = [start + i * step for i in range(n)]
    if hole:
        t = [x for x in t if not hole[0] <= x < hole[1]]
    out = {"event": "result", "sender": sender, "posted": n if sender else 0, "expected": n if sender else None,
           "completed": len(t), "completions_ns": t, "errors": {}, "first_error": None, "stalled": False,
           "qp_state": "RTS", "ack_timeout": 16, "retry_cnt": 6, "end_ns": t[-1] if t else start}
    out.update(kw)
    return out


def _judge(snd, rcv, agent=True, wires=None):
    ms = 1_000_000
    ends = [verbs.end_figures("client", "tb_x_client_eth0", snd, 2000 * ms, 5500 * ms, 1000),
            verbs.end_figures("server:rdma0", "tb_x_server_rdma0", rcv, 2000 * ms, 5500 * ms, 1000)]
    bond = {"rx": [i * 5 * ms for i in range(1600) if not 2000 * ms <= i * 5 * ms < 2100 * ms]}
    wires = wires or {"before the fault": {"pf0": 400, "pf1": 0}, "during the fault": {"pf0": 0, "pf1": 600},
                      "after the repair": {"pf0": 300, "pf1": 2}}
    return verbs.evaluate_verbs(lab="x", target="server:rdma0", peer="client", initiator="client", fail="server:pf0",
                                agent=agent, expect_survive=agent, ack_timeout=16, retry=6, ends=ends,
                                fail_ns=2000 * ms, repair_ns=5500 * ms, bond_arrivals=bond, agent_reactions=[],
                                wires=wires, counters={"tb_x_client_eth0": {"sent_pkts": 9, "completer_retry_err": 2}},
                                failed_port="pf0", window_ms=1000)


def test_verdict_pass():
    ms = 1_000_000
    snd = _res(True, 1600, 0, 5 * ms, hole=(2000 * ms, 2300 * ms))
    snd["completions_ns"] += [2300 * ms] * 60  # the retransmitted ones complete at once
    snd["completed"] = len(snd["completions_ns"])
    rcv = dict(snd, sender=False, expected=None, posted=0)
    r = _judge(snd, rcv)
    assert r.passed and r.survived and r.verdict == "PASS", "\n".join(r.lines())
    assert r.ends[0].stall_at_fail_ms == 305.0 and r.bond_gap_ms["rx@fail"] == 105.0
    assert r.fault_ms == 3500.0 and r.budget_ms == 1879.0
    text = "\n".join(r.lines())
    assert "completer_retry_err 2" in text and "verdict: PASS" in text and "RoCE frames during the fault" in text
    assert r.to_dict()["verdict"] == "PASS" and "series" not in r.to_dict()


def test_verdict_fail_on_retry_exceeded_and_negative_control():
    ms = 1_000_000
    snd = _res(True, 1600, 0, 5 * ms, hole=(2000 * ms, 10**12), qp_state="ERR", stalled=False,
               errors={"transport retry counter exceeded": 1, "work request flushed": 15},
               first_error="transport retry counter exceeded")
    rcv = _res(False, 400, 0, 5 * ms, stalled=True)
    r = _judge(snd, rcv)
    assert not r.passed and not r.survived and r.verdict == "FAIL"
    names = {c.name for c in r.failures}
    assert "client: QP state at the end" in names and "client: completion errors" in names
    assert "server:rdma0: operations completed" in names
    neg = _judge(snd, rcv, agent=False)
    assert neg.passed and "traffic died as expected" in neg.verdict
    ok = _res(True, 1600, 0, 5 * ms)
    survived = _judge(ok, dict(ok, sender=False, posted=0), agent=False)
    assert not survived.passed and "survived without the agent" in survived.verdict


def test_verdict_fail_when_roce_used_failed_port():
    ms = 1_000_000
    snd = _res(True, 1600, 0, 5 * ms)
    r = _judge(snd, dict(snd, sender=False, posted=0),
               wires={"during the fault": {"pf0": 3, "pf1": 0}})
    assert not r.passed and r.survived
    assert [c.name for c in r.failures] == ["RoCE during the fault on a live wire (not pf0)"]


def test_unconnected_end():
    e = verbs.end_figures("client", "d", {"event": "error", "error": "RDMA CM: no route"}, None, None, 1000)
    assert not e.connected and e.connect_error == "RDMA CM: no route"


def test_parse_roce():
    eth = b"\x02" * 6 + b"\x02" * 6 + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + 12, 0, 0, 64, 17, 0, socket.inet_aton("198.18.0.100"),
                     socket.inet_aton("198.18.0.1"))
    udp = struct.pack("!HHHH", 49152, 4791, 8 + 12, 0)
    assert rocewire.parse_roce(eth + ip + udp + b"\x00" * 12) == ("198.18.0.100", "198.18.0.1")
    assert rocewire.parse_roce(eth + ip + struct.pack("!HHHH", 49152, 5201, 20, 0) + b"\x00" * 12) is None
    assert rocewire.parse_roce(b"\x00" * 60) is None
    eth6 = b"\x02" * 12 + b"\x86\xdd"
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, 8 + 12, 17, 64, socket.inet_pton(socket.AF_INET6, "2001:2::100"),
                      socket.inet_pton(socket.AF_INET6, "2001:2::1"))
    assert rocewire.parse_roce(eth6 + ip6 + udp + b"\x00" * 12) == ("2001:2::100", "2001:2::1")
    icmp6 = ip6[:6] + bytes([58]) + ip6[7:]
    assert rocewire.parse_roce(eth6 + icmp6 + udp + b"\x00" * 12) is None


def test_peer_args():
    a = verbs_peer.parse_args(["--role", "connect", "--address", "1.2.3.4", "--peer", "1.2.3.5", "--send"])
    assert a.ack_timeout == 16 and a.retry == 6 and a.send
    with pytest.raises(SystemExit):
        verbs_peer.parse_args(["--role", "connect", "--address", "1.2.3.4"])
    with pytest.raises(SystemExit):
        verbs_peer.parse_args(["--role", "listen", "--address", "1.2.3.4", "--retry", "9"])


def test_with_verbs_for_the_demo():
    t = loader.load("topologies/active-backup.yaml", lab_name="demo1")
    v = rdma.with_verbs(t)
    assert {d.owner for d in v.verbs_devices} == {"server:rdma0", "client"}
    assert v.name == "demo1" and v.raw["hosts"]["client"]["verbs"] is True
    assert t.verbs_devices == () and "verbs" not in t.raw["hosts"]["client"]  # the original is left alone
    assert rdma.with_verbs(v).verbs_devices == v.verbs_devices


def test_demo_says_why_it_skipped_real_rdma(monkeypatch):
    from testbed import demo

    monkeypatch.setattr(kfeatures, "has", lambda f, *a, **k: False)
    monkeypatch.setattr(kfeatures, "running_release", lambda: "6.1.0-56-amd64")
    t = loader.load("topologies/active-backup.yaml")
    same, why = demo._with_verbs(t)
    assert same is t and "6.1.0-56-amd64" in why and "Linux 7.1" in why and "skipped real RDMA" in why


def test_verbs_plot_is_a_png(tmp_path):
    from testbed.verify.plot import plot

    ms = 1_000_000
    snd = _res(True, 1600, 0, 5 * ms, hole=(2000 * ms, 2300 * ms))
    r = _judge(snd, dict(snd, sender=False, posted=0))
    r.series = {"start_ns": 0, "fail_ns": 2000 * ms, "repair_ns": 5500 * ms,
                "completions": {"client": snd["completions_ns"], "server:rdma0": snd["completions_ns"]},
                "bond": {"rx": [i * 5 * ms for i in range(1600)]},
                "wires": [[t, "pf0" if t < 2000 * ms else "pf1"] for t in snd["completions_ns"]]}
    path = str(tmp_path / "v.png")
    assert plot(r, path) == path
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_peer_refuses_retry_7_which_rxe_treats_as_forever():
    """rxe_comp.c decrements retry_cnt only when it is not 7: a QP set to 7 never reaches 'retry exceeded',
    so a negative control could never end -- seen in the 7.3 guest: 15 retries, QP still RTS after 4 s."""
    with pytest.raises(SystemExit):
        verbs_peer.parse_args(["--role", "connect", "--address", "1.2.3.4", "--peer", "1.2.3.5", "--retry", "7"])


def _anc(t_ns):
    return [(socket.SOL_SOCKET, stamps.SO_TIMESTAMPNS, stamps.TIMESPEC.pack(t_ns // 10**9, t_ns % 10**9))]


def test_stamps_keep_a_real_time_stamp_read_late_and_move_one_on_another_clock():
    real = time.clock_gettime_ns(time.CLOCK_REALTIME)
    late = real - 30 * 10**9  # read 30 s after it crossed: a slow guest's capture thread
    assert stamps.real_ns(_anc(late)) == (late, False)
    mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - 500_000_000  # a delivery time, 500 ms old
    t, moved = stamps.real_ns(_anc(mono))
    assert moved and 400_000_000 < time.clock_gettime_ns(time.CLOCK_REALTIME) - t < 600_000_000
    t, moved = stamps.real_ns(_anc(real + 3600 * 10**9))  # an hour ahead: fits no clock -> the read time
    assert moved and abs(t - time.clock_gettime_ns(time.CLOCK_REALTIME)) < 10**9
    t, moved = stamps.real_ns([])  # no stamp: the read time, not counted as moved
    assert not moved and abs(t - real) < 10**9


def test_rocewire_counts_the_frames_whose_stamp_it_moved():
    w = rocewire.RoceWires("ns", {"pf0": "server-pf0"}, {"198.18.0.1"})
    real = time.clock_gettime_ns(time.CLOCK_REALTIME)
    assert w._stamp(_anc(real)) == real and w.restamped == 0
    w._stamp(_anc(time.clock_gettime_ns(time.CLOCK_MONOTONIC)))
    assert w.restamped == 1
