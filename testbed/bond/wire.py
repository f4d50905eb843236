"""Wire format of a bond's ``IFLA_INFO_DATA`` and a bond port's ``IFLA_INFO_SLAVE_DATA`` (tables + codec).

pyroute2 0.9.7 stops short of both: its bond table ends at
``IFLA_BOND_TLB_DYNAMIC_LB`` (27), so ``peer_notif_delay``, ``lacp_active``,
``ns_ip6_target``, ``coupled_control``, ``lacp_strict`` ... decode as
``UNKNOWN`` and cannot be sent; its slave table ends at
``IFLA_BOND_SLAVE_AD_AGGREGATOR_ID``, so the 802.3ad actor/partner
operational port state (is the port distributing?) and the slave ``prio``
are missing. These tables follow ``include/uapi/linux/if_link.h``
(``enum { IFLA_BOND_* }`` and ``enum { IFLA_BOND_SLAVE_* }``), numbered
explicitly so an attribute a later kernel adds is skipped instead of shifting
its neighbours.

* ``decode_bond(attr)`` / ``slave_data(attr)`` re-read the bytes pyroute2
  already holds for the attribute (no global pyroute2 class is patched);
* ``change_bond(index, attrs)`` / ``change_slave(index, attrs)`` build the
  body of an RTM_NEWLINK that sets attributes on an existing bond / port
  (sent with ``nlpipe.transact``), as ``ip link set ... type bond[_slave]``.
"""

from __future__ import annotations

import ipaddress
import struct
from types import MappingProxyType
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

from testbed import rawnl

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

# formats: a struct code (one scalar), "ip4"/"ip6" (a nested array of addresses), "mac", "nest"
BOND: Mapping[str, Tuple[int, str]] = MappingProxyType({
    "IFLA_BOND_MODE": (1, "B"),
    "IFLA_BOND_ACTIVE_SLAVE": (2, "I"),
    "IFLA_BOND_MIIMON": (3, "I"),
    "IFLA_BOND_UPDELAY": (4, "I"),
    "IFLA_BOND_DOWNDELAY": (5, "I"),
    "IFLA_BOND_USE_CARRIER": (6, "B"),
    "IFLA_BOND_ARP_INTERVAL": (7, "I"),
    "IFLA_BOND_ARP_IP_TARGET": (8, "ip4"),
    "IFLA_BOND_ARP_VALIDATE": (9, "I"),
    "IFLA_BOND_ARP_ALL_TARGETS": (10, "I"),
    "IFLA_BOND_PRIMARY": (11, "I"),
    "IFLA_BOND_PRIMARY_RESELECT": (12, "B"),
    "IFLA_BOND_FAIL_OVER_MAC": (13, "B"),
    "IFLA_BOND_XMIT_HASH_POLICY": (14, "B"),
    "IFLA_BOND_RESEND_IGMP": (15, "I"),
    "IFLA_BOND_NUM_PEER_NOTIF": (16, "B"),
    "IFLA_BOND_ALL_SLAVES_ACTIVE": (17, "B"),
    "IFLA_BOND_MIN_LINKS": (18, "I"),
    "IFLA_BOND_LP_INTERVAL": (19, "I"),
    "IFLA_BOND_PACKETS_PER_SLAVE": (20, "I"),
    "IFLA_BOND_AD_LACP_RATE": (21, "B"),
    "IFLA_BOND_AD_SELECT": (22, "B"),
    "IFLA_BOND_AD_INFO": (23, "nest"),
    "IFLA_BOND_AD_ACTOR_SYS_PRIO": (24, "H"),
    "IFLA_BOND_AD_USER_PORT_KEY": (25, "H"),
    "IFLA_BOND_AD_ACTOR_SYSTEM": (26, "mac"),
    "IFLA_BOND_TLB_DYNAMIC_LB": (27, "B"),
    "IFLA_BOND_PEER_NOTIF_DELAY": (28, "I"),
    "IFLA_BOND_AD_LACP_ACTIVE": (29, "B"),
    "IFLA_BOND_MISSED_MAX": (30, "B"),
    "IFLA_BOND_NS_IP6_TARGET": (31, "ip6"),
    "IFLA_BOND_COUPLED_CONTROL": (32, "B"),
    "IFLA_BOND_BROADCAST_NEIGH": (33, "B"),
    "IFLA_BOND_LACP_STRICT": (34, "B"),
})
AD_INFO: Mapping[str, Tuple[int, str]] = MappingProxyType({
    "IFLA_BOND_AD_INFO_AGGREGATOR": (1, "H"),
    "IFLA_BOND_AD_INFO_NUM_PORTS": (2, "H"),
    "IFLA_BOND_AD_INFO_ACTOR_KEY": (3, "H"),
    "IFLA_BOND_AD_INFO_PARTNER_KEY": (4, "H"),
    "IFLA_BOND_AD_INFO_PARTNER_MAC": (5, "mac"),
})
SLAVE: Mapping[str, Tuple[int, str]] = MappingProxyType({
    "IFLA_BOND_SLAVE_STATE": (1, "B"),
    "IFLA_BOND_SLAVE_MII_STATUS": (2, "B"),
    "IFLA_BOND_SLAVE_LINK_FAILURE_COUNT": (3, "I"),
    "IFLA_BOND_SLAVE_PERM_HWADDR": (4, "mac"),
    "IFLA_BOND_SLAVE_QUEUE_ID": (5, "H"),
    "IFLA_BOND_SLAVE_AD_AGGREGATOR_ID": (6, "H"),
    "IFLA_BOND_SLAVE_AD_ACTOR_OPER_PORT_STATE": (7, "B"),
    "IFLA_BOND_SLAVE_AD_PARTNER_OPER_PORT_STATE": (8, "H"),
    "IFLA_BOND_SLAVE_PRIO": (9, "i"),  # 6.0+
    "IFLA_BOND_SLAVE_ACTOR_PORT_PRIO": (10, "H"),
})

