"""Failover verification with many targets at once (64 VFs): choosing them, the rate, the verdict, the report.

::

    client ── switch ── pf0/pf1 ── bond0 (server)
                                  vf0 .. vf63 (+ vf64 .. vf255, rdma0): 64 targets, rx and tx each,
                                  the bond's rx and tx beside them -- 130 streams on one schedule
"""

from __future__ import annotations

import os
import threading
from typing import Dict, List, Sequence

import pytest

from testbed import loader
from testbed.errors import UsageError
from testbed.verify import stations
from testbed.verify.failover import FailoverResult, FailoverTolerance, Reaction, StreamMeta, evaluate_failover
from testbed.verify.failover_run import sport_stride, targets
from testbed.verify.render import MANY_STREAMS, render_failover
from traffic.pacing import FRAME_BUDGET_PPS, STREAM_RATE_PPS, stream_rate
from traffic.receiver import Receiver
from traffic.receivers import ReceiverGroup
from traffic.records import RxRecord

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MS = 1_000_000
START = 1_700_000_000_000_000_000


def topo(name: str = "many-vfs"):
    return loader.load(os.path.join(ROOT, "topologies", f"{name}.yaml"), lab_name="t1")


# -- choosing the targets -------------------------------------------------------------------------------


def test_a_range_and_every_vf_are_spelled_out_in_order():
    t = topo()
    assert stations.expand_targets(t, ["server:vf0-vf63"]) == [f"server:vf{i}" for i in range(64)]
    assert stations.expand_targets(t, ["server:vf10-vf12", "server:rdma0", "server:vf0"]) == \
        ["server:vf10", "server:vf11", "server:vf12", "server:rdma0", "server:vf0"]
    assert len(stations.expand_targets(t, ["server:vfs"])) == 256
    assert stations.expand_targets(t, ["server:vf7-vf7"]) == ["server:vf7"]


@pytest.mark.parametrize("spec, message, fix", [
    ("server:vf0-vf300", "no VF 'vf300'", "server:vf0-vf255"),
    ("server:vf9-vf2", "vf9 comes after vf2", "server:vf2-vf9"),
    ("server:pf0-vf3", "no VF 'pf0'", "server:vf0-vf255"),
    ("client:vf0-vf3", "host client has no NIC", "server"),
    ("server", "expected HOST:NAME", "server:vf0"),
])
def test_bad_ranges_name_the_fix(spec, message, fix):
    with pytest.raises(UsageError, match=message) as info:
        stations.expand_targets(topo(), [spec])
    assert fix in (info.value.fix or "")


def test_the_run_gets_64_vfs_and_the_bond_once_each():
    tg = targets(topo(), ["server:vf0-vf63"], compare_bond=True)
    assert [t.spec for t in tg] == [f"server:vf{i}" for i in range(64)] + ["server:bond"]
    assert len({t.station.netns for t in tg}) == 65 and {t.kind for t in tg} == {"vf", "bond"}
    with pytest.raises(UsageError, match="server:vf3 named twice") as info:
        targets(topo(), ["server:vf0-vf5", "server:vf3"], compare_bond=True)
    assert info.value.fix == "name each target once"


NO_VFS = """
name: nv
hosts:
  server:
    nic:
      bond: {mode: active-backup}
      vfs: 0
      rdma: true
  client: {}
"""


def test_a_host_without_vfs_has_no_vfs_target():
    t = loader.loads(NO_VFS, "nv.yaml")
    assert not t.host("server").nic.vfs
    with pytest.raises(UsageError, match="server has no VF") as info:
        stations.expand_targets(t, ["server:vfs"])
    assert "server:rdma0" in info.value.fix


# -- the rate and the source ports ----------------------------------------------------------------------


def test_the_rate_per_stream_is_lowered_to_fit_the_budget():
    assert stream_rate(4) == STREAM_RATE_PPS  # one VF and the bond, both ways: as before
    assert stream_rate(130) == 3.0  # 64 VFs + the bond, both ways: 400 frames/s
    for n in (1, 20, 21, 130, 514, 100_000):
        assert stream_rate(n) * n <= max(FRAME_BUDGET_PPS, 0.1 * n) and stream_rate(n) > 0


