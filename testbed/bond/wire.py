"""Wire format of a bond port's ``IFLA_INFO_SLAVE_DATA`` (only an ``nla_map``).

pyroute2 0.9.7's ``ifinfmsg.ifinfo.bond_slave_data`` stops at
``IFLA_BOND_SLAVE_AD_AGGREGATOR_ID``: the 802.3ad actor/partner operational
port state the agent needs (is the port collecting and distributing?) decode
as ``UNKNOWN`` there. This table follows ``include/uapi/linux/if_link.h``
(``enum { IFLA_BOND_SLAVE_* }``), numbered explicitly so an attribute a later
kernel adds decodes as ``UNKNOWN`` instead of shifting its neighbours.

``reparse()`` re-reads the bytes pyroute2 already holds for that attribute
with this table; no global pyroute2 class is patched.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from pyroute2.netlink import nla

# bonding.h: slave->link
MII_STATUS = {0: "up", 1: "fail", 2: "down", 3: "back"}
# bonding.h: BOND_STATE_ACTIVE / BOND_STATE_BACKUP
SLAVE_STATE = {0: "active", 1: "backup"}
# bond_3ad.h: port state bits of the actor/partner (IEEE 802.1AX)
AD_STATE_BITS = (
    (0x01, "activity"),
    (0x02, "timeout"),
    (0x04, "aggregation"),
    (0x08, "synchronization"),
    (0x10, "collecting"),
    (0x20, "distributing"),
    (0x40, "defaulted"),
    (0x80, "expired"),
)
AD_COLLECTING = 0x10
AD_DISTRIBUTING = 0x20


class bond_slave_data(nla):
    """IFLA_INFO_SLAVE_DATA of a port whose IFLA_INFO_SLAVE_KIND is ``bond``."""

    nla_map = (
        (0, 'IFLA_BOND_SLAVE_UNSPEC', 'none'),
        (1, 'IFLA_BOND_SLAVE_STATE', 'uint8'),
        (2, 'IFLA_BOND_SLAVE_MII_STATUS', 'uint8'),
        (3, 'IFLA_BOND_SLAVE_LINK_FAILURE_COUNT', 'uint32'),
        (4, 'IFLA_BOND_SLAVE_PERM_HWADDR', 'l2addr'),
        (5, 'IFLA_BOND_SLAVE_QUEUE_ID', 'uint16'),
        (6, 'IFLA_BOND_SLAVE_AD_AGGREGATOR_ID', 'uint16'),
        (7, 'IFLA_BOND_SLAVE_AD_ACTOR_OPER_PORT_STATE', 'uint8'),
        (8, 'IFLA_BOND_SLAVE_AD_PARTNER_OPER_PORT_STATE', 'uint16'),
        (9, 'IFLA_BOND_SLAVE_PRIO', 'uint32'),  # 6.0+
    )


def reparse(attr: Any) -> Optional[bond_slave_data]:
    """Decode pyroute2's already-parsed slave-data attribute again with the full table.

    ``attr`` is what ``linkinfo.get_attr('IFLA_INFO_SLAVE_DATA')`` returned:
    pyroute2 keeps the message buffer, the attribute's offset and length.
    """
    if attr is None:
        return None
    data = getattr(attr, "data", None)
    if data is None:
        return None
    msg = bond_slave_data(data=data, offset=attr.offset, length=attr.length)
    msg.decode()
    return msg


def slave_data(attr: Any) -> Dict[str, Optional[int]]:
    """The fields the agent uses, as plain ints (None when the kernel did not send one)."""
    msg = reparse(attr)
    if msg is None:
        return {}
    get = msg.get_attr
    return {
        "state": get("IFLA_BOND_SLAVE_STATE"),
        "mii": get("IFLA_BOND_SLAVE_MII_STATUS"),
        "failures": get("IFLA_BOND_SLAVE_LINK_FAILURE_COUNT"),
        "aggregator": get("IFLA_BOND_SLAVE_AD_AGGREGATOR_ID"),
        "actor": get("IFLA_BOND_SLAVE_AD_ACTOR_OPER_PORT_STATE"),
        "partner": get("IFLA_BOND_SLAVE_AD_PARTNER_OPER_PORT_STATE"),
    }


def ad_state_names(bits: Optional[int]) -> list:
    """``0x3d`` -> ``['activity', 'aggregation', 'synchronization', 'collecting', 'distributing']``."""
    return [name for bit, name in AD_STATE_BITS if bits is not None and bits & bit]
