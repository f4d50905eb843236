"""Stream verdicts, timelines, distributions and flow placement on synthetic records."""

from __future__ import annotations

import math
from typing import List, Optional

import pytest

from traffic.analysis import (
    analyze_stream,
    count_by_wire,
    distribution,
    flow_wire_map,
    flow_wires,
    gap_around,
    gaps,
    moved_flows,
    stickiness,
    timeline,
)
from traffic.records import RxRecord

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def rec(seq: int, rx_ms: float, flow: Optional[int] = None, wire: str = "pf0") -> RxRecord:
    return RxRecord(1, seq % 4 if flow is None else flow, seq, 0, T0 + int(rx_ms * MS), 3, wire, "udp", 1, 2)


def stream(seqs: List[int], step_ms: float = 1.0, **kw) -> List[RxRecord]:
    return [rec(s, i * step_ms, **kw) for i, s in enumerate(seqs)]


def test_clean_stream() -> None:
    r = analyze_stream(stream(list(range(100))), expected=100)
    assert (r.expected, r.received, r.unique, r.lost, r.duplicated, r.reordered) == (100, 100, 100, 0, 0, 0)
    assert r.clean and r.largest_gap_ms == pytest.approx(1.0)
    assert r.first_rx_ns == T0 and r.last_rx_ns == T0 + 99 * MS
    assert r.to_dict()["lost_runs"] == []


def test_loss_runs_and_expected_tail() -> None:
    seqs = [s for s in range(100) if not 10 <= s <= 14 and s != 50]
    r = analyze_stream(stream(seqs), expected=103)  # 100..102 never arrived either
    assert r.lost == 9
    assert r.lost_runs == [(10, 14), (50, 50), (100, 102)]
    assert not r.clean
    # without ``expected`` only the holes between min and max count
    assert analyze_stream(stream(seqs)).lost == 6


def test_first_seq_offsets_the_expectation() -> None:
    r = analyze_stream(stream(list(range(500, 600))), expected=100, first_seq=500)
    assert r.lost == 0 and r.clean


def test_duplicates() -> None:
    r = analyze_stream(stream([0, 1, 1, 2, 3, 3, 3, 4]), expected=5)
    assert (r.received, r.unique, r.duplicated, r.lost) == (8, 5, 3, 0)


def test_reordering_whole_stream_and_in_flow() -> None:
    # flows = seq % 4; 5 arrives before 4 (different flows: cross-flow only);
    # 8 arrives after 12 (same flow 0: in-flow reordering)
    seqs = [0, 1, 2, 3, 5, 4, 6, 7, 9, 10, 11, 12, 8, 13]
    r = analyze_stream(stream(seqs), expected=14)
    assert r.reordered == 2  # 4 (after 5) and 8 (after 12)
    assert r.reordered_in_flow == 1  # 8 after 12, both flow 0
    assert r.lost == 0 and not r.clean


def test_arrival_order_is_rx_time_not_list_order() -> None:
    recs = stream(list(range(10)))
    assert analyze_stream(list(reversed(recs)), expected=10).reordered == 0


def test_gaps_and_event_gap() -> None:
    times = [0, 1, 2, 3, 30, 31, 32, 100, 101]  # gaps of 27 ms (3 -> 30) and 68 ms (32 -> 100)
    recs = [rec(i, t) for i, t in enumerate(times)]
    g = gaps(recs)
    assert len(g) == 8 and max(x.ms for x in g) == pytest.approx(68.0)
    r = analyze_stream(recs, expected=9, event_ns=T0 + 5 * MS, window_ms=10)
    assert r.largest_gap_ms == pytest.approx(68.0)
    assert r.largest_gap_start_ns == T0 + 32 * MS
    assert r.event_gap_ms == pytest.approx(27.0)  # the gap around t=5 ms, not the largest
    assert r.event_gap_start_ns == T0 + 3 * MS and r.event_gap_end_ns == T0 + 30 * MS
    assert r.largest_gap_end_ns == T0 + 100 * MS
    near = gap_around(recs, T0 + 50 * MS, window_ms=1)
    assert near is not None and near.ms == pytest.approx(68.0)
    assert gap_around(recs, T0 + 10_000 * MS, window_ms=1) is None