IFLA_LINKINFO = 18
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
NLA_F_NESTED = 0x8000
Wire = Union[int, str, Tuple[str, ...], Dict[str, Any], None]


# --- decoding ------------------------------------------------------------------


def _decode_one(fmt: str, payload: memoryview, nested: Mapping[str, Tuple[int, str]]) -> Wire:
    raw = bytes(payload)
    if fmt in ("ip4", "ip6"):
        size = 4 if fmt == "ip4" else 16
        return tuple(str(ipaddress.ip_address(bytes(p))) for _t, p in rawnl.attrs(raw, 0) if len(p) == size)
    if fmt == "mac":
        return ":".join(f"{b:02x}" for b in raw[:6])
    if fmt == "nest":
        return decode(raw, nested)
    size = struct.calcsize("=" + fmt)
    return struct.unpack_from("=" + fmt, raw)[0] if len(raw) >= size else None


def decode(payload: bytes, table: Mapping[str, Tuple[int, str]]) -> Dict[str, Wire]:
    """The attributes of a nested payload by IFLA name (numbers the table does not know are skipped)."""
    by_number = {num: (name, fmt) for name, (num, fmt) in table.items()}
    out: Dict[str, Wire] = {}
    for kind, value in rawnl.attrs(payload, 0):
        if kind in by_number:
            name, fmt = by_number[kind]
            out[name] = _decode_one(fmt, value, AD_INFO)
    return out


def _payload(attr: Any) -> Optional[bytes]:
    """The payload bytes of an attribute pyroute2 parsed (it keeps the buffer, offset and length)."""
    data = getattr(attr, "data", None) if attr is not None else None
    if data is None:
        return None
    start = attr.offset + rawnl.NLA.size
    return bytes(data[start:attr.offset + attr.length])


