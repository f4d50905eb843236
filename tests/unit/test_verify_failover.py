"""The failover verdict on synthetic captures: the offload's loss laid over the bond's, judged by send time."""

from __future__ import annotations

from typing import Dict, List, Sequence

import pytest

from testbed.errors import UsageError
from testbed.verify.checks import check
from testbed.verify.failover import (
    FailoverResult,
    FailoverTolerance,
    Reaction,
    SendTimes,
    StreamMeta,
    evaluate_failover,
)
from testbed.verify.failover_run import FailoverPlan, with_attempts
from testbed.verify.render import render_failover
from traffic.records import RxRecord

START = 1_700_000_000_000_000_000
RATE = 100.0  # pps: tick k due at START + k * 10 ms
TICKS = 300
MS = 1_000_000


def tx_at(k: int, late_ms: Dict[int, float] | None = None) -> int:
    return START + k * 10 * MS + int((late_ms or {}).get(k, 0) * MS)


def stream(sid: int, lost: Sequence[int] = (), wire=lambda k: "pf0", late_ms=None, kind="udp",
           psn_of=None) -> tuple:
    """(destination records, wire records) of one stream; ``wire(k)`` names the port packet k crossed."""
    dest: List[RxRecord] = []
    wires: List[RxRecord] = []
    lost = set(lost)
    for k in range(TICKS):
        t = tx_at(k, late_ms)
        w = wire(k)
        wires.append(RxRecord(sid, 0, k, t, t + 20_000, 1, w, kind, 1, 2))
        if k not in lost:
            psn = psn_of(k) if psn_of else (k if kind == "roce" else None)
            dest.append(RxRecord(sid, 0, k, t, t + 50_000, 2, "eth0", kind, 1, 2, psn,
                                 True if kind == "roce" else None))
    return dest, wires


METAS = [StreamMeta("vf0 tx", "server:vf0", "vf", "tx"), StreamMeta("bond tx", "server:bond", "bond", "tx")]
FAIL = ("fail server:pf0", START + 1000 * MS, START + 1002 * MS)  # tick 100, the call takes 2 ms


TOL = FailoverTolerance(agent_allowance_ms=50.0)


def run(vf_lost, bond_lost, wire=lambda k: "pf0" if k < 100 else "pf1", events=(FAIL,), late_ms=None,
        tol=TOL, expect_return=False, metas=METAS, reactions=()):
    recs, wires = {}, {}
    for i, (m, lost) in enumerate(zip(metas, (vf_lost, bond_lost))):
        recs[m.name], wires[m.name] = stream(i, lost, wire, late_ms)
    return evaluate_failover(metas, recs, wires, ticks=TICKS, rate_pps=RATE, start_ns=START, events=list(events),
                             failed_port="pf0", expect_return=expect_return, tolerance=tol, reactions=reactions)


def by_name(figures):
    return {f.name: f for f in figures}


def test_offload_loss_inside_the_bonds_window_plus_allowance_passes():
    # the bond loses ticks 100..103 (40 ms); the VF 4 ticks more (agent reaction, 40 ms < 50 ms allowance)
    figs, checks, _ = run(range(100, 108), range(100, 104))
    f = by_name(figs)
    assert (f["vf0 tx"].lost, f["vf0 tx"].lost_beyond_bond) == (8, 0)
    assert (f["bond tx"].lost, f["bond tx"].lost_beyond_bond) == (4, 0)
    assert f["vf0 tx"].lost_runs == [(100, 107)]
    assert all(c.passed for c in checks), [c.line() for c in checks if not c.passed]


def test_offload_loss_past_the_allowance_is_counted_and_fails():
    figs, checks, _ = run(range(100, 115), range(100, 104))  # 110 ms past the bond's last loss
    f = by_name(figs)["vf0 tx"]
    # allowed: up to the bond's last loss (tick 103, 1030 ms) + one packet spacing (its outage may have
    # lasted until its next packet, 1040 ms) + 50 ms -> tick 109; 110..114 are beyond
    assert (f.lost_in_bond_window, f.lost_in_agent_reaction, f.lost_beyond_bond) == (10, 0, 5)
    failed = [c for c in checks if not c.passed]
    assert [c.name for c in failed] == ["vf0 tx: lost beyond the bond's window and the agent's reaction"]
    assert failed[0].measured == 5


