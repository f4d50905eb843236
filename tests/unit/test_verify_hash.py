"""The hash-distribution verdict on synthetic captures: stickiness, shares, moves, returns."""

from __future__ import annotations

import random
from typing import Dict, List

from testbed.verify.hashdist import HashResult, HashTolerance, evaluate_moves, evaluate_phase
from traffic.records import RxRecord

PPF = 4  # packets per flow


def capture(placement: Dict[int, str], lost: int = 0, split: int = 0) -> tuple:
    """(destination records, wire records) for flows placed on ports; packets round-robin over flows."""
    n = len(placement)
    dest: List[RxRecord] = []
    wires: List[RxRecord] = []
    for seq in range(n * PPF):
        f = seq % n
        wire = placement[f]
        if f < split and seq // n == PPF - 1:
            wire = "pf1" if wire == "pf0" else "pf0"  # the last packet of a flow on the other port
        wires.append(RxRecord(1, f, seq, seq * 1000, seq * 1000 + 10, 1, wire, "udp", 10000 + f, 5201))
        if seq >= lost:
            dest.append(RxRecord(1, f, seq, seq * 1000, seq * 1000 + 20, 2, "eth0", "udp", 10000 + f, 5201))
    return dest, wires


def half(n: int, rnd: random.Random) -> Dict[int, str]:
    return {f: rnd.choice(("pf0", "pf1")) for f in range(n)}


EVEN = {"pf0": 0.5, "pf1": 0.5}


def test_a_fair_split_passes():
    placement = half(256, random.Random(1))
    dest, wires = capture(placement)
    fig, checks = evaluate_phase("before", "tx", dest, wires, sent=256 * PPF, flows=256, expected_share=EVEN)
    assert all(c.passed for c in checks), [c.line() for c in checks]
    assert fig.sticky and fig.flows_on_wires == 256 and fig.lost == 0
    assert sum(fig.per_port.values()) == 256
    assert fig.p_value > 0.001 and fig.max_deviation < 0.125
    assert fig.mapping == placement


def test_a_skewed_split_fails_chi_squared_and_deviation():
    placement = {f: ("pf0" if f < 180 else "pf1") for f in range(256)}  # 70/30
    dest, wires = capture(placement)
    fig, checks = evaluate_phase("before", "tx", dest, wires, sent=256 * PPF, flows=256, expected_share=EVEN)
    bad = {c.name for c in checks if not c.passed}
    assert bad == {"before tx: chi-squared p-value", "before tx: max share deviation"}
    assert abs(fig.max_deviation - (180 / 256 - 0.5)) < 1e-3


def test_expected_shares_follow_the_table_not_uniformity():
    placement = {f: ("pf0" if f < 192 else "pf1") for f in range(256)}  # 3:1, as a 3:1 table says
    dest, wires = capture(placement)
    _, checks = evaluate_phase("x", "tx", dest, wires, sent=256 * PPF, flows=256,
                               expected_share={"pf0": 0.75, "pf1": 0.25})
    assert all(c.passed for c in checks)


def test_a_flow_on_two_wires_and_losses_fail():
    dest, wires = capture(half(64, random.Random(2)), lost=3, split=2)
    fig, checks = evaluate_phase("before", "tx", dest, wires, sent=64 * PPF, flows=64, expected_share=EVEN)
    assert not fig.sticky and set(fig.violators) == {0, 1}
    assert fig.lost == 3
    assert {c.name for c in checks if not c.passed} == {"before tx: lost", "before tx: flows on one wire each"}


def test_one_live_port_no_flow_on_the_dead_one():
    dest, wires = capture({f: "pf1" for f in range(32)})
    fig, checks = evaluate_phase("failed", "tx", dest, wires, sent=32 * PPF, flows=32,
                                 expected_share={"pf0": 0.0, "pf1": 1.0})
    assert all(c.passed for c in checks)
    assert "failed tx: flows on dead ports" in {c.name for c in checks}
    dest, wires = capture({f: ("pf0" if f == 3 else "pf1") for f in range(32)})
    _, checks = evaluate_phase("failed", "tx", dest, wires, sent=32 * PPF, flows=32,
                               expected_share={"pf0": 0.0, "pf1": 1.0})
    assert [c.measured for c in checks if c.name == "failed tx: flows on dead ports"] == [1]


