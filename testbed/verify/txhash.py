"""The bond transmit-hash verdict (pure): the port the bonding driver's formula predicts vs the wire that carried it.

For every flow sent through ``bond0`` -- raw frames handed to the bond
(``raw``: varied MACs, addresses and ports, so every policy has something
to tell apart) and datagrams of the kernel's own UDP stack (``stack``: the
bond's address to the client, varied source ports) -- the frame captured
on the switch side of the wire is hashed with
``traffic.bondhash.predict_port(policy, frame, len(usable))`` and the
prediction (an index into the bond's usable ports, in enslave order)
compared with the port it crossed.  Expected: 100 % agreement, every flow
on one port, and the flows spread over more than one port (else the check
could not tell a wrong formula from a right one).

Public API:
    FlowObservation(source, flow_id, frame, wires)        NamedTuple; wires: port -> packets
    PolicyFigures                                          dataclass; .to_dict()
    BondHashResult                                         dataclass; kind "bondhash"; .passed, .verdict,
        .checks, .agreement -> {policy: fraction}, .policy(name), .to_dict()
    evaluate_policy(policy, usable, observations, *, expected_flows) -> (PolicyFigures, list[Check])
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, NamedTuple, Sequence, Tuple

from testbed.verify.checks import Check, Verdicts, check
from traffic.bondhash import predict_port

MAX_LISTED = 10


class FlowObservation(NamedTuple):
    source: str  # "raw" | "stack"
    flow_id: int
    frame: bytes  # one captured frame of the flow (what the bond hashed)
    wires: Mapping[str, int]  # port -> packets of this flow seen there


@dataclass
class PolicyFigures:
    policy: str
    usable: List[str]
    flows: int  # flows sent
    seen: int  # flows captured on the wires
    agree: int
    per_port: Dict[str, int]  # flows per observed port
    by_source: Dict[str, Dict[str, int]]  # source -> {seen, agree}
    split: int  # flows on more than one port
    mismatches: List[Dict[str, Any]]  # (at most MAX_LISTED) flow, predicted, observed

    @property
    def agreement(self) -> float:
        return self.agree / self.seen if self.seen else 0.0

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["agreement"] = round(self.agreement, 4)
        return out


@dataclass
class BondHashResult(Verdicts):
    lab: str
    mode: str
    policies: List[PolicyFigures]
    checks: List[Check]
    kind: str = "bondhash"

    @property
    def agreement(self) -> Dict[str, float]:
        return {p.policy: p.agreement for p in self.policies}

    def policy(self, name: str) -> PolicyFigures:
        for p in self.policies:
            if p.policy == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "lab": self.lab, "mode": self.mode, "verdict": self.verdict, "passed": self.passed,
                "agreement": {k: round(v, 4) for k, v in self.agreement.items()},
                "policies": [p.to_dict() for p in self.policies], "checks": [c.to_dict() for c in self.checks]}


def evaluate_policy(policy: str, usable: Sequence[str], observations: Sequence[FlowObservation], *,
                    expected_flows: int) -> Tuple[PolicyFigures, List[Check]]:
    agree = split = 0
    per_port: Counter = Counter()
    by_source: Dict[str, Dict[str, int]] = {}
    mismatches: List[Dict[str, Any]] = []
    for ob in observations:
        src = by_source.setdefault(ob.source, {"seen": 0, "agree": 0})
        src["seen"] += 1
        observed = max(sorted(ob.wires), key=lambda w: ob.wires[w])
        if len(ob.wires) > 1:
            split += 1
        per_port[observed] += 1
        predicted = usable[predict_port(policy, ob.frame, len(usable))] if usable else None
        if predicted == observed and len(ob.wires) == 1:
            agree += 1
            src["agree"] += 1
        elif len(mismatches) < MAX_LISTED:
            mismatches.append({"source": ob.source, "flow": ob.flow_id, "predicted": predicted,
                               "observed": dict(ob.wires)})
    seen = len(observations)
    fig = PolicyFigures(policy=policy, usable=list(usable), flows=expected_flows, seen=seen, agree=agree,
                        per_port=dict(sorted(per_port.items())), by_source=by_source, split=split,
                        mismatches=mismatches)
    checks = [
        check(f"{policy}: flows captured", f"{seen}/{expected_flows}", seen == expected_flows, "all"),
        check(f"{policy}: predicted port = observed wire", f"{agree}/{seen}", seen > 0 and agree == seen, "100 %"),
    ]
    if len(usable) > 1:
        checks.append(check(f"{policy}: flows spread over the ports", dict(sorted(per_port.items())),
                            len(per_port) > 1, "more than one port used"))
    return fig, checks