def test_loss_while_the_agent_reacted_is_told_apart():
    """The agent's rules were in place 1150 ms in: what the VF lost until then (+ 50 ms) is its reaction."""
    done = Reaction(START + 1150 * MS, 40.0, "bond0,pf0")
    figs, checks, _ = run(range(100, 115), range(100, 104), reactions=[done])
    f = by_name(figs)["vf0 tx"]
    assert (f.lost_in_bond_window, f.lost_in_agent_reaction, f.lost_beyond_bond) == (10, 5, 0)
    assert f.windows == [{"from_ms": 1000.0, "bond_to_ms": 1040.0, "agent_to_ms": 1150.0}]
    assert all(c.passed for c in checks)
    assert [c.measured for c in checks if c.name == "agent reaction (bond0,pf0)"] == [40.0]
    figs, _, _ = run(range(100, 125), range(100, 104), reactions=[done])  # until 1240 ms: 4 past 1200
    assert by_name(figs)["vf0 tx"].lost_beyond_bond == 4


def test_a_reaction_heard_long_after_the_window_excuses_nothing():
    """A repair: the bond loses nothing, the port comes into use after a 500 ms updelay and the agent
    reacts then.  What the VF lost meanwhile (1010..1400 ms) is not explained by the bond."""
    restore = ("restore server:pf0", START + 1000 * MS, START + 1001 * MS)
    late = Reaction(START + 1560 * MS, 40.0, "pf0")  # heard at 1520 ms: 519 ms after the window
    figs, checks, _ = run(range(101, 141), [], events=(restore,), reactions=[late], wire=lambda k: "pf0")
    f = by_name(figs)["vf0 tx"]
    assert f.windows == [{"from_ms": 1000.0, "bond_to_ms": 1011.0, "agent_to_ms": None}]
    assert (f.lost_in_bond_window, f.lost_in_agent_reaction, f.lost_beyond_bond) == (6, 0, 34)  # +10 +50 ms
    # heard 100 ms after the window ended (within agent_notice_ms): the reaction explains the loss
    prompt = Reaction(START + 1410 * MS, 309.0, "pf0")
    figs, _, _ = run(range(101, 141), [], events=(restore,), reactions=[prompt], wire=lambda k: "pf0")
    assert by_name(figs)["vf0 tx"].lost_beyond_bond == 0


def test_separate_bond_loss_runs_make_separate_windows():
    """The bond loses at the failure and again 300 ms later (e.g. switching back after updelay): a VF
    loss between the two is not the bond's."""
    figs, _, _ = run([100, 101, 120, 121, 130, 131], [100, 101, 130, 131])
    f = by_name(figs)["vf0 tx"]
    assert [(w["from_ms"], w["bond_to_ms"]) for w in f.windows] == [(1000.0, 1020.0), (1300.0, 1320.0)]
    assert (f.lost_in_bond_window, f.lost_beyond_bond) == (4, 2)


def test_a_slow_agent_reaction_fails_its_own_check():
    slow = Reaction(START + 1600 * MS, 1120.0, "bond0")
    _, checks, _ = run([], [], reactions=[slow])
    bad = [c for c in checks if not c.passed]
    assert [c.name for c in bad] == ["agent reaction (bond0)"] and bad[0].tolerance.startswith("<= 1000 ms")


def test_loss_far_from_any_event_is_beyond_even_for_the_bond():
    figs, checks, _ = run([250], [200])
    f = by_name(figs)
    assert f["vf0 tx"].lost_beyond_bond == 1 and f["bond tx"].lost_beyond_bond == 1
    assert {c.name for c in checks if not c.passed} == {
        "vf0 tx: lost beyond the bond's window and the agent's reaction",
        "bond tx: lost outside its failover window"}


