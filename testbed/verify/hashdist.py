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
with one live port, no flow may be on a dead one.

Who decides what: ``tx`` is decided by the NIC's own table, so across
phases exactly the dead port's flows must move after the failure
(``moved_flows``) and every flow be back on its port after the repair.
``rx`` is decided by the *switch* (its partner bond picks the ingress port;
the NIC's RX rules deliver on every receiving port, whatever the port), so
rx is judged by what the NIC controls, per phase: every flow delivered to
its function exactly once (packet ``k`` belongs to flow ``k mod flows``,
the sender's round robin: each of its packets arrives once, at the
function's interface ``into``) and carried only by ports the NIC is
receiving on.  The switch's own rehash -- flows whose ingress port changed
although their old port survived (a modulo hash over 4 ports moves most
flows when one dies) -- and whether rx flows return after the repair are
the switch's figures: reported (``moves["rx"]``, ``decided_by: "switch"``),
never a failure.

Public API:
    HashTolerance(alpha=0.001, max_deviation=None, max_lost=0)    frozen dataclass; .deviation_for(n)
    PhaseFigures                                                  dataclass; .to_dict()
    HashResult                                                    dataclass; kind "hash"; .passed,
        .verdict, .checks, .phase(name, direction), .to_dict()
    evaluate_phase(phase, direction, records, wire_records, *, sent, flows, expected_share, predicted=None,
                   tolerance, receiving=None, into=None) -> (PhaseFigures, list[Check])
    delivery(records, wire_records, *, sent, flows, receiving, into=None) -> dict    rx, what the NIC controls
    evaluate_moves(direction, before, failed, restored, dead, resilient_switch=False) -> (dict, list[Check])
    DECIDED_BY = {"tx": "nic", "rx": "switch"}                    whose choice a direction's port is
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from testbed.verify.checks import Check, Verdicts, check
from traffic.analysis import analyze_stream, distribution, flow_wire_map, moved_flows, stickiness

MAX_LISTED = 10  # violators / unexpected moves listed in a report
DECIDED_BY = {"tx": "nic", "rx": "switch"}  # whose hash picks a direction's port: the NIC's table, the switch's


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
    delivery: Optional[Dict[str, Any]] = None  # rx: ``delivery(...)``, what the NIC controls

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
    receiving: Optional[Sequence[str]] = None,
    into: Optional[str] = None,
) -> Tuple[PhaseFigures, List[Check]]:
    """``receiving`` (rx): the ports the NIC receives on in this phase; given, the NIC's delivery is judged
    (``delivery``); ``into``: the function's interface its frames must arrive on."""
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
    dl = None
    if receiving is not None:
        dl = delivery(records, wire_records, sent=sent, flows=flows, receiving=receiving, into=into)
        checks.append(check(f"{tag}: flows delivered exactly once to {into or 'the function'}",
                            f"{dl['delivered_once']}/{flows}", dl["delivered_once"] == flows, "all"))
        checks.append(check(f"{tag}: flows on a port the NIC is not receiving on", dl["off_receiving"],
                            dl["off_receiving"] == 0, f"0 (receiving: {', '.join(receiving) or 'none'})"))
    fig = PhaseFigures(
        phase=phase, direction=direction, flows=flows, sent=sent, received=rep.received, lost=rep.lost,
        flows_on_wires=len(fmap), sticky=stick.ok,
        violators=dict(list(stick.violators.items())[:MAX_LISTED]), per_port=per_port,
        expected_share=exp, shares={p: round(v, 4) for p, v in shares.items()}, chi2=chi2, dof=dof,
        p_value=p_value, max_deviation=round(dev, 4), mapping=fmap, predicted_agree=agree, predicted_total=total,
        delivery=dl,
    )
    return fig, checks


def delivery(
    records: Sequence[Any],
    wire_records: Sequence[Any],
    *,
    sent: int,
    flows: int,
    receiving: Sequence[str],
    into: Optional[str] = None,
) -> Dict[str, Any]:
    """What the NIC controls on rx, per flow: each of its packets (seq ``k`` is flow ``k mod flows``)
    arrived exactly once, on the function's interface ``into`` (None: any), and no port outside
    ``receiving`` carried it on the wire."""
    copies = Counter(r.seq for r in records)
    bad: Dict[int, str] = {}
    for r in records:
        if into is not None and r.ifname != into:
            bad.setdefault(r.flow_id, f"delivered to {r.ifname}, not {into}")
    for seq in range(sent):
        n = copies.get(seq, 0)
        if n != 1:
            bad.setdefault(seq % flows, "lost" if n == 0 else f"delivered {n} times")
    off: Dict[int, List[str]] = {}
    for r in wire_records:
        if r.ifname not in receiving:
            ports = off.setdefault(r.flow_id, [])
            if r.ifname not in ports:
                ports.append(r.ifname)
    return {
        "into": into, "receiving": list(receiving), "delivered_once": flows - len(bad),
        "not_once": len(bad), "examples_not_once": {str(f): why for f, why in sorted(bad.items())[:MAX_LISTED]},
        "off_receiving": len(off), "examples_off_receiving": {str(f): p for f, p in sorted(off.items())[:MAX_LISTED]},
    }


def evaluate_moves(
    direction: str,
    before: Mapping[int, str],
    failed: Optional[Mapping[int, str]],
    restored: Optional[Mapping[int, str]],
    dead: Optional[str],
    resilient_switch: bool = False,
) -> Tuple[Dict[str, Any], List[Check]]:
    """tx (the NIC's table): only the dead port's flows move, and all return -- checks. rx (the switch's
    choice): the same figures, reported as the switch's (``switch_rehash``: flows moved off a surviving
    port), no check; the NIC's part of rx is ``delivery``, per phase. With ``resilient_switch`` (the lab's
    switch keeps a bucket table, ``partner_select: resilient``) rx is held to the tx rule as well."""
    by = DECIDED_BY.get(direction, "nic")
    out: Dict[str, Any] = {"decided_by": by}
    if by == "switch":
        out["switch_select"] = "resilient" if resilient_switch else "modulo"
    checked = by != "switch" or resilient_switch
    checks: List[Check] = []
    if failed is not None and dead is not None:
        mv = moved_flows(before, failed, dead)
        on_dead = sum(1 for w in before.values() if w == dead)
        out["failed"] = {
            "dead": dead, "flows_on_dead_port": on_dead, "moved": len(mv.moved), "stuck": len(mv.stuck),
            "moved_unexpectedly": len(mv.moved_unexpectedly), "vanished": len(mv.vanished),
            "examples_unexpected": {str(f): list(v) for f, v in list(mv.moved_unexpectedly.items())[:MAX_LISTED]},
        }
        if by == "switch":
            out["failed"]["switch_rehash"] = len(mv.moved_unexpectedly)
        if checked:
            checks.append(check(f"{direction}: only the dead port's flows moved",
                                f"{len(mv.moved)} of {on_dead} moved, {len(mv.moved_unexpectedly)} others moved",
                                mv.ok and len(mv.moved) == on_dead,
                                f"all {on_dead} of {dead}'s flows, no other"))
    if restored is not None:
        back = [f for f, w in before.items() if restored.get(f) == w]
        off = {f: (w, restored.get(f)) for f, w in before.items() if restored.get(f) != w}
        out["restored"] = {"returned": len(back), "of": len(before), "elsewhere": len(off),
                           "examples": {str(f): list(v) for f, v in list(off.items())[:MAX_LISTED]}}
        if checked:
            checks.append(check(f"{direction}: every flow back on its port after the repair",
                                f"{len(back)}/{len(before)}", not off and len(before) > 0, "all"))
    return out, checks
