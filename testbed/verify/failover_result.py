"""The failover verdict's data (pure): the tolerance it is held to, the streams' figures, the result.

The definitions of every figure are in ``failover``'s docstring; ``evaluate_failover`` fills these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from testbed.verify.checks import Check, Verdicts


@dataclass(frozen=True)
class FailoverTolerance:
    agent_allowance_ms: float = 50.0  # slack around the windows (packets in flight, ms time stamps)
    agent_notice_ms: float = 150.0  # the agent hears of a change at most this long after a window ended
    max_agent_latency_ms: float = 1000.0  # event -> rules applied, per reaction (loaded TCG guest: 840 ms seen)
    window_ms: float = 500.0  # how far after an event its gap and the bond's loss are sought
    max_duplicated: int = 0
    max_reordered_in_flow: int = 0
    max_send_late_ms: float = 250.0  # the sender further behind its schedule: the run is ``invalid``

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StreamMeta:
    name: str  # "vf0 rx"
    target: str  # "server:vf0"
    kind: str  # "vf" | "rdma" | "bond"
    direction: str  # "rx" (client -> target) | "tx" (target -> client)
    flows: int = 1

    @property
    def offload(self) -> bool:
        return self.kind != "bond"


@dataclass
class StreamFigures:
    name: str
    target: str
    kind: str
    direction: str
    flows: int
    sent: int
    refused: int
    received: int
    lost: int
    lost_in_bond_window: int
    lost_in_agent_reaction: int
    lost_beyond_bond: int
    duplicated: int
    reordered: int
    reordered_in_flow: int
    largest_gap_ms: float
    fail_gap_ms: Optional[float]
    restore_gap_ms: Optional[float]
    lost_runs: List[Tuple[int, int]]
    windows: List[Dict[str, Optional[float]]]  # ms from the start: bond window [from, to], agent done
    wires_before: Dict[str, int]
    wires_after: Dict[str, int]
    wires_restored: Dict[str, int]
    wire_before: Optional[str]
    wire_after: Optional[str]
    wire_restored: Optional[str]
    wire_end: Optional[str]
    flows_back: Optional[int]  # flows ending on their port from before the failure (None: no repair)
    roce: Optional[Dict[str, Any]] = None  # psn.PsnReport.to_dict() for RoCEv2 streams

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["lost_runs"] = [list(r) for r in self.lost_runs]
        return out


@dataclass
class FailoverResult(Verdicts):
    lab: str
    fail: str
    rate_pps: float
    duration_s: float
    ticks: int
    events: List[Dict[str, Any]]
    tolerance: FailoverTolerance
    streams: List[StreamFigures]
    checks: List[Check]
    agent: Dict[str, Any] = field(default_factory=dict)  # the agent's reactions to the events
    send: Dict[str, Any] = field(default_factory=dict)  # schedule figures (max lateness, elapsed)
    series: Dict[str, Any] = field(default_factory=dict, repr=False)  # per-wire timelines, for plots
    earlier_attempts: List[Dict[str, Any]] = field(default_factory=list)  # runs redone as not valid
    bound: Dict[str, Any] = field(default_factory=dict)  # bounds.judge_gaps: the gap the configuration promises
    negative_control: bool = False  # the agent was stopped before the fault: PASS means the offload died
    kind: str = "failover"

    @property
    def max_late_ms(self) -> Optional[float]:
        return (self.send or {}).get("max_late_ms")

    @property
    def invalid(self) -> bool:
        """The sender fell further behind its schedule than ``tolerance.max_send_late_ms``: an overloaded
        machine, whose timing may have skewed the figures. Not a check (a run whose figures all pass
        passes); a failed run that is invalid is redone by ``LabTraffic`` when it can be."""
        late = self.max_late_ms
        return late is not None and late > self.tolerance.max_send_late_ms

    def stream(self, name: str) -> StreamFigures:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(f"no stream {name!r}; streams: {', '.join(s.name for s in self.streams)}")

    @property
    def lost(self) -> int:
        """Packets the offload (VF/RDMA streams) lost beyond the bond's own failover window and the
        agent's reaction to it (see the module docstring)."""
        return sum(s.lost_beyond_bond for s in self.streams if s.kind != "bond")

    @property
    def lost_in_agent_reaction(self) -> int:
        """Packets the offload lost after the bond's window, while the agent was moving its rules."""
        return sum(s.lost_in_agent_reaction for s in self.streams if s.kind != "bond")

    @property
    def lost_total(self) -> int:
        """Every packet the offload streams lost, the bond's window included."""
        return sum(s.lost for s in self.streams if s.kind != "bond")

    @property
    def bond_gap_ms(self) -> Dict[str, Optional[float]]:
        return {s.direction: s.fail_gap_ms for s in self.streams if s.kind == "bond"}

    @property
    def offload_gap_ms(self) -> Dict[str, Optional[float]]:
        return {s.name: s.fail_gap_ms for s in self.streams if s.kind != "bond"}

    @property
    def gap_spread(self) -> Dict[str, Dict[str, Any]]:
        """Per direction, the offload streams' gaps at the failure set beside the bond's: how many streams,
        the least, median and largest gap (and whose), how many showed none, what they lost (see
        ``gap_spread``)."""
        return gap_spread(self.streams)

    @property
    def summary(self) -> str:
        """``vf0 rx gap 31.2 ms (bond 24.0 ms), lost 9 (0 beyond the bond's window); ...``"""
        bond = {s.direction: s for s in self.streams if s.kind == "bond"}
        parts = []
        for s in self.streams:
            if s.kind == "bond":
                continue
            ref = bond.get(s.direction)
            ref_gap = f" (bond {_ms(ref.fail_gap_ms)})" if ref is not None else ""
            parts.append(f"{s.name} gap {_ms(s.fail_gap_ms)}{ref_gap}, lost {s.lost} "
                         f"({s.lost_in_agent_reaction} during the agent's reaction, {s.lost_beyond_bond} beyond)")
        return "; ".join(parts)

    def to_dict(self, series: bool = False) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "kind": self.kind, "lab": self.lab, "verdict": self.verdict, "passed": self.passed,
            "fail": self.fail, "rate_pps": self.rate_pps, "duration_s": self.duration_s, "ticks": self.ticks,
            "lost": self.lost, "lost_total": self.lost_total, "lost_in_agent_reaction": self.lost_in_agent_reaction,
            "bond_gap_ms": self.bond_gap_ms, "offload_gap_ms": self.offload_gap_ms, "gap_spread": self.gap_spread,
            "events": self.events, "tolerance": self.tolerance.to_dict(),
            "streams": [s.to_dict() for s in self.streams], "checks": [c.to_dict() for c in self.checks],
            "agent": self.agent, "send": self.send, "earlier_attempts": self.earlier_attempts,
            "gap_bound": self.bound or None, "negative_control": self.negative_control,
        }
        if series:
            out["series"] = self.series
        return out