def test_bond_without_loss_anchors_the_window_at_the_event_call():
    # the bond lost nothing; the failure call spans 1000..1002 ms, and the bond's stream (100 pps) shows
    # only that its outage ended before its next packet: the VF may lose until 1002 + 10 + 50 = 1062 ms
    figs, _, _ = run(range(100, 107), [])
    assert by_name(figs)["vf0 tx"].lost_beyond_bond == 0
    figs, _, _ = run(range(100, 108), [])  # tick 107 = 1070 ms: 8 ms late
    assert by_name(figs)["vf0 tx"].lost_beyond_bond == 1


def test_judged_by_send_time_when_the_sender_fell_behind():
    """Ticks 60..65 are due at 600..650 ms: lost then, they are not the failure's (at 1000 ms).  If the
    sender fell 400 ms behind and sent them at 1000..1050 ms, they are."""
    figs, _, _ = run(range(60, 66), [])
    assert by_name(figs)["vf0 tx"].lost_beyond_bond == 6
    late = {k: 400.0 for k in range(55, 120)}
    figs, _, _ = run(range(60, 66), [], late_ms=late)
    assert by_name(figs)["vf0 tx"].lost_beyond_bond == 0


def test_send_times_interpolate_lost_sequence_numbers():
    recs = [RxRecord(1, 0, k, START + k * 10 * MS, 0, 0, "x", "udp", 0, 0) for k in (0, 10, 20)]
    when = SendTimes([recs], START, RATE)
    assert when(10) == START + 100 * MS
    assert when(5) == START + 50 * MS  # between two known
    assert when(25) == START + 250 * MS  # after the last: the schedule's spacing
    assert SendTimes([], START, RATE)(7) == START + 70 * MS


def test_wires_before_after_and_back():
    def wire(k):
        return "pf1" if 100 <= k < 200 else "pf0"

    restore = ("restore server:pf0", START + 2000 * MS, START + 2001 * MS)
    figs, checks, series = run(range(100, 104), range(100, 103), wire=wire, events=(FAIL, restore),
                               expect_return=True)
    f = by_name(figs)["vf0 tx"]
    assert (f.wire_before, f.wire_after, f.wire_restored, f.wire_end) == ("pf0", "pf1", "pf0", "pf0")
    assert f.flows_back == 1
    assert f.wires_before == {"pf0": 100}
    # after: from the call's end + allowance (1052 ms -> tick 106) to 50 ms before the repair (tick 195)
    assert f.wires_after == {"pf1": 89}
    assert f.restore_gap_ms is not None
    assert any(c.name == "vf0 tx: flows back on their port at the end" and c.passed for c in checks)
    assert set(series["wires"]) == {"pf0", "pf1"} and series["bucket_ms"] == 50.0  # ~5 packets a bucket
    assert [e["name"] for e in series["events"]] == ["fail server:pf0", "restore server:pf0"]


def test_a_stream_left_on_the_failed_port_fails():
    figs, checks, _ = run([], [], wire=lambda k: "pf0")
    bad = {c.name for c in checks if not c.passed}
    assert bad == {"vf0 tx: after the failure, packets on pf0 / on live ports",
                   "bond tx: after the failure, packets on pf0 / on live ports"}


def test_not_back_after_the_repair_fails_when_expected():
    restore = ("restore server:pf0", START + 2000 * MS, START + 2001 * MS)
    _, checks, _ = run([], [], wire=lambda k: "pf0" if k < 100 else "pf1", events=(FAIL, restore),
                       expect_return=True)
    assert {c.name for c in checks if not c.passed} == {"vf0 tx: flows back on their port at the end",
                                                        "bond tx: flows back on their port at the end"}