def test_switch_hash_prediction_is_compared():
    placement = half(16, random.Random(3))
    dest, wires = capture(placement)
    predicted = dict(placement)
    _, checks = evaluate_phase("before", "rx", dest, wires, sent=16 * PPF, flows=16, expected_share=EVEN,
                               predicted=predicted)
    assert [c.measured for c in checks if "predicts" in c.name] == ["16/16"]
    predicted[0] = "pf1" if placement[0] == "pf0" else "pf0"
    _, checks = evaluate_phase("before", "rx", dest, wires, sent=16 * PPF, flows=16, expected_share=EVEN,
                               predicted=predicted)
    c = next(c for c in checks if "predicts" in c.name)
    assert not c.passed and c.measured == "15/16"


def test_moves_exactly_the_dead_ports_flows_and_back():
    before = {0: "pf0", 1: "pf1", 2: "pf0", 3: "pf1"}
    failed = {0: "pf1", 1: "pf1", 2: "pf1", 3: "pf1"}
    out, checks = evaluate_moves("tx", before, failed, dict(before), "pf0")
    assert all(c.passed for c in checks)
    assert out["failed"]["moved"] == 2 and out["failed"]["flows_on_dead_port"] == 2
    assert out["restored"] == {"returned": 4, "of": 4, "elsewhere": 0, "examples": {}}


def test_an_unexpected_move_a_stuck_flow_and_a_flow_not_back_fail():
    before = {0: "pf0", 1: "pf1", 2: "pf0", 3: "pf1"}
    failed = {0: "pf1", 1: "pf0", 2: "pf0", 3: "pf1"}  # 1 moved without cause, 2 stuck on the dead port
    restored = {0: "pf0", 1: "pf1", 2: "pf1", 3: "pf1"}  # 2 did not come back
    out, checks = evaluate_moves("tx", before, failed, restored, "pf0")
    assert len(checks) == 2 and not any(c.passed for c in checks)
    assert out["failed"]["moved_unexpectedly"] == 1 and out["failed"]["stuck"] == 1
    assert out["restored"]["elsewhere"] == 1 and out["restored"]["examples"] == {"2": ["pf0", "pf1"]}


def test_deviation_tolerance_scales_with_the_flow_count():
    tol = HashTolerance()
    assert abs(tol.deviation_for(256) - 0.125) < 1e-9
    assert tol.deviation_for(1024) < tol.deviation_for(256)
    assert HashTolerance(max_deviation=0.05).deviation_for(10) == 0.05


def test_result_dict_and_lookup():
    dest, wires = capture(half(32, random.Random(4)))
    fig, checks = evaluate_phase("before", "tx", dest, wires, sent=32 * PPF, flows=32, expected_share=EVEN)
    res = HashResult(lab="aah", target="server:vf0", flows=32, packets_per_flow=PPF, fail=None, fault="carrier",
                     directions=["tx"], phases=[fig], moves={}, buckets={}, tables={}, tolerance=HashTolerance(),
                     checks=checks)
    assert res.phase("before", "tx") is fig and res.passed
    d = res.to_dict()
    assert d["kind"] == "hash" and "mapping" not in d["phases"][0]
    import json

    json.dumps(d)


# -- rx: the switch picks the port, the NIC must deliver (issue 12, item 5) ---------------------------

PORTS4 = ("pf0", "pf1", "pf2", "pf3")
LIVE3 = ("pf0", "pf1", "pf3")


def four_port_modulo_switch() -> tuple:
    """The issue's case: 256 flows over 4 ports by ``hash % 4``; pf2 dies and the switch's partner bond
    rehashes ``% 3`` over the survivors: pf2's 64 flows move, and so do 130 flows of surviving ports."""
    before = {f: PORTS4[f % 4] for f in range(256)}
    failed = {f: LIVE3[f % 3] for f in range(256)}
    same = [f for f in range(256) if before[f] != "pf2" and failed[f] == before[f]]
    for f in same[:3]:  # 127 others move under a plain modulo; 3 more make the issue's 130
        failed[f] = LIVE3[(LIVE3.index(failed[f]) + 1) % 3]
    return before, failed


def rx_phase(phase: str, placement: Dict[int, str], receiving, dest=None, wires=None, into="eth0"):
    d, w = capture(placement)
    dest = d if dest is None else dest
    wires = w if wires is None else wires
    live = [p for p in PORTS4 if p in receiving]
    return evaluate_phase(phase, "rx", dest, wires, sent=len(placement) * PPF, flows=len(placement),
                          expected_share={p: (1 / len(live) if p in live else 0.0) for p in PORTS4},
                          receiving=receiving, into=into)