def decode_bond(attr: Any) -> Dict[str, Wire]:
    """A bond's ``IFLA_INFO_DATA`` (as pyroute2 returned it) -> ``{"IFLA_BOND_MODE": 4, ...}``."""
    payload = _payload(attr)
    return {} if payload is None else decode(payload, BOND)


def decode_slave(attr: Any) -> Dict[str, Wire]:
    """A port's ``IFLA_INFO_SLAVE_DATA`` (as pyroute2 returned it) -> ``{"IFLA_BOND_SLAVE_STATE": 0, ...}``."""
    payload = _payload(attr)
    return {} if payload is None else decode(payload, SLAVE)


def slave_data(attr: Any) -> Dict[str, Any]:
    """The fields of a port's ``IFLA_INFO_SLAVE_DATA`` the agent uses, by short name (None: not sent)."""
    got = decode_slave(attr)
    if not got:
        return {}
    keys = {"state": "STATE", "mii": "MII_STATUS", "failures": "LINK_FAILURE_COUNT",
            "aggregator": "AD_AGGREGATOR_ID", "actor": "AD_ACTOR_OPER_PORT_STATE",
            "partner": "AD_PARTNER_OPER_PORT_STATE"}
    return {k: got.get(f"IFLA_BOND_SLAVE_{v}") for k, v in keys.items()}


def ad_state_names(bits: Optional[int]) -> list:
    """``0x3d`` -> ``['activity', 'aggregation', 'synchronization', 'collecting', 'distributing']``."""
    return [name for bit, name in AD_STATE_BITS if bits is not None and bits & bit]


# --- encoding ------------------------------------------------------------------


def nla(kind: int, payload: bytes) -> bytes:
    head = rawnl.NLA.pack(rawnl.NLA.size + len(payload), kind)
    return head + payload + b"\0" * (-len(payload) % 4)


def _encode_one(fmt: str, value: Any) -> Tuple[bytes, bool]:
    """(payload, nested?) of one attribute."""
    if fmt in ("ip4", "ip6"):
        addrs: Sequence[str] = value
        return b"".join(nla(i, ipaddress.ip_address(a).packed) for i, a in enumerate(addrs)), True
    if fmt == "mac":
        return bytes(int(b, 16) for b in str(value).split(":")), False
    if fmt == "nest":
        raise ValueError("nested attributes are read-only here")
    return struct.pack("=" + fmt, value), False


def encode(values: Iterable[Tuple[str, Any]], table: Mapping[str, Tuple[int, str]]) -> bytes:
    """``[("IFLA_BOND_MIIMON", 0), ("IFLA_BOND_ARP_IP_TARGET", ("198.18.0.254",))]`` -> attribute bytes."""
    out = b""
    for name, value in values:
        num, fmt = table[name]
        payload, nested = _encode_one(fmt, value)
        out += nla(num | (NLA_F_NESTED if nested else 0), payload)
    return out


def _newlink(index: int, linkinfo: bytes) -> bytes:
    return rawnl.IFINFO.pack(0, 0, index, 0, 0) + nla(IFLA_LINKINFO | NLA_F_NESTED, linkinfo)


def change_bond(index: int, values: Iterable[Tuple[str, Any]]) -> bytes:
    """RTM_NEWLINK body setting ``IFLA_BOND_*`` attributes of bond ``index`` (``ip link set ... type bond``)."""
    data = encode(values, BOND)
    return _newlink(index, nla(IFLA_INFO_KIND, b"bond\0") + nla(IFLA_INFO_DATA | NLA_F_NESTED, data))


def change_slave(index: int, values: Iterable[Tuple[str, Any]]) -> bytes:
    """RTM_NEWLINK body setting ``IFLA_BOND_SLAVE_*`` of port ``index`` (``ip link set ... type bond_slave``)."""
    data = encode(values, SLAVE)
    return _newlink(index, nla(IFLA_INFO_SLAVE_KIND, b"bond\0") + nla(IFLA_INFO_SLAVE_DATA | NLA_F_NESTED, data))