def test_duplicates_and_reordering_fail():
    metas = METAS
    recs, wires = {}, {}
    for i, m in enumerate(metas):
        recs[m.name], wires[m.name] = stream(i, (), lambda k: "pf0" if k < 100 else "pf1")
    vf = recs["vf0 tx"]
    vf.append(vf[50]._replace(rx_ns=vf[50].rx_ns + 5 * MS))  # a duplicate
    a, b = vf[10], vf[11]
    vf[10], vf[11] = a._replace(rx_ns=b.rx_ns), b._replace(rx_ns=a.rx_ns)  # 11 arrives before 10
    figs, checks, _ = evaluate_failover(metas, recs, wires, ticks=TICKS, rate_pps=RATE, start_ns=START,
                                        events=[FAIL], failed_port="pf0")
    f = by_name(figs)["vf0 tx"]
    assert (f.duplicated, f.reordered_in_flow) == (1, 1)
    assert {c.name for c in checks if not c.passed} == {"vf0 tx: duplicated", "vf0 tx: reordered within a flow"}


def test_roce_stream_psn_checks():
    metas = [StreamMeta("rdma0 rx", "server:rdma0", "rdma", "rx"), StreamMeta("bond rx", "server:bond", "bond", "rx")]
    recs, wires = {}, {}
    recs["rdma0 rx"], wires["rdma0 rx"] = stream(0, range(100, 103), lambda k: "pf0" if k < 100 else "pf1",
                                                 kind="roce")
    recs["bond rx"], wires["bond rx"] = stream(1, range(100, 103), lambda k: "pf0" if k < 100 else "pf1")
    figs, checks, _ = evaluate_failover(metas, recs, wires, ticks=TICKS, rate_pps=RATE, start_ns=START,
                                        events=[FAIL], failed_port="pf0")
    f = by_name(figs)["rdma0 rx"]
    assert f.roce["ok"] and f.roce["gaps"] == 1 and f.roce["icrc_bad"] == 0
    assert all(c.passed for c in checks)
    # a corrupted frame (ICRC) and a PSN that went back
    recs["rdma0 rx"][5] = recs["rdma0 rx"][5]._replace(icrc_ok=False)
    recs["rdma0 rx"][20] = recs["rdma0 rx"][20]._replace(psn=3, seq=3 + 0)
    _, checks, _ = evaluate_failover(metas, recs, wires, ticks=TICKS, rate_pps=RATE, start_ns=START,
                                     events=[FAIL], failed_port="pf0")
    bad = {c.name for c in checks if not c.passed}
    assert {"rdma0 rx: ICRC intact", "rdma0 rx: PSNs in order per QP"} <= bad


def test_result_figures_and_dict():
    figs, checks, series = run(range(100, 108), range(100, 104))
    res = FailoverResult(lab="ab", fail="server:pf0", rate_pps=RATE, duration_s=3.0, ticks=TICKS,
                         events=[{"name": FAIL[0], "at_s": 1.0, "took_ms": 2.0, "error": None}],
                         tolerance=FailoverTolerance(), streams=figs, checks=checks, series=series)
    assert res.passed and res.verdict == "PASS"
    assert res.lost == 0 and res.lost_total == 8
    assert res.bond_gap_ms == {"tx": res.stream("bond tx").fail_gap_ms}
    assert set(res.offload_gap_ms) == {"vf0 tx"}
    d = res.to_dict()
    assert d["kind"] == "failover" and d["verdict"] == "PASS" and "series" not in d
    assert d["streams"][0]["lost_runs"] == [[100, 107]]
    assert "series" in res.to_dict(series=True)
    assert "vf0 tx gap" in res.summary and "(bond" in res.summary
    with pytest.raises(KeyError):
        res.stream("nope")
    import json

    json.dumps(res.to_dict(series=True))  # serializable as is


# -- a run whose sender fell far behind: said, and redone when it failed ------------------------------