def test_the_issues_four_port_case_passes_and_reports_the_switchs_rehash():
    before, failed = four_port_modulo_switch()
    fb, cb = rx_phase("before", before, PORTS4)
    ff, cf = rx_phase("failed", failed, LIVE3)
    fr, cr = rx_phase("restored", before, PORTS4)
    moves, cm = evaluate_moves("rx", before, failed, before, "pf2")
    checks = cb + cf + cr + cm
    assert all(c.passed for c in checks), [c.line() for c in checks if not c.passed]
    names = {c.name for c in checks}
    assert "failed rx: flows delivered exactly once to eth0" in names
    assert "failed rx: flows on a port the NIC is not receiving on" in names
    f = moves["failed"]
    assert moves["decided_by"] == "switch" and f["switch_rehash"] == 130
    assert (f["moved"], f["flows_on_dead_port"], f["moved_unexpectedly"]) == (64, 64, 130)
    assert ff.delivery["delivered_once"] == 256 and ff.delivery["receiving"] == list(LIVE3)
    res = HashResult(lab="l4h", target="server:vf0", flows=256, packets_per_flow=PPF, fail="server:pf2",
                     fault="carrier", directions=["rx"], phases=[fb, ff, fr], moves={"rx": moves}, buckets={},
                     tables={}, tolerance=HashTolerance(), checks=checks)
    assert res.passed
    from testbed.verify.render import render_hash

    text = render_hash(res)
    assert "rx: after the failure 64 of 64 flows of pf2 moved; switch's figure (its own rehash, not judged): " \
           "130 flows moved off a surviving port" in text
    import json

    d = json.loads(json.dumps(res.to_dict()))
    assert d["moves"]["rx"]["failed"]["switch_rehash"] == 130 and d["moves"]["rx"]["decided_by"] == "switch"
    assert d["phases"][1]["delivery"]["delivered_once"] == 256


def test_the_nics_own_table_moving_other_flows_fails():
    before, failed = four_port_modulo_switch()  # the same moves, made by the NIC's TX table
    moves, checks = evaluate_moves("tx", before, failed, before, "pf2")
    bad = [c for c in checks if not c.passed]
    assert [c.name for c in bad] == ["tx: only the dead port's flows moved"]
    assert bad[0].measured == "64 of 64 moved, 130 others moved"
    assert moves["decided_by"] == "nic" and "switch_rehash" not in moves["failed"]


def failing(checks) -> set:
    return {c.name for c in checks if not c.passed}


def test_an_rx_flow_delivered_twice_fails():
    _, failed = four_port_modulo_switch()
    dest, wires = capture(failed)
    dest.append(dest[7])  # flow 7's packet arrives a second time
    fig, checks = rx_phase("failed", failed, LIVE3, dest=dest)
    assert failing(checks) == {"failed rx: flows delivered exactly once to eth0"}
    assert fig.delivery["examples_not_once"] == {"7": "delivered 2 times"}


def test_an_rx_flow_delivered_to_another_function_fails():
    _, failed = four_port_modulo_switch()
    dest, wires = capture(failed)
    dest[5] = dest[5]._replace(ifname="vf1")  # seen at another function's interface
    fig, checks = rx_phase("failed", failed, LIVE3, dest=dest)
    assert failing(checks) == {"failed rx: flows delivered exactly once to eth0"}
    assert fig.delivery["examples_not_once"] == {"5": "delivered to vf1, not eth0"}


def test_an_rx_flow_lost_fails_delivery():
    _, failed = four_port_modulo_switch()
    dest, wires = capture(failed, lost=1)  # seq 0: flow 0
    fig, checks = rx_phase("failed", failed, LIVE3, dest=dest)
    assert "failed rx: flows delivered exactly once to eth0" in failing(checks)
    assert fig.delivery["examples_not_once"] == {"0": "lost"} and fig.delivery["delivered_once"] == 255


def test_an_rx_flow_on_a_port_not_receiving_fails():
    _, failed = four_port_modulo_switch()
    failed[9] = "pf2"  # the switch still sends flow 9 to the dead port, and it gets delivered
    fig, checks = rx_phase("failed", failed, LIVE3)
    assert "failed rx: flows on a port the NIC is not receiving on" in failing(checks)
    assert fig.delivery["off_receiving"] == 1 and fig.delivery["examples_off_receiving"] == {"9": ["pf2"]}
