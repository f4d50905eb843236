"""Which of a NIC's ports the bond uses now, and which it takes frames from (pure: a ``BondState`` in).

Which ports are usable (the bond decides, the agent follows):

* active-backup: only the bond's active port (``IFLA_BOND_ACTIVE_SLAVE``),
  so ``primary``/``primary_reselect`` and the first-enslaved rule are the
  bond's own choice, never re-derived here;
* balance-xor (and other modes): enslaved ports whose MII status is up;
* 802.3ad: enslaved, MII up, bond slave state active *and* the actor's
  operational state has collecting+distributing (carrier alone is not
  enough), in the bond's active aggregator;
* the bond missing or administratively down: none.

Which ports deliver what arrives from the wire (``receiving``): the ports
the bond itself takes frames from. In active-backup and 802.3ad that is the
usable ports (the bond marks the others inactive and drops their frames);
in balance-xor it is every enslaved port that is up, also one without MII up
or still in its updelay: ``bond_miimon_commit`` never marks a balance-xor
slave inactive, and the switch's LAG sends on a port as soon as it has
carrier. Such a port delivers VF and RoCEv2 frames (and replicates
broadcasts) although no TX entry points to it yet -- as mlx5's hash LAG,
which remaps only TX.
"""

from __future__ import annotations

from typing import Tuple

from testbed.bond.state import BondState, PortState
from testbed.topology import Nic


def _port_usable(mode: str, p: PortState, state: BondState) -> bool:
    if not (p.present and p.enslaved and p.admin_up):
        return False
    if mode == "802.3ad":
        in_aggregator = (state.ad_aggregator is None or p.ad_aggregator is None
                         or p.ad_aggregator == state.ad_aggregator)
        return p.mii == "up" and p.slave_state == "active" and p.collecting_distributing and in_aggregator
    return p.mii == "up"


def usable_ports(nic: Nic, state: BondState) -> Tuple[str, ...]:
    """The ports the bond itself would use now, in ``nic.ports`` order."""
    if not (state.present and state.admin_up):
        return ()
    mode = state.mode or nic.bond.mode
    if mode == "active-backup":
        p = state.port(state.active) if state.active else None
        return (p.name,) if p is not None and p.name in nic.ports and p.present and p.enslaved else ()
    return tuple(name for name in nic.ports if _port_usable(mode, state.port(name), state))


def receiving_ports(nic: Nic, state: BondState) -> Tuple[str, ...]:
    """The ports the bond takes frames from now, in ``nic.ports`` order (see the module docstring)."""
    mode = state.mode or nic.bond.mode
    if mode in ("active-backup", "802.3ad") or not (state.present and state.admin_up):
        return usable_ports(nic, state)
    return tuple(name for name in nic.ports
                 if (p := state.port(name)).present and p.enslaved and p.admin_up)
