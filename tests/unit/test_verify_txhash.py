"""The bond transmit-hash verdict: golden frames, their predicted port against an observed wire."""

from __future__ import annotations

import random

from testbed.verify.txhash import BondHashResult, FlowObservation, evaluate_policy
from traffic.bondhash import predict_port
from traffic.flows import Flow
from traffic.packets import build_template

USABLE = ["pf0", "pf1"]


def frames(n: int):
    rnd = random.Random(9)
    out = []
    for i in range(n):
        f = Flow(i, "udp", "198.18.0.1", f"198.19.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                 rnd.randrange(10000, 60000), 5201, "02:00:00:00:00:01", f"02:74:62:01:00:{rnd.randrange(256):02x}")
        out.append(bytes(build_template(f, 7).frame))
    return out


def observe(policy: str, frames_, flip=()):
    obs = []
    for i, fr in enumerate(frames_):
        port = USABLE[predict_port(policy, fr, 2)]
        if i in flip:
            port = "pf1" if port == "pf0" else "pf0"
        obs.append(FlowObservation("raw", i, fr, {port: 2}))
    return obs


def test_every_policy_agrees_with_its_own_prediction_and_spreads():
    fr = frames(40)
    for policy in ("layer2", "layer2+3", "layer3+4"):
        fig, checks = evaluate_policy(policy, USABLE, observe(policy, fr), expected_flows=40)
        assert all(c.passed for c in checks), (policy, [c.line() for c in checks])
        assert fig.agree == fig.seen == 40 and fig.agreement == 1.0
        assert set(fig.per_port) == {"pf0", "pf1"}


def test_a_wrong_wire_is_a_mismatch():
    fr = frames(20)
    fig, checks = evaluate_policy("layer3+4", USABLE, observe("layer3+4", fr, flip={3}), expected_flows=20)
    assert fig.agree == 19 and fig.mismatches[0]["flow"] == 3
    assert [c.name for c in checks if not c.passed] == ["layer3+4: predicted port = observed wire"]


def test_policies_disagree_on_the_same_frames():
    """The check has teeth: frames observed under layer3+4 do not all match a layer2 prediction."""
    fr = frames(40)
    fig, _ = evaluate_policy("layer2", USABLE, observe("layer3+4", fr), expected_flows=40)
    assert fig.agree < 40


def test_missing_flows_split_flows_and_one_port_fail():
    fr = frames(10)
    obs = observe("layer2", fr)[:9]
    obs[0] = obs[0]._replace(wires={"pf0": 1, "pf1": 1})
    fig, checks = evaluate_policy("layer2", USABLE, obs, expected_flows=10)
    assert fig.split == 1 and fig.seen == 9
    bad = {c.name for c in checks if not c.passed}
    assert {"layer2: flows captured", "layer2: predicted port = observed wire"} <= bad
    one = [FlowObservation("stack", 0, fr[0], {"pf0": 1})]
    _, checks = evaluate_policy("layer2", ["pf0", "pf1"], one, expected_flows=1)
    assert [c.name for c in checks if not c.passed] == ["layer2: flows spread over the ports"] or \
        USABLE[predict_port("layer2", fr[0], 2)] != "pf0"


def test_result_summary():
    fr = frames(8)
    figs, checks = [], []
    for p in ("layer2", "layer3+4"):
        f, c = evaluate_policy(p, USABLE, observe(p, fr), expected_flows=8)
        figs.append(f)
        checks += c
    res = BondHashResult(lab="aah", mode="balance-xor", policies=figs, checks=checks)
    assert res.agreement == {"layer2": 1.0, "layer3+4": 1.0}
    assert res.policy("layer2") is figs[0]
    assert res.to_dict()["agreement"]["layer3+4"] == 1.0
