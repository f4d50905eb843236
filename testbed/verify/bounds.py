"""The failover gap a bond's configuration promises (pure), set beside the gaps a run measured.

Users reason about a failover with the bound their configuration implies;
``failure_bound(bond, fault, rate_pps)`` computes it, ``judge_gaps`` says
per stream whether the measured gap at the failure is inside it.

- **carrier** fault, MII monitoring: the monitor polls the carrier every
  ``miimon`` ms (the loss is seen within one tick), then waits ``downdelay``
  ms before the port is given up: ``miimon + downdelay``;
- **carrier** fault, ARP monitoring (``arp_interval`` > 0; the kernel then
  runs no MII monitor): a port is given up after ``arp_missed_max``
  (default 2) intervals without an ARP reply: ``arp_interval x
  arp_missed_max``;
- **lacp** fault (802.3ad; the carrier stays up, LACPDUs stop): the actor
  gives up its partner when its current-while timer runs out -- the short
  timeout (3 s) with ``lacp_rate fast``, the long one (90 s) with ``slow``,
  the kernel's default.

A gap is an inter-arrival time: with packets every ``1000 / rate_pps`` ms,
even a failover that loses nothing shows one packet interval, so a gap is
*within* the bound when it is at most the bound plus one packet interval.
Informative, never a check: the verdict stays the loss beyond the bond's
window (``failover``), since a loaded TCG guest stretches every timer (see
DESIGN.md: compare timings only as ratios measured in the same guest).

Public API:
    ARP_MISSED_MAX_DEFAULT = 2;  LACP_TIMEOUT_MS = {"fast": 3000, "slow": 90000}
    GapBound(ms, monitor, basis, spacing_ms)     frozen dataclass; .limit_ms, .within(gap_ms), .describe(),
                                                 .to_dict()
    failure_bound(bond, fault, rate_pps) -> GapBound | None
    notice_ms(bond, notice) -> float             the agent's notice the judge allows for this bond
    judge_gaps(bound, gaps) -> dict              gaps: stream -> (kind, gap ms | None)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

ARP_MISSED_MAX_DEFAULT = 2  # the bonding driver's default arp_missed_max
LACP_TIMEOUT_MS = {"fast": 3000, "slow": 90000}  # 802.3ad short / long timeout (3 x the periodic time)


@dataclass(frozen=True)
class GapBound:
    ms: float  # what the configuration promises
    monitor: str  # "mii" | "arp" | "lacp"
    basis: str  # how it was computed: "miimon 10 + downdelay 0"
    spacing_ms: float  # one packet interval of the run: the gap's own resolution

    @property
    def limit_ms(self) -> float:
        return self.ms + self.spacing_ms

    def within(self, gap_ms: Optional[float]) -> Optional[bool]:
        return None if gap_ms is None else gap_ms <= self.limit_ms

    def describe(self) -> str:
        return f"bound {self.ms:g} ms ({self.basis}) + {self.spacing_ms:g} ms packet spacing"

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["limit_ms"] = self.limit_ms
        return out


def _num(bond: Any, name: str) -> int:
    """A bond option as a number (0: not given): ``topology.Bond.value`` (its own fields, else the file's other
    options), or an attribute of a stand-in."""
    v = bond.value(name) if hasattr(bond, "value") else getattr(bond, name, None)
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else 0


def failure_bound(bond: Any, fault: str, rate_pps: float) -> Optional[GapBound]:
    """The bound on the gap at a failure for a ``topology.Bond`` (None: the configuration promises none)."""
    spacing = round(1000.0 / rate_pps, 3) if rate_pps > 0 else 0.0
    if fault == "lacp":
        if bond.mode != "802.3ad":
            return None
        rate = bond.lacp_rate or "slow"
        return GapBound(float(LACP_TIMEOUT_MS[rate]), "lacp",
                        f"LACP {'short' if rate == 'fast' else 'long'} timeout, lacp_rate {rate}", spacing)
    if fault != "carrier":
        return None
    arp = _num(bond, "arp_interval")
    if arp > 0:
        missed = _num(bond, "arp_missed_max") or ARP_MISSED_MAX_DEFAULT
        return GapBound(float(arp * missed), "arp", f"arp_interval {arp} x arp_missed_max {missed}", spacing)
    miimon, down = _num(bond, "miimon"), _num(bond, "downdelay")
    if miimon <= 0:
        return None
    return GapBound(float(miimon + down), "mii", f"miimon {miimon} + downdelay {down}", spacing)


def notice_ms(bond: Any, notice: float) -> float:
    """How long after the bond's outage the judge lets the agent hear of it: ``notice``, and with the ARP/NS
    monitor at least ``notice`` plus two ARP intervals. That monitor changes the active port before it tells
    netlink: it defers the slave-state notification to a later run when it cannot take RTNL at once (the
    agent's event came ~150 ms after the bond's traffic resumed, arp_interval 100, 7.3 under TCG); the MII
    monitor notifies within a few ms."""
    arp = _num(bond, "arp_interval")
    return notice + 2 * arp if arp > 0 else notice


def judge_gaps(bound: Optional[GapBound], gaps: Mapping[str, Tuple[str, Optional[float]]]) -> Dict[str, Any]:
    """Per stream (name -> (kind, gap at the failure)) whether it is within ``bound``; and the bond's streams
    and the offload's together (None: no gap measured, or no bound)."""
    if bound is None:
        return {}
    streams = {name: {"kind": kind, "gap_ms": gap, "within": bound.within(gap),
                      "over_ms": None if gap is None else round(max(0.0, gap - bound.limit_ms), 1)}
               for name, (kind, gap) in gaps.items()}

    def together(bond: bool) -> Optional[bool]:
        seen = [s["within"] for s in streams.values() if (s["kind"] == "bond") == bond and s["within"] is not None]
        return all(seen) if seen else None

    return {**bound.to_dict(), "bond_within": together(True), "offload_within": together(False),
            "streams": streams}
