"""After a wire changed: wait until the bond, then the offload agent, have reacted, and say what they did.

``Follow(topo, host)`` is opened *before* the change (it snapshots the bond);
``follow.wait(ports, up, timeout)`` afterwards waits (deadline, no fixed
sleeps) for

1. the bond: every port in ``ports`` is, by the bond's own account, down and
   unused (``up=False``), or MII up again and - except the backup port of an
   active-backup bond - in use (``up=True``);
2. the agent (when one runs): the ports it programs (``agent.json``
   ``usable``) equal the ports the bond uses now (``ports.usable_ports``).

A condition that does not hold in time is reported, not raised: this is
for a person at the CLI who wants to see what happened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from testbed.agent import launcher
from testbed.agent import status as agent_status
from testbed.agent.status import NicStatus, ReactionStatus
from testbed.bond.ports import usable_ports
from testbed.bond.state import BondState, read_state
from testbed.errors import WaitTimeout
from testbed.nl import open_ns, wait_until
from testbed.topology import Host, Topology


@dataclass
class Followed:
    host: str
    ports: Tuple[str, ...]
    up: bool
    mode: str
    active_before: Optional[str] = None
    active_after: Optional[str] = None
    usable_before: Tuple[str, ...] = ()
    usable_after: Tuple[str, ...] = ()
    bond_ms: Optional[float] = None  # change -> the bond's view of the ports matched
    agent_ms: Optional[float] = None  # change -> agent.json showed the ports the bond uses
    agent_usable: Optional[Tuple[str, ...]] = None
    agent_reaction: Optional[ReactionStatus] = None  # the agent's last reaction since the change
    agent_running: bool = True
    missed: List[str] = field(default_factory=list)  # conditions that did not hold in time

    def lines(self) -> List[str]:
        """Human-readable, one fact per line."""
        ports = ",".join(self.ports)
        out: List[str] = []
        what = "up" if self.up else "down"
        if self.bond_ms is None:
            out.append(f"  bond0: {ports} not yet {what} by the bond's account")
        elif self.mode == "active-backup":
            move = (f"active {self.active_before or '-'} -> {self.active_after or '-'}"
                    if self.active_before != self.active_after else f"active stays {self.active_after or '-'}")
            out.append(f"  bond0: {move}; {ports} {what} after {self.bond_ms:.0f} ms")
        else:
            out.append(f"  bond0: uses {','.join(self.usable_after) or 'no port'} "
                       f"(was {','.join(self.usable_before) or 'none'}); {ports} {what} after {self.bond_ms:.0f} ms")
        if not self.agent_running:
            out.append("  agent: not running (no offload rules follow the bond)")
        elif self.agent_ms is None:
            seen = ",".join(self.agent_usable or ()) or "none"
            out.append(f"  agent: still programs {seen}, the bond uses {','.join(self.usable_after) or 'none'}")
        else:
            line = f"  agent: offload uses {','.join(self.usable_after) or 'no port (rules drop)'}"
            r = self.agent_reaction
            if r:
                line += (f" after {self.agent_ms:.0f} ms; rules +{r.added} ~{r.replaced} -{r.deleted} applied "
                         f"{r.latency_ms:.1f} ms after the bond's event")
            else:
                line += " (nothing to move)"
            out.append(line)
        return out


def bond_settled(host: Host, state: BondState, ports: Sequence[str], up: bool) -> bool:
    """Has the bond taken ``ports`` out of use (``up=False``) or back into use (``up=True``)?"""
    nic = host.nic
    assert nic is not None
    used = usable_ports(nic, state)
    for name in ports:
        p = state.port(name)
        if not up:
            if p.mii == "up" or name in used:
                return False
        else:
            if p.mii != "up":
                return False
            backup_ok = nic.bond.mode == "active-backup" and state.active is not None
            if name not in used and not backup_ok:
                return False
    return True


class Follow:
    def __init__(self, topo: Topology, host: Host) -> None:
        if host.nic is None:
            raise ValueError(f"{host.name} has no NIC")
        self.topo, self.host, self.nic = topo, host, host.nic
        self.ipr = open_ns(host.netns)
        self.before = self.state()
        self.t0 = time.monotonic()
        self.wall0_ns = time.time_ns()

    def state(self) -> BondState:
        return read_state(self.ipr, self.nic, self.host.netns)

    def mark(self) -> None:
        """The change happens now (call right before it)."""
        self.t0 = time.monotonic()
        self.wall0_ns = time.time_ns()

    def close(self) -> None:
        self.ipr.close()

    def _agent_nic(self) -> NicStatus:
        return agent_status.nic(self.topo.name, self.host.name)

    def wait(self, ports: Sequence[str], up: bool, timeout: float = 10.0) -> Followed:
        res = Followed(host=self.host.name, ports=tuple(ports), up=up, mode=self.nic.bond.mode,
                       active_before=self.before.active, usable_before=usable_ports(self.nic, self.before))
        now: List[BondState] = [self.before]

        def bond_ok() -> bool:
            now[0] = self.state()
            return bond_settled(self.host, now[0], ports, up)

        deadline = self.t0 + timeout
        try:
            wait_until(bond_ok, max(0.0, deadline - time.monotonic()), "the bond", interval=0.005)
            res.bond_ms = (time.monotonic() - self.t0) * 1000
        except WaitTimeout:
            res.missed.append("bond")
        res.active_after, res.usable_after = now[0].active, usable_ports(self.nic, now[0])
        res.agent_running = launcher.running(self.topo.name) is not None
        if not res.agent_running:
            return res

        def agent_ok(n: NicStatus) -> bool:
            res.agent_usable = n.usable
            return n.usable == usable_ports(self.nic, self.state())

        try:
            agent_status.wait_nic(self.topo.name, self.host.name, agent_ok, max(0.5, deadline - time.monotonic()),
                                  "the agent", interval=0.01)
            res.agent_ms = (time.monotonic() - self.t0) * 1000
            res.usable_after = res.agent_usable or ()
        except WaitTimeout:
            res.missed.append("agent")
        recent = self._agent_nic().reactions_since(self.wall0_ns)
        changed = [r for r in recent if r.changed]
        res.agent_reaction = (changed or recent)[-1] if recent else None
        return res
