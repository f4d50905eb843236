"""The agent's fast path, the pure part: the bond state a batch of link events describes, and the states
the bond may move to next (pure: no kernel, no I/O).

The bond needs no Python after miimon fires; a reaction of the agent should
need almost none either. Link notifications carry what a dump would (the
kernel builds both with ``rtnl_fill_ifinfo``: the bond's ``IFLA_INFO_DATA``
with its active port and 802.3ad aggregator, each port's carrier, operstate
and ``IFLA_INFO_SLAVE_DATA`` with its slave state, MII status and LACP actor
state), so:

* ``overlay(table, nic, batch)``: the links last read with the events' newer
  messages laid over them -> the bond state now, decided by the same code as
  after a dump (``bond.state.state_of``, ``bond.ports``), without a dump.
  None when the events say something this cannot follow: an interface
  appeared, vanished or was recreated (its ifindex changed) -- the agent then
  reads everything, as before.
* ``next_keys(nic, state, current)``: the (usable, receiving) port sets the
  bond may report next -- each port lost or regained; in active-backup each
  enslaved port becoming the active one (the bond's ``primary``, ``prio`` and
  ``primary_reselect`` decide which; every candidate is prepared, so the agent
  need not re-derive that choice). The rules depend on nothing else
  (``rules._plan``), so these are the states whose rule changes the agent
  encodes ahead of time.

A guess can be wrong (a stale notification, a state no candidate covers):
the agent then either builds the change on the spot or falls back to the
read path, and in every case verifies with a dump afterwards.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Iterable, List, Mapping, Optional, Tuple

from testbed import rawnl
from testbed.bond.ports import link_up, receiving_ports, usable_ports
from testbed.bond.state import BondState, LinkTable, link_of, state_of
from testbed.topology import Nic

Key = Tuple[Tuple[str, ...], Tuple[str, ...]]  # (usable, receiving), each in nic.ports order


def key_of(nic: Nic, state: BondState) -> Key:
    """What the rules of ``state`` depend on besides the devices present (``rules._plan``)."""
    return usable_ports(nic, state), receiving_ports(nic, state)


def overlay(table: LinkTable, nic: Nic, links: Mapping[str, bytes], names: Iterable[str] = (),
            deleted: Iterable[str] = ()) -> Optional[LinkTable]:
    """``table`` with the newer RTM_NEWLINK messages ``links`` (name -> raw) laid over it; None when the
    events cannot be followed without a dump.

    ``names``: every interface the events mentioned; ``deleted``: those removed.
    """
    if any(True for _ in deleted):
        return None
    if any(name not in table.index for name in names):
        return None  # a new interface: it needs its clsact bound (the read path does it)
    wanted = set(nic.ports) | {nic.bond.name}
    merged = dict(table.links)
    for name, raw in links.items():
        if rawnl.link_index(raw) != table.index.get(name):
            return None  # recreated under the same name (or renamed): ifindexes in prepared rules are stale
        if name in wanted:
            ln = link_of(raw)
            if ln is None:
                return None
            merged[name] = ln
    # the reading's own frozenset (frozenset() of one returns it): no copy of every interface's name
    # per event, and its hash (a plan cache key) is computed once
    devices = table.state.devices if table.state.devices is not None else table.index
    state = state_of(merged.values(), nic, devices)
    return LinkTable(state=state, links=MappingProxyType(merged), index=table.index)


def in_failover(nic: Nic, state: BondState) -> bool:
    """The bond is in the middle of its own failover: active-backup, its active port already declared
    down by the monitor while another enslaved port is link-up.

    ``bond_miimon_commit`` (and the ARP monitor's commit) marks the port down
    and then, under the same RTNL hold, selects the next active port; a port's
    notification can reach the agent before the bond's own. The state in
    between (no usable port) never carries traffic; acting on it would cost a
    whole reaction before the one that matters. (With no other port up the
    bond keeps none active: that state is final and is followed at once.)
    """
    if (state.mode or nic.bond.mode) != "active-backup" or state.active is None:
        return False
    if link_up(state.port(state.active)) or state.port(state.active).mii is None:
        return False
    return any(p.name != state.active and link_up(p) for p in state.ports)


def monitor_interval(nic: Nic) -> float:
    """Seconds between the bond's link checks (ARP/NS monitor or miimon): by then it has decided."""
    ms = nic.bond.value("arp_interval") if nic.bond.arp_monitor else nic.bond.miimon
    return max(int(ms or 0), 10) / 1000  # type: ignore[call-overload]


def _ordered(nic: Nic, ports: Iterable[str]) -> Tuple[str, ...]:
    chosen = set(ports)
    return tuple(p for p in nic.ports if p in chosen)


def next_keys(nic: Nic, state: BondState, current: Key) -> List[Key]:
    """The (usable, receiving) sets the bond may move to from ``state`` in one step, most likely first;
    ``current`` itself is left out.

    active-backup: each port as the active one (the primary's recovery, the
    active port's loss to any other), then none. Other modes, per port: one
    not usable regained (also for RX: re-enslaved, or 802.3ad's collecting
    port), one usable lost -- for TX only (balance-xor: a port without link
    still receives) and for both -- and a receiving-only port released or
    opened.
    """
    usable, receiving = current
    out: List[Key] = []

    def add(u: Iterable[str], r: Iterable[str]) -> None:
        u = _ordered(nic, u)
        key = (u, _ordered(nic, set(r) | set(u)))
        if key != current and key not in out:
            out.append(key)

    if (state.mode or nic.bond.mode) == "active-backup":
        for port in nic.ports:
            add((port,), (port,))
        add((), ())
        return out
    for port in nic.ports:
        if port not in usable:
            add(set(usable) | {port}, set(receiving) | {port})
    for port in nic.ports:
        if port in usable:
            add(set(usable) - {port}, receiving)
            add(set(usable) - {port}, set(receiving) - {port})
    for port in nic.ports:
        if port not in usable:
            add(usable, set(receiving) ^ {port})
    return out


def describe(key: Key) -> str:
    """``usable pf1 / receiving pf0,pf1`` for agent.json."""
    usable, receiving = key
    return f"usable {','.join(usable) or 'none'} / receiving {','.join(receiving) or 'none'}"

