"""Which of a NIC's ports the bond uses now, and which it takes frames from (pure: a ``BondState`` in).

A port carries offloaded traffic exactly when every upstream LAG-offload
driver (ice, mlx5, nfp, qede) would call it active: ``link_up && tx_enabled``
from NETDEV_CHANGELOWERSTATE, which bonding fills in ``bond_lower_state_changed``:

* ``link_up``: the bond's own verdict on the port, ``slave->link`` UP or FAIL
  (FAIL: down but still in its downdelay), reported as
  ``IFLA_BOND_SLAVE_MII_STATUS``. With the ARP/NS monitor that verdict comes
  from ARP/NS replies, not from carrier, so carrier is never looked at here;
* ``tx_enabled``: the port is an active slave (``IFLA_BOND_SLAVE_STATE``).

Per mode (the bond decides, the agent follows):

* active-backup: only the bond's active port (``IFLA_BOND_ACTIVE_SLAVE``),
  so ``primary``/``primary_reselect``/``prio`` and the first-enslaved rule are
  the bond's own choice, never re-derived here; it must be link-up (an active
  port the monitor has declared down carries nothing);
* balance-xor (and other modes): enslaved ports that are link-up;
* 802.3ad: link-up, active, its actor's operational state DISTRIBUTING (0x20)
  and its aggregator the bond's active aggregator (``IFLA_BOND_AD_INFO``):
  a port with carrier outside the selected aggregator, or not yet
  distributing, carries nothing; with no active aggregator nothing does;
* the bond missing or administratively down: none.

Which ports deliver what arrives from the wire (``receiving``): the ports
the bond itself takes frames from. In active-backup and 802.3ad that is the
usable ports (the bond marks the others inactive and drops their frames);
with ``coupled_control off`` (802.3ad's independent control, 6.9+) also the
link-up ports of the active aggregator that are COLLECTING but not yet
distributing (``__enable_collecting_port`` opens their RX alone); in
balance-xor every enslaved port that is up, also one without link or still in
its updelay: ``bond_miimon_commit`` never marks a balance-xor slave inactive,
and the switch's LAG sends on a port as soon as it has carrier. Such a port
delivers VF and RoCEv2 frames (and replicates broadcasts) although no TX
entry points to it yet -- as mlx5's hash LAG, which remaps only TX.
"""

from __future__ import annotations

from typing import Tuple

from testbed.bond.state import BondState, PortState
from testbed.topology import Nic

LINK_UP = ("up", "fail")  # bond_lower_state_changed: BOND_LINK_UP or BOND_LINK_FAIL


def link_up(p: PortState) -> bool:
    """The bond's verdict on the port's link (MII or ARP/NS monitor), not its carrier."""
    return p.present and p.enslaved and p.admin_up and p.mii in LINK_UP


def tx_enabled(p: PortState) -> bool:
    """``bond_is_active_slave``: not a backup (None: not reported, as a balance-xor slave never is one)."""
    return p.slave_state != "backup"


def in_active_aggregator(p: PortState, state: BondState) -> bool:
    return state.ad_aggregator is not None and p.ad_aggregator == state.ad_aggregator


def _port_usable(mode: str, p: PortState, state: BondState) -> bool:
    if not (link_up(p) and tx_enabled(p)):
        return False
    if mode == "802.3ad":
        return p.distributing and in_active_aggregator(p, state)
    return True


def usable_ports(nic: Nic, state: BondState) -> Tuple[str, ...]:
    """The ports the bond itself would use now, in ``nic.ports`` order."""
    if not (state.present and state.admin_up):
        return ()
    mode = state.mode or nic.bond.mode
    if mode == "active-backup":
        p = state.port(state.active) if state.active else None
        ok = p is not None and p.name in nic.ports and p.present and p.enslaved and (p.mii is None or link_up(p))
        return (p.name,) if ok and p is not None else ()
    return tuple(name for name in nic.ports if _port_usable(mode, state.port(name), state))


def receiving_ports(nic: Nic, state: BondState) -> Tuple[str, ...]:
    """The ports the bond takes frames from now, in ``nic.ports`` order (see the module docstring)."""
    mode = state.mode or nic.bond.mode
    if mode == "active-backup" or not (state.present and state.admin_up):
        return usable_ports(nic, state)
    if mode == "802.3ad":
        usable = usable_ports(nic, state)
        if dict(state.options).get("coupled_control") is not False:
            return usable
        return tuple(name for name in nic.ports if name in usable or (
            link_up(p := state.port(name)) and p.collecting and in_active_aggregator(p, state)))
    return tuple(name for name in nic.ports
                 if (p := state.port(name)).present and p.enslaved and p.admin_up)
