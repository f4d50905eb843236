"""RoCEv2 PSN order and ICRC bookkeeping per queue pair."""

from __future__ import annotations

from testbed.verify.psn import psn_order
from traffic.records import RxRecord


def rec(flow: int, seq: int, t: int, icrc=True, psn=None):
    return RxRecord(1, flow, seq, t, t, 1, "rdma0", "roce", 1, 4791, seq % (1 << 24) if psn is None else psn, icrc)


def test_round_robin_qps_in_order_across_the_psn_wrap():
    first = (1 << 24) - 6
    recs = [rec(s % 3, first + s, s) for s in range(30)]
    rep = psn_order(recs)
    assert rep.ok and rep.qps == 3 and rep.packets == 30 and rep.gaps == 0


def test_gap_duplicate_regression_and_bad_icrc_are_told_apart():
    recs = [rec(0, s, t) for t, s in enumerate((0, 1, 2, 5, 5, 3, 6))]
    recs.append(rec(0, 7, 100, icrc=False))
    recs.append(rec(0, 8, 101, psn=99))  # a PSN that does not match the packet's sequence number
    rep = psn_order(recs)
    assert (rep.gaps, rep.duplicates, rep.regressions, rep.icrc_bad, rep.psn_mismatch) == (1, 1, 1, 1, 1)
    assert not rep.ok
    assert rep.to_dict()["ok"] is False


def test_arrival_order_not_list_order():
    recs = [rec(0, 1, 20), rec(0, 0, 10)]  # listed out of order, arrived in order
    assert psn_order(recs).ok