def result_with(late_ms, passed=True, usable_before=("pf0",)) -> FailoverResult:
    figs, _, series = run(range(100, 108), range(100, 104))
    checks = [check("vf0 rx: lost beyond", 0 if passed else 3, passed, "0")]
    return FailoverResult(lab="ab", fail="server:pf0", rate_pps=RATE, duration_s=3.0, ticks=TICKS, events=[],
                          tolerance=FailoverTolerance(max_send_late_ms=250.0), streams=figs, checks=checks,
                          series=series, send={"max_late_ms": late_ms},
                          agent={"usable_before": list(usable_before), "reactions": []})


def test_sender_far_behind_makes_the_run_invalid_not_failed():
    assert not result_with(249.9).invalid
    late = result_with(864.3)
    assert late.invalid and late.passed  # figures that all pass still pass
    assert "more than 250 ms: an overloaded machine" in render_failover(late)
    assert "overloaded" not in render_failover(result_with(10.0))
    assert not result_with(None).invalid


class Scripted:
    """A failover run with the traffic itself replaced: each call returns the next scripted result."""

    def __init__(self, outcomes):  # nothing here touches the kernel
        self.outcomes = list(outcomes)
        self.settle_on = []
        self.said: List[str] = []

    def __call__(self, settle_on=None):
        self.settle_on.append(settle_on)
        late_ms, passed = self.outcomes.pop(0)
        return result_with(late_ms, passed, usable_before=("pf0",))


def plan(fail, restore, flap):
    return FailoverPlan(("server:vf0",), fail, 100.0, 3.0, 1.0, restore, flap, ("rx", "tx"), 1, True, "carrier",
                        FailoverTolerance())


@pytest.mark.parametrize("outcomes,attempts,fail,restore,flap,runs,verdict", [
    ([(10, True)], 2, "server:pf0", 2.0, None, 1, "PASS"),                 # valid and passed
    ([(900, True)], 2, "server:pf0", 2.0, None, 1, "PASS"),                # late, but every figure passed
    ([(10, False)], 2, "server:pf0", 2.0, None, 1, "FAIL"),                # failed on time: judged, not redone
    ([(900, False), (10, True)], 2, "server:pf0", 2.0, None, 2, "PASS"),   # failed late, redone, passed
    ([(900, False), (900, False)], 2, "server:pf0", 2.0, None, 2, "FAIL"),  # attempts used up
    ([(900, False)], 1, "server:pf0", 2.0, None, 1, "FAIL"),               # attempts=1: never redo
    ([(900, False)], 3, "server:pf0", None, None, 1, "FAIL"),              # the port stays failed: can't redo
    ([(900, False)], 3, "server:pf0", 1.0, "server:pf1", 1, "FAIL"),       # a flap leaves pf1 failed: can't
    ([(900, False), (10, True)], 2, None, None, None, 2, "PASS"),          # no failure at all: redo
])
def test_failed_late_runs_are_redone_within_attempts(outcomes, attempts, fail, restore, flap, runs, verdict):
    tr = Scripted(outcomes)
    res = with_attempts(tr, plan(fail, restore, flap), attempts, tr.said.append)
    assert len(tr.settle_on) == runs and res.verdict == verdict
    # the first run settles on whatever the bond uses; a redo on the ports in use before the first run
    assert tr.settle_on == [None] + [["pf0"]] * (runs - 1)
    assert len(res.earlier_attempts) == runs - 1
    for a in res.earlier_attempts:
        assert a["verdict"] == "FAIL" and a["max_late_ms"] == 900 and a["failed"] == ["vf0 rx: lost beyond"]
    assert len(tr.said) == runs - 1 and all("running it again" in s for s in tr.said)
    if res.earlier_attempts:
        assert "run 1 was redone: it said FAIL with the sender 900 ms behind" in render_failover(res)
        assert res.to_dict()["earlier_attempts"] == res.earlier_attempts


def test_attempts_must_be_positive():
    with pytest.raises(UsageError):
        with_attempts(Scripted([]), plan(None, None, None), 0, print)