def test_source_ports_stay_distinct_and_in_range_for_many_streams():
    assert sport_stride(4, 1) == 1000  # as before: stream i's flows from 40000 + 1000 i
    stride = sport_stride(130, 8)
    assert 40000 + stride * 129 + 8 <= 0x10000 and stride >= 8
    with pytest.raises(UsageError, match="130 streams x 500 flows") as info:
        sport_stride(130, 500)
    assert "at most 196 flows per stream" in info.value.fix


# -- the verdict for 64 targets -------------------------------------------------------------------------

RATE = 3.0
TICKS = 12
FAIL_TICK = 3  # 1 s in
VFS = 64


def tx_at(k: int) -> int:
    return START + int(k * 1e9 / RATE)


def stream(sid: int, lost: Sequence[int], wire) -> tuple:
    dest: List[RxRecord] = []
    wires: List[RxRecord] = []
    for k in range(TICKS):
        t = tx_at(k)
        wires.append(RxRecord(sid, 0, k, t, t + 20_000, 1, wire(k), "udp", 1, 2))
        if k not in lost:
            dest.append(RxRecord(sid, 0, k, t, t + 50_000 + sid * 1000, 2, "eth0", "udp", 1, 2))
    return dest, wires


def metas() -> List[StreamMeta]:
    out = [StreamMeta(f"vf{i} {d}", f"server:vf{i}", "vf", d) for i in range(VFS) for d in ("rx", "tx")]
    return out + [StreamMeta(f"bond {d}", "server:bond", "bond", d) for d in ("rx", "tx")]


def judge(lost_of, reactions=(), agent: bool = True) -> FailoverResult:
    """64 VFs and the bond; ``lost_of(meta)`` -> the ticks that stream lost; the port fails at FAIL_TICK."""
    recs: Dict[str, list] = {}
    wires: Dict[str, list] = {}
    ms = metas()
    for i, m in enumerate(ms):
        recs[m.name], wires[m.name] = stream(i, lost_of(m), lambda k: "pf0" if k < FAIL_TICK else "pf1")
    fail = ("fail server:pf0", tx_at(FAIL_TICK) - 5 * MS, tx_at(FAIL_TICK))
    figures, checks, series = evaluate_failover(ms, recs, wires, ticks=TICKS, rate_pps=RATE, start_ns=START,
                                                events=[fail], failed_port="pf0", reactions=list(reactions),
                                                tolerance=FailoverTolerance(), agent=agent)
    return FailoverResult(lab="t1", fail="server:pf0", rate_pps=RATE, duration_s=TICKS / RATE, ticks=TICKS,
                          events=[{"name": fail[0], "at_s": 1.0, "took_ms": 5.0, "error": None}],
                          tolerance=FailoverTolerance(), streams=figures, checks=checks, series=series,
                          negative_control=not agent)


def in_window(m: StreamMeta) -> List[int]:
    """The bond loses one packet at the failure; each VF one or two (the agent's reaction)."""
    if m.kind == "bond":
        return [FAIL_TICK]
    return [FAIL_TICK, FAIL_TICK + 1] if m.name in ("vf17 rx", "vf40 tx") else [FAIL_TICK]


# the agent heard of it 50 ms after the bond's lost packet was due, and took 250 ms: the VFs' second loss is its
REACTION = [Reaction(tx_at(FAIL_TICK) + 300 * MS, 250.0, "bond0 active pf1")]


def test_64_vfs_that_lose_only_in_the_bonds_window_and_the_agents_reaction_pass():
    r = judge(in_window, REACTION)
    assert r.passed, [c.line() for c in r.failures]
    assert len(r.streams) == 2 * VFS + 2 and r.lost == 0 and r.lost_total == 2 * VFS + 2
    spacing = 1000.0 / RATE
    for g in r.gap_spread.values():
        assert (g["streams"], g["with_gap"], g["lost_beyond_bond"]) == (VFS, VFS, 0)
        assert g["bond_gap_ms"] == pytest.approx(2 * spacing, abs=1)
        assert g["min_ms"] == pytest.approx(2 * spacing, abs=1) and g["max_ms"] >= g["min_ms"]
    assert r.gap_spread["rx"]["worst"] == "vf17 rx" and r.gap_spread["tx"]["worst"] == "vf40 tx"
    assert r.gap_spread["rx"]["max_ms"] == pytest.approx(3 * spacing, abs=1)
    assert r.gap_spread["rx"]["over_bond"] == 1
    assert r.to_dict()["gap_spread"] == r.gap_spread