def test_empty_stream() -> None:
    r = analyze_stream([], expected=10)
    assert r.lost == 10 and r.lost_runs == [(0, 9)] and r.largest_gap_ms == 0.0
    assert r.first_rx_ns is None


def test_timeline_per_wire() -> None:
    recs = [rec(0, 0.1, wire="pf0"), rec(1, 0.5, wire="pf0"), rec(2, 1.2, wire="pf1"), rec(3, 3.9, wire="pf1")]
    tl = timeline(recs, bucket_ms=1.0)
    assert tl.start_ns == T0 + int(0.1 * MS) and tl.bucket_ns == MS
    assert tl.wires == {"pf0": [2, 0, 0, 0], "pf1": [0, 1, 0, 1]}
    tl = timeline(recs, bucket_ms=2.0, start_ns=T0, end_ns=T0 + 10 * MS)
    assert tl.wires == {"pf0": [2, 0, 0, 0, 0, 0], "pf1": [1, 1, 0, 0, 0, 0]}
    assert timeline([]).wires == {}


def test_counts_and_flow_maps() -> None:
    recs = [rec(i, i, flow=i % 3, wire="pf0" if i % 3 else "pf1") for i in range(9)]
    recs.append(rec(9, 9, flow=1, wire="pf1"))  # flow 1 also once on pf1
    assert count_by_wire(recs) == {"pf0": 6, "pf1": 4}
    assert flow_wires(recs) == {0: {"pf1": 3}, 1: {"pf0": 3, "pf1": 1}, 2: {"pf0": 3}}
    assert flow_wire_map(recs) == {0: "pf1", 1: "pf0", 2: "pf0"}
    st = stickiness(recs)
    assert not st.ok and st.flows == 3 and st.violators == {1: {"pf0": 3, "pf1": 1}}
    assert stickiness(recs[:9]).ok


def test_distribution_uniform_and_weighted() -> None:
    d = distribution({"pf0": 114, "pf1": 100})
    # (114-107)^2/107 * 2 = 0.9159; 1 dof: p = erfc(sqrt(chi2/2))
    assert d.chi2 == pytest.approx(98 / 107)
    assert d.dof == 1 and d.p_value == pytest.approx(math.erfc(math.sqrt(d.chi2 / 2)))
    assert d.max_deviation == pytest.approx(114 / 214 - 0.5)
    w = distribution({"pf0": 75, "pf1": 25}, {"pf0": 3, "pf1": 1})
    assert w.chi2 == 0.0 and w.p_value == 1.0 and w.expected_share == {"pf0": 0.75, "pf1": 0.25}
    missing = distribution({"pf0": 10}, {"pf0": 1, "pf1": 1})  # pf1 got nothing
    assert missing.counts == {"pf0": 10, "pf1": 0} and missing.max_deviation == 0.5
    forbidden = distribution({"pf0": 10, "pf1": 1}, {"pf0": 1, "pf1": 0})
    assert forbidden.chi2 == math.inf and forbidden.p_value == 0.0
    assert forbidden.to_dict()["chi2"] is None
    with pytest.raises(ValueError):
        distribution({"pf0": 3})


def test_moved_flows() -> None:
    before = {0: "pf0", 1: "pf1", 2: "pf0", 3: "pf1"}
    ok = moved_flows(before, {0: "pf0", 1: "pf0", 2: "pf0", 3: "pf0"}, dead="pf1")
    assert ok.ok and ok.moved == [1, 3] and not ok.moved_unexpectedly
    bad = moved_flows(before, {0: "pf1", 1: "pf1", 3: "pf0", 9: "pf0"}, dead="pf1")
    assert not bad.ok
    assert bad.stuck == [1] and bad.moved == [3]
    assert bad.moved_unexpectedly == {0: ("pf0", "pf1")}
    assert bad.vanished == [2] and bad.appeared == [9]
    assert bad.to_dict()["moved_unexpectedly"] == {0: ["pf0", "pf1"]}
