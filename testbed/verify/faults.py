"""Faults a verification injects on a NIC port's wire, prepared ahead so that injecting is one netlink call.

``lab.fail()`` rereads the lab record each time (tens of ms in a TCG guest);
inside a timed stream the moment of the failure must be sharp, so a
``Fault`` opens its netlink socket in the switch namespace and resolves the
interface when it is made, and ``apply()`` / ``revert()`` only send.

Kinds:

- ``carrier``: the switch-side peer of the port goes admin down -- the port
  loses carrier like a pulled cable (what ``testbed fail`` does);
- ``lacp``: LACPDUs (ethertype 0x8809) are dropped in both directions on
  the switch side of the wire (tc flower on the peer's clsact) while data
  still flows -- the LACP partners time out (3 s at ``lacp_rate fast``), the
  port stops collecting/distributing, and traffic must leave it without a
  single carrier event.  802.3ad only.

Public API:
    FAULTS = ("carrier", "lacp")
    Fault(topo, host, port, how="carrier")      -- context manager (closes the socket; does not revert)
    Fault.apply() -> None; Fault.revert() -> None; Fault.applied: bool; Fault.describe() -> str
"""

from __future__ import annotations

from typing import List

from testbed import naming
from testbed.errors import UsageError
from testbed.nl import ifindex, netlink_op, open_ns
from testbed.topology import Host, Topology

FAULTS = ("carrier", "lacp")
LACP_BLOCK_PRIO = 1


class Fault:
    def __init__(self, topo: Topology, host: Host, port: str, how: str = "carrier") -> None:
        if how not in FAULTS:
            raise UsageError(f"unknown fault {how!r}", fix=f"one of: {', '.join(FAULTS)}")
        if how == "lacp" and (host.nic is None or host.nic.bond.mode != "802.3ad"):
            mode = host.nic.bond.mode if host.nic else "none"
            raise UsageError(f"lab {topo.name}: fault 'lacp' needs an 802.3ad bond (host {host.name}: {mode})",
                             fix="use --fault carrier")
        self.topo = topo
        self.host = host
        self.port = port
        self.how = how
        self.peer = naming.switch_port(host.name, port)
        self.netns = topo.switch_netns
        self.applied = False
        self.ipr = open_ns(self.netns)
        try:
            self.index = ifindex(self.ipr, self.peer, self.netns)
            if how == "lacp":
                from testbed.tc import ops

                with netlink_op(f"{self.netns}: {self.peer}: clsact"):
                    ops.ensure_clsact(self.ipr, self.peer)
        except BaseException:
            self.ipr.close()
            raise

    def describe(self) -> str:
        what = "wire down" if self.how == "carrier" else "LACPDUs dropped"
        return f"{self.host.name}:{self.port} ({what} at {self.peer})"

    def _lacp_rules(self) -> List:
        from testbed.tc.rule import ETH_P_SLOW, Action, Match, Rule

        return [Rule(dev=self.peer, hook=hook, prio=LACP_BLOCK_PRIO, handle=1, match=Match(eth_type=ETH_P_SLOW),
                     actions=(Action("drop"),), label="verify:nolacp") for hook in ("ingress", "egress")]

    def apply(self) -> None:
        self._set(faulty=True)

    def revert(self) -> None:
        self._set(faulty=False)

    def _set(self, faulty: bool) -> None:
        if self.how == "carrier":
            state = "down" if faulty else "up"
            with netlink_op(f"{self.netns}: {self.peer}: set {state}"):
                self.ipr.link("set", index=self.index, state=state)
        else:
            from testbed.tc import ops

            if faulty:
                ops.apply(self.ipr, replace=self._lacp_rules())
            else:
                ops.apply(self.ipr, delete=self._lacp_rules())
        self.applied = faulty

    def close(self) -> None:
        self.ipr.close()

    def __enter__(self) -> Fault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