def test_64_vfs_with_no_agent_reaction_fail_and_each_vf_is_named():
    """The negative control's judging: the agent never moves the rules, every VF stream dies at the failure."""
    def dead(m: StreamMeta) -> List[int]:
        return [FAIL_TICK] if m.kind == "bond" else list(range(FAIL_TICK, TICKS))

    r = judge(dead)
    assert not r.passed
    beyond = {c.name.split(":")[0] for c in r.failures if "lost beyond" in c.name}
    assert beyond == {f"vf{i} {d}" for i in range(VFS) for d in ("rx", "tx")}
    assert all(s.lost_beyond_bond >= TICKS - FAIL_TICK - 5 for s in r.streams if s.kind == "vf")
    for g in r.gap_spread.values():
        assert g["lost_beyond_bond"] > 0 and g["streams"] == VFS


def test_at_3_pps_a_bond_that_lost_nothing_still_had_an_outage_until_its_next_packet():
    """Seen in the 7.3 guest: at 3 pps the bond's streams lost nothing (their gap 387 ms, one packet interval
    and some), and each VF lost the rx packet sent 333 ms in. The bond's outage is known only to its next
    packet, so its window reaches one packet spacing past the event: that loss is within it. A VF out for
    longer than that is the agent's reaction when the agent's rules came in time, else beyond."""
    r = judge(lambda m: [] if m.kind == "bond" else [FAIL_TICK + 1])
    assert r.passed, [c.line() for c in r.failures]
    assert r.stream("vf0 rx").lost_in_bond_window == 1 and r.lost_in_agent_reaction == 0
    w = r.stream("vf0 rx").windows[0]
    assert w["bond_to_ms"] == pytest.approx(1333, abs=2)
    # out for two packets: beyond, unless the agent, hearing of the change within 150 ms of the window's
    # end, had its rules in place by then
    two = lambda m: [] if m.kind == "bond" else [FAIL_TICK + 1, FAIL_TICK + 2]  # noqa: E731
    assert not judge(two).passed
    in_time = [Reaction(tx_at(FAIL_TICK) + 700 * MS, 250.0, "bond0,pf0,pf1")]  # heard 450 ms in
    r = judge(two, in_time)
    assert r.passed, [c.line() for c in r.failures]
    assert r.lost_in_agent_reaction == 2 * VFS


def dead_after_the_failure(m: StreamMeta) -> List[int]:
    """The agent stopped: the rules stay on the dead port; the bond's received traffic meets the inactive
    port's drop rule too."""
    return [FAIL_TICK] if m.kind == "bond" and m.direction == "tx" else list(range(FAIL_TICK, TICKS))


def test_the_negative_control_passes_when_all_64_vfs_died():
    r = judge(dead_after_the_failure, agent=False)
    assert r.passed and r.negative_control and r.to_dict()["negative_control"] is True
    assert len(r.checks) == 2 * VFS and all("must die" in c.name for c in r.checks)  # the bond's: reported only
    assert "negative control: the agent was stopped" in render_failover(r)


def test_the_negative_control_fails_naming_each_vf_that_survived():
    survivors = {"vf5 rx", "vf63 tx"}
    r = judge(lambda m: [FAIL_TICK] if m.name in survivors else dead_after_the_failure(m), agent=False)
    assert not r.passed
    assert {c.name.split(":")[0] for c in r.failures} == survivors


def test_one_vf_left_behind_fails_alone():
    r = judge(lambda m: list(range(FAIL_TICK, TICKS)) if m.name == "vf63 tx" else [FAIL_TICK], REACTION)
    assert not r.passed
    assert {c.name.split(":")[0] for c in r.failures} == {"vf63 tx"}
    assert r.gap_spread["tx"]["lost_beyond_bond"] > 0 and r.gap_spread["rx"]["lost_beyond_bond"] == 0


# -- the report ------------------------------------------------------------------------------------------


