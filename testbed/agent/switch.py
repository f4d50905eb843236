"""The switch's resilient port selection (``nic.partner_select: resilient``), kept by the agent.

A LAG partner -- the switch -- picks the port of each frame toward the NIC by its own hash. Linux
bonding's choice is ``hash % live ports``: when one of four ports dies most flows move, although
their ports survived (issue 12's hidden scenario). A switch with resilient hashing keeps a bucket
table instead, and so does the lab's switch with ``partner_select: resilient``: the NIC's own table
(``mapping.select``: ``ports x buckets`` entries; a dead port's entries re-pointed over the live
ports, live ports' entries never moved), on the partner bond's egress::

    <host>-lag[N] clsact egress, chain 0, prio 1, handle 1+e   label sw:<e>
        skb->hash & (size-1) == e  ->  mirred egress redirect to table[e]'s switch port (drop: none live)

A frame the bridge forwards to the partner bond meets the table before the bond's own transmit
hash; what the bond sends itself (LACPDUs) leaves by its ports directly and never does. skb->hash
is the flow hash RPS computes when the frame entered the switch (``rps_cpus`` on the switch's ports
in a lab with a resilient partner, ``realize``). Ports are those the partner bond itself would use
(``bond.ports.usable_ports``: 802.3ad distributing in its active aggregator).

``switch_rules(pn, usable)`` is pure. ``SwitchReconciler`` reads the partner bonds' state, plans,
diffs against a dump of their hooks and applies: a switch's control plane, with no fast path.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence, Tuple

from testbed.agent import mapping
from testbed.agent.reconcile import Reaction
from testbed.bond.ports import usable_ports
from testbed.bond.state import read_state
from testbed.errors import TestbedError
from testbed.tc import ops
from testbed.tc.rule import Action, Match, Rule
from testbed.topology import Host, Nic, partner_nics

PRIO_SWITCH_TABLE = 1


def table(pn: Nic, usable: Sequence[str]) -> Tuple[Any, ...]:
    """The partner bond's table as switch port names (None: no live port) for ``usable`` ports."""
    live = frozenset(i for i, p in enumerate(pn.ports) if p in usable)
    return mapping.by_name(mapping.select(len(pn.ports), pn.offload.buckets, live), pn.ports)


def switch_rules(pn: Nic, usable: Sequence[str]) -> List[Rule]:
    """The partner bond's egress rules for its ``usable`` ports: one per table entry."""
    entries = table(pn, usable)
    mask = len(entries) - 1
    return [Rule(dev=pn.bond.name, hook="egress", prio=PRIO_SWITCH_TABLE, handle=1 + e,
                 match=Match(hash=e, hash_mask=mask),
                 actions=(Action("redirect", dev=port) if port else Action("drop"),), label=f"sw:{e}")
            for e, port in enumerate(entries)]


class SwitchReconciler:
    """Keeps the tables of the partner bonds facing one NIC host equal to what their state asks for."""

    def __init__(self, host: Host, netns: str, ipr: Any) -> None:
        self.host = host
        self.name = f"switch:{host.name}"  # its reactions' host field: never mistaken for the NIC's
        self.netns = netns
        self.ipr = ipr
        self.partners = partner_nics(host)
        self.usable: Dict[str, Tuple[str, ...]] = {}
        self.tables: Dict[str, Tuple[Any, ...]] = {}

    def reconcile(self, trigger: str, t_event: float) -> Reaction:
        """Read, plan, dump, diff, apply; the reaction says what changed and how long it took."""
        r = Reaction(host=self.name, trigger=trigger, full=True, path="full")
        desired: List[Rule] = []
        for pn in self.partners:
            usable = tuple(usable_ports(pn, read_state(self.ipr, pn, self.netns)))
            self.usable[pn.bond.name] = usable
            self.tables[pn.bond.name] = table(pn, usable)
            desired += switch_rules(pn, usable)
        t_read = time.monotonic()
        bonds = [pn.bond.name for pn in self.partners]
        for bond in bonds:
            ops.ensure_clsact(self.ipr, bond)
        installed = ops.dump(self.ipr, bonds)
        add, replace, delete = ops.diff(desired, installed)
        t_plan = time.monotonic()
        ops.apply(self.ipr, add, replace, delete)
        t_done = time.monotonic()
        r.usable = tuple(p for u in self.usable.values() for p in u)
        r.mapping = "; ".join(f"{b}: {' '.join(str(p) for p in t)}" for b, t in self.tables.items())
        r.added, r.replaced, r.deleted = len(add), len(replace), len(delete)
        r.read_ms = (t_read - t_event) * 1000
        r.plan_ms = (t_plan - t_read) * 1000
        r.apply_ms = (t_done - t_plan) * 1000
        r.latency_ms = (t_done - t_event) * 1000
        return r

    def safe_reconcile(self, trigger: str, t_event: float) -> Reaction:
        """``reconcile``, a failure turned into a Reaction with ``error`` (the agent keeps running)."""
        try:
            return self.reconcile(trigger, t_event)
        except TestbedError as exc:
            return Reaction(host=self.name, trigger=trigger, full=True, error=str(exc),
                            latency_ms=(time.monotonic() - t_event) * 1000)

    def status(self) -> Dict[str, Any]:
        """What ``agent.json`` says of the switch's tables (``switches``: host -> this)."""
        return {"partner_select": "resilient",
                "partners": {b: {"usable": list(self.usable.get(b, ())), "table": list(t)}
                             for b, t in self.tables.items()}}