@dataclass
class RdmaResult(FailoverResult):
    """``failover`` restricted to RoCEv2 streams (and the bond's, for reference): ICRC and PSN order first."""

    kind: str = "rdma"

    @property
    def icrc_bad(self) -> int:
        return sum((s.roce or {}).get("icrc_bad", 0) for s in self.streams if s.kind == "rdma")

    @property
    def psn_errors(self) -> int:
        return sum((s.roce or {}).get("regressions", 0) + (s.roce or {}).get("duplicates", 0)
                   + (s.roce or {}).get("psn_mismatch", 0) for s in self.streams if s.kind == "rdma")


def _ms(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def gap_spread(streams: List[StreamFigures]) -> Dict[str, Dict[str, Any]]:
    """Per direction with offload streams: ``{"streams", "with_gap", "min_ms", "median_ms", "max_ms", "worst",
    "bond_gap_ms", "over_bond": streams whose gap exceeds the bond's, "lost", "lost_beyond_bond"}`` -- the
    offload's gaps at the failure (``fail_gap_ms``; None when no failure or no gap) beside the bond's."""
    out: Dict[str, Dict[str, Any]] = {}
    for d in sorted({s.direction for s in streams if s.kind != "bond"}):
        offload = [s for s in streams if s.kind != "bond" and s.direction == d]
        bond = next((s for s in streams if s.kind == "bond" and s.direction == d), None)
        gaps = sorted((s.fail_gap_ms, s.name) for s in offload if s.fail_gap_ms is not None)
        ref = bond.fail_gap_ms if bond is not None else None
        out[d] = {
            "streams": len(offload), "with_gap": len(gaps),
            "min_ms": gaps[0][0] if gaps else None,
            "median_ms": _median([g for g, _ in gaps]),
            "max_ms": gaps[-1][0] if gaps else None, "worst": gaps[-1][1] if gaps else None,
            "bond_gap_ms": ref, "over_bond": sum(1 for g, _ in gaps if ref is not None and g > ref),
            "lost": sum(s.lost for s in offload), "lost_beyond_bond": sum(s.lost_beyond_bond for s in offload),
        }
    return out


def _median(values: List[float]) -> Optional[float]:
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else round((values[mid - 1] + values[mid]) / 2, 3)