def test_the_report_has_a_row_per_target_and_the_spread_next_to_the_bond():
    r = judge(in_window, REACTION)
    text = render_failover(r)
    lines = text.splitlines()
    rows = [ln for ln in lines if ln.startswith("server:")]
    assert len(rows) == VFS + 1 and rows[0].startswith("server:bond")
    assert all(f"server:vf{i} " in text for i in range(VFS))
    assert "gap@fail rx" in text and "gap@fail tx" in text
    rx = next(ln for ln in lines if ln.startswith("rx: "))
    assert "64 offload streams" in rx and "worst vf17 rx" in rx and "next to the bond's" in rx
    assert "0 beyond" in rx
    assert text.rstrip().endswith("checks)") and "verdict: PASS" in text
    assert not any(ln.startswith("vf0 rx: gap") for ln in lines)  # no sentence per stream for 128 of them


def test_a_few_targets_keep_the_stream_table_and_sentences():
    few = judge(in_window, REACTION)
    few.streams = [s for s in few.streams if s.kind == "bond" or s.target in ("server:vf0", "server:vf17")]
    assert sum(s.kind != "bond" for s in few.streams) <= MANY_STREAMS
    text = render_failover(few)
    assert "vf17 rx: gap" in text and "in bond window" in text
    assert "rx: 2 offload streams" in text


# -- one capture thread for many destinations -----------------------------------------------------------


def test_a_group_refuses_an_unbound_receiver():
    with pytest.raises(UsageError, match="not bound to an interface"):
        ReceiverGroup([Receiver(None, "lo"), Receiver(None, None)])


@pytest.mark.skipif(os.geteuid() != 0, reason="AF_PACKET needs root (CAP_NET_RAW)")
def test_one_thread_serves_several_receivers_each_with_its_own_records():
    from traffic.packets import build_templates, flows
    from traffic.sender import RawSender

    a, b = Receiver(None, "lo"), Receiver(None, "lo", stream_id=77)
    group = ReceiverGroup([a, b])
    threads = threading.active_count()
    with group:
        assert threading.active_count() == threads + 1
        tpl = build_templates(flows(2, "127.0.0.1", "127.0.0.1"), 77) + \
            build_templates(flows(1, "127.0.0.1", "127.0.0.1", sport_base=30000), 78)
        with RawSender(None, "lo") as snd:
            snd.send(tpl, count=9)
        a.wait_count(9, timeout_s=10)
        b.wait_count(6, timeout_s=10)
    assert len(a.stop()) == 9 and {r.stream_id for r in a.stop()} == {77, 78}
    assert len(b.stop()) == 6 and {r.stream_id for r in b.stop()} == {77}
    assert a.stats()["matched"] == 9 and b.stats()["socket_drops"] == 0
    assert a._sock.fileno() == -1 and b._sock.fileno() == -1  # closed by the group's stop


# -- file descriptors for 256 VFs ------------------------------------------------------------------------


def vf_specs(n: int):
    from traffic.streams import Station, StreamSpec

    client = Station("client", "t1-client", "eth0", "02:00:00:00:01:00", "198.18.0.100")
    out = []
    for i in range(n):
        vf = Station(f"vf{i}", f"t1-server-vf{i}", f"vf{i}", "02:00:00:00:00:01", "198.18.0.2")
        out += [StreamSpec(f"vf{i} rx", 2 * i, client, vf, []), StreamSpec(f"vf{i} tx", 2 * i + 1, vf, client, [])]
    return out


def test_the_soft_fd_limit_is_raised_for_256_vfs_and_a_low_hard_limit_is_named(monkeypatch):
    import resource

    from traffic import streams

    set_to = []
    monkeypatch.setattr(streams, "_open_fds", lambda: 20)
    monkeypatch.setattr(resource, "getrlimit", lambda what: (512, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda what, lim: set_to.append(lim))
    streams._reserve_fds(vf_specs(64))  # 65 senders + 2 x 65 destinations + headroom + 20 open: fits 512
    assert set_to == []
    streams._reserve_fds(vf_specs(256))  # 257 + 2 x 257 + headroom + 20 open: raised
    assert set_to == [(257 + 2 * 257 + streams.FD_HEADROOM + 20, 4096)]
    monkeypatch.setattr(resource, "getrlimit", lambda what: (512, 512))
    with pytest.raises(UsageError, match="512 streams need about .* the hard limit is 512") as info:
        streams._reserve_fds(vf_specs(256))
    assert "ulimit -Hn" in info.value.fix
