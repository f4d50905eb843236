"""The hash-distribution verdict (pure): flows stick to a port, spread as the table says, move only when they must.

A run sends N flows (distinct 5-tuples, ``packets_per_flow`` packets each)
in phases: ``before`` (every port up), ``failed`` (one port down) and
``restored`` (it is back), in one or both directions:

- ``tx``: target (VF / RDMA function) -> client: the NIC's TX hash: the
  kernel's flow hash (RPS on the representor) & mask picks a table entry,
  the entry a port (the agent's mapping);
- ``rx``: client -> target: the *switch's* LAG (the partner bond) picks the
  port by its own transmit hash; the NIC's RX rules must deliver on
  whichever port the flow comes in.  Its choice is predicted with
  ``traffic.bondhash.predict_port`` and compared.

Per phase and direction: every flow on exactly one wire (stickiness); flows
per port against the expected shares (the table's entries per port for
``tx``, equal shares over the partner's usable ports for ``rx``): Pearson's
chi-squared with its p-value and the largest absolute share deviation,
held to ``alpha`` and ``max_deviation`` when two or more ports are live;
with one live port, no flow may be on a dead one.  Across phases: after
the failure exactly the dead port's flows moved (``moved_flows``), after
the repair every flow is back on its original port.

Public API:
    HashTolerance(alpha=0.001, max_deviation=None, max_lost=0)    frozen dataclass; .deviation_for(n)
    PhaseFigures                                                  dataclass; .to_dict()
    HashResult                                                    dataclass; kind "hash"; .passed,
        .verdict, .checks, .phase(name, direction), .to_dict()
    evaluate_phase(phase, direction, records, wire_records, *, sent, expected_share, predicted=None,
                   tolerance) -> (PhaseFigures, list[Check])
    evaluate_moves(direction, before, failed, restored, dead) -> (dict, list[Check])
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from testbed.verify.checks import Check, Verdicts, check
from traffic.analysis import analyze_stream, distribution, flow_wire_map, moved_flows, stickiness

MAX_LISTED = 10  # violators / unexpected moves listed in a report


@dataclass(frozen=True)
class HashTolerance:
    alpha: float = 0.001  # chi-squared p-value must be at least this
    max_deviation: Optional[float] = None  # |share - expected| per port; None: 4 standard deviations for N flows
    max_lost: int = 0  # packets lost per phase and direction (no event happens during a phase)

    def deviation_for(self, flows: int) -> float:
        if self.max_deviation is not None:
            return self.max_deviation
        return 4 * math.sqrt(0.25 / max(1, flows))  # 4 sigma of a 50/50 share: 0.125 for 256 flows

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class PhaseFigures:
    phase: str  # "before" | "failed" | "restored"
    direction: str  # "tx" | "rx"
    flows: int
    sent: int
    received: int
    lost: int
    flows_on_wires: int
    sticky: bool
    violators: Dict[int, Dict[str, int]]  # (at most MAX_LISTED) flows seen on more than one wire
    per_port: Dict[str, int]  # flows per port
    expected_share: Dict[str, float]
    shares: Dict[str, float]
    chi2: Optional[float]
    dof: int
    p_value: float
    max_deviation: float
    mapping: Dict[int, str] = field(default_factory=dict, repr=False)  # flow -> port
    predicted_agree: Optional[int] = None  # rx: flows on the port the switch's hash predicts
    predicted_total: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        del out["mapping"]
        out["violators"] = {str(k): v for k, v in self.violators.items()}
        return out


@dataclass
class HashResult(Verdicts):
    lab: str
    target: str
    flows: int
    packets_per_flow: int
    fail: Optional[str]
    fault: str
    directions: List[str]
    phases: List[PhaseFigures]
    moves: Dict[str, Dict[str, Any]]  # direction -> moved / returned figures
    buckets: Dict[str, List[Dict[str, Any]]]  # phase -> per table entry: port, packets, flows (tx)
    tables: Dict[str, List[Optional[str]]]  # phase -> the agent's table (entry -> port)
    tolerance: HashTolerance
    checks: List[Check]
    kind: str = "hash"

    def phase(self, name: str, direction: str = "tx") -> PhaseFigures:
        for p in self.phases:
            if p.phase == name and p.direction == direction:
                return p
        raise KeyError(f"no phase {name}/{direction}")

    def to_dict(self) -> Dict[str, Any]:
        return {
            "kind": self.kind, "lab": self.lab, "verdict": self.verdict, "passed": self.passed,
            "target": self.target, "flows": self.flows, "packets_per_flow": self.packets_per_flow,
            "fail": self.fail, "fault": self.fault, "directions": self.directions,
            "phases": [p.to_dict() for p in self.phases], "moves": self.moves, "buckets": self.buckets,
            "tables": self.tables, "tolerance": self.tolerance.to_dict(), "checks": [c.to_dict() for c in self.checks],
        }


def evaluate_phase(
    phase: str,
    direction: str,
    records: Sequence[Any],
    wire_records: Sequence[Any],
    *,
    sent: int,
    flows: int,
    expected_share: Mapping[str, float],
    predicted: Optional[Mapping[int, str]] = None,
    tolerance: HashTolerance = HashTolerance(),
) -> Tuple[PhaseFigures, List[Check]]:
    tag = f"{phase} {direction}"
    rep = analyze_stream(records, expected=sent)
    stick = stickiness(wire_records)
    fmap = flow_wire_map(wire_records)
    per_port = dict(sorted(Counter(fmap.values()).items()))
    ports = sorted(set(expected_share) | set(per_port))
    exp = {p: float(expected_share.get(p, 0.0)) for p in ports}
    live = [p for p in ports if exp[p] > 0]
    checks = [
        check(f"{tag}: lost", rep.lost, rep.lost <= tolerance.max_lost, f"<= {tolerance.max_lost}"),
        check(f"{tag}: flows seen on the wires", len(fmap), len(fmap) == flows, str(flows)),
        check(f"{tag}: flows on one wire each", len(stick.violators), stick.ok, "0 on several wires"),
    ]
    chi2: Optional[float] = None
    dof, p_value, dev = len(ports) - 1, 1.0, 0.0
    shares = {p: 0.0 for p in ports}
    if len(ports) >= 2 and sum(exp.values()) > 0:
        d = distribution({p: per_port.get(p, 0) for p in ports}, exp)
        chi2 = d.chi2 if math.isfinite(d.chi2) else None
        dof, p_value, dev, shares = d.dof, d.p_value, d.max_deviation, d.shares
    if len(live) >= 2:
        limit = tolerance.deviation_for(len(fmap))
        checks.append(check(f"{tag}: chi-squared p-value", p_value, p_value >= tolerance.alpha,
                            f">= {tolerance.alpha:g}"))
        checks.append(check(f"{tag}: max share deviation", round(dev, 4), dev <= limit, f"<= {limit:.3f}"))
    else:
        dead = sum(n for p, n in per_port.items() if exp.get(p, 0.0) == 0)
        checks.append(check(f"{tag}: flows on dead ports", dead, dead == 0, "0"))
    agree = total = None
    if predicted is not None:
        total = sum(1 for f in fmap if f in predicted)
        agree = sum(1 for f, w in fmap.items() if predicted.get(f) == w)
        checks.append(check(f"{tag}: on the port the switch's hash predicts", f"{agree}/{total}",
                            total > 0 and agree == total, "all"))
    fig = PhaseFigures(
        phase=phase, direction=direction, flows=flows, sent=sent, received=rep.received, lost=rep.lost,
        flows_on_wires=len(fmap), sticky=stick.ok,
        violators=dict(list(stick.violators.items())[:MAX_LISTED]), per_port=per_port,
        expected_share=exp, shares={p: round(v, 4) for p, v in shares.items()}, chi2=chi2, dof=dof,
        p_value=p_value, max_deviation=round(dev, 4), mapping=fmap, predicted_agree=agree, predicted_total=total,
    )
    return fig, checks


def evaluate_moves(
    direction: str,
    before: Mapping[int, str],
    failed: Optional[Mapping[int, str]],
    restored: Optional[Mapping[int, str]],
    dead: Optional[str],
) -> Tuple[Dict[str, Any], List[Check]]:
    out: Dict[str, Any] = {}
    checks: List[Check] = []
    if failed is not None and dead is not None:
        mv = moved_flows(before, failed, dead)
        on_dead = sum(1 for w in before.values() if w == dead)
        out["failed"] = {
            "dead": dead, "flows_on_dead_port": on_dead, "moved": len(mv.moved), "stuck": len(mv.stuck),
            "moved_unexpectedly": len(mv.moved_unexpectedly), "vanished": len(mv.vanished),
            "examples_unexpected": {str(f): list(v) for f, v in list(mv.moved_unexpectedly.items())[:MAX_LISTED]},
        }
        checks.append(check(f"{direction}: only the dead port's flows moved",
                            f"{len(mv.moved)} of {on_dead} moved, {len(mv.moved_unexpectedly)} others moved",
                            mv.ok and len(mv.moved) == on_dead,
                            f"all {on_dead} of {dead}'s flows, no other"))
    if restored is not None:
        back = [f for f, w in before.items() if restored.get(f) == w]
        off = {f: (w, restored.get(f)) for f, w in before.items() if restored.get(f) != w}
        out["restored"] = {"returned": len(back), "of": len(before), "elsewhere": len(off),
                           "examples": {str(f): list(v) for f, v in list(off.items())[:MAX_LISTED]}}
        checks.append(check(f"{direction}: every flow back on its port after the repair",
                            f"{len(back)}/{len(before)}", not off and len(before) > 0, "all"))
    return out, checks