# -- the gap bound beside each gap (issue 12, item 6) ------------------------------------------------


def test_each_gap_is_shown_beside_the_configurations_bound():
    from testbed.topology import Bond
    from testbed.verify.bounds import failure_bound, judge_gaps

    figs, checks, series = run(range(100, 108), range(100, 104))  # gaps: vf 90 ms, bond 50 ms
    bound = judge_gaps(failure_bound(Bond(mode="active-backup", miimon=10, downdelay=40), "carrier", RATE),
                       {f.name: (f.kind, f.fail_gap_ms) for f in figs})
    res = FailoverResult(lab="ab", fail="server:pf0", rate_pps=RATE, duration_s=3.0, ticks=TICKS, events=[],
                         tolerance=FailoverTolerance(), streams=figs, checks=checks, bound=bound)
    assert res.passed  # informative: a gap beyond the bound fails nothing
    text = render_failover(res)
    assert "gap bound (mii): 50 ms (miimon 10 + downdelay 40) + 10 ms packet spacing = 60 ms" in text
    assert "  vf0 tx: gap 90.0 ms, bound 60 ms: beyond by 30 ms" in text
    assert "  bond tx: gap 50.0 ms, bound 60 ms: within" in text
    assert "within the bound: bond yes, offload no" in text
    d = res.to_dict()
    assert d["gap_bound"]["limit_ms"] == 60.0 and d["gap_bound"]["streams"]["vf0 tx"]["within"] is False
    assert FailoverResult(lab="ab", fail="none", rate_pps=RATE, duration_s=3.0, ticks=TICKS, events=[],
                          tolerance=FailoverTolerance(), streams=[], checks=[]).to_dict()["gap_bound"] is None


def test_a_lost_frame_is_judged_at_its_own_send_time_not_its_ticks():
    """Many streams on one schedule: a tick's frames go out one after another (the bond's first, a VF's 9 ms
    later here; 130 streams under TCG: tens of ms). The fault lands between them: the bond's frame of tick
    100 passes, the VF's of the same tick is lost. Estimated from what arrived, that frame was sent when the
    tick began -- before the fault, so "beyond the bond's window" (issue 10's item 7 verdict); by the
    sender's own stamps (``sent_ns``) it was sent after the fault began, inside the window."""
    offset = {"vf0 tx": 9 * MS, "bond tx": 0}
    lost = {"vf0 tx": set(range(100, 104)), "bond tx": {101, 102}}
    recs, wires, sent = {}, {}, {}
    for sid, m in enumerate(METAS):
        sent[m.name] = [tx_at(k) + offset[m.name] for k in range(TICKS)]
        recs[m.name] = [RxRecord(sid, 0, k, t, t + 50_000, 2, "eth0", "udp", 1, 2)
                        for k, t in enumerate(sent[m.name]) if k not in lost[m.name]]
        wires[m.name] = [RxRecord(sid, 0, k, t, t + 20_000, 1, "pf0" if k < 100 else "pf1", "udp", 1, 2)
                         for k, t in enumerate(sent[m.name]) if k not in lost[m.name]]
    fault = ("fail server:pf0", START + 1007 * MS, START + 1008 * MS)  # after the bond's tick 100, before the VF's

    def judge(sent_ns):
        figs, checks, _ = evaluate_failover(METAS, recs, wires, ticks=TICKS, rate_pps=RATE, start_ns=START,
                                            events=[fault], failed_port="pf0", tolerance=TOL, sent_ns=sent_ns)
        return by_name(figs)["vf0 tx"], checks

    estimated, checks = judge(None)
    assert (estimated.lost, estimated.lost_beyond_bond) == (4, 1)  # seq 100 placed at the tick's start
    assert not all(c.passed for c in checks)
    stamped, checks = judge(sent)
    assert (stamped.lost, stamped.lost_in_bond_window, stamped.lost_beyond_bond) == (4, 4, 0)
    assert all(c.passed for c in checks), [c.line() for c in checks if not c.passed]
