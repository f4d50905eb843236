"""Raw netlink, below both ``testbed.tc`` and the agent: header structs, the attribute walk, ``/run/netns``.

Pure byte handling (no sockets, no pyroute2): the layers above parse only the
few attributes they need from raw messages, which is much cheaper under TCG
than pyroute2's generic decoder.

::

    for msg_type, flags, seq, msg in messages(datagram):
        name = attr_str(msg, HDR.size + IFINFO.size, IFLA_IFNAME)
"""

from __future__ import annotations

import struct
from typing import Iterator, Optional, Tuple

NETNS_DIR = "/run/netns"  # where `ip netns` (and pyroute2) bind-mount named namespaces

HDR = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
IFINFO = struct.Struct("=BxHiII")  # struct ifinfomsg: family, type, index, flags, change
NLA = struct.Struct("=HH")  # struct nlattr: len, type
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
IFF_UP = 0x1
IFLA_IFNAME = 3
IFLA_MASTER = 10
IFLA_OPERSTATE = 16
IFLA_LINKINFO = 18
IFLA_CARRIER = 33
IFLA_EXT_MASK = 29
RTEXT_FILTER_SKIP_STATS = 1 << 3
# IF_OPER_* (include/uapi/linux/if.h), named as pyroute2 and `ip` print them
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")


def align(n: int) -> int:
    """NLMSG_ALIGN / NLA_ALIGN: up to a multiple of 4."""
    return (n + 3) & ~3


def messages(data: bytes) -> Iterator[Tuple[int, int, int, memoryview]]:
    """Split a datagram into (type, flags, seq, whole message incl. header); a short length ends it."""
    view = memoryview(data)
    offset = 0
    while offset + HDR.size <= len(data):
        length, msg_type, flags, seq, _ = HDR.unpack_from(data, offset)
        if length < HDR.size:
            break
        yield msg_type, flags, seq, view[offset : min(offset + length, len(data))]
        offset += align(length)


def attrs(msg: bytes, offset: int, end: Optional[int] = None) -> Iterator[Tuple[int, memoryview]]:
    """The attributes from ``offset`` to ``end`` (default: the message's end): (type, payload)."""
    view = memoryview(msg)
    end = len(msg) if end is None else min(end, len(msg))
    while offset + NLA.size <= end:
        nla_len, nla_type = NLA.unpack_from(msg, offset)
        if nla_len < NLA.size:
            return
        yield nla_type & NLA_TYPE_MASK, view[offset + NLA.size : min(offset + nla_len, end)]
        offset += align(nla_len)


def attr_str(msg: bytes, offset: int, wanted: int, end: Optional[int] = None) -> Optional[str]:
    """The first attribute ``wanted`` as a NUL-terminated string, or None."""
    for nla_type, payload in attrs(msg, offset, end):
        if nla_type == wanted:
            return bytes(payload).split(b"\0", 1)[0].decode(errors="replace")
    return None


def header(length: int, msg_type: int, flags: int, seq: int) -> bytes:
    """An nlmsghdr for a body of ``length`` bytes."""
    return HDR.pack(HDR.size + length, msg_type, flags, seq, 0)


def link_dump_body() -> bytes:
    """RTM_GETLINK dump request body: any family, no stats (cheap with many interfaces)."""
    return IFINFO.pack(0, 0, 0, 0, 0) + NLA.pack(8, IFLA_EXT_MASK) + struct.pack("=I", RTEXT_FILTER_SKIP_STATS)


def link_set_up_body(ifname: str, up: bool) -> bytes:
    """RTM_SETLINK body: set (or clear) IFF_UP of the interface named ``ifname`` (ifi_index 0: by name),
    as ``ip link set NAME up|down`` does; no other flag changes."""
    name = ifname.encode() + b"\0"
    attr = NLA.pack(NLA.size + len(name), IFLA_IFNAME) + name
    return IFINFO.pack(0, 0, 0, IFF_UP if up else 0, IFF_UP) + attr + b"\0" * (align(len(attr)) - len(attr))


def link_name(msg: bytes) -> Optional[str]:
    """IFLA_IFNAME of a raw RTM_NEWLINK/RTM_DELLINK message."""
    return attr_str(msg, HDR.size + IFINFO.size, IFLA_IFNAME)


def link_index(msg: bytes) -> int:
    """ifi_index of a raw RTM_NEWLINK/RTM_DELLINK message."""
    return IFINFO.unpack_from(msg, HDR.size)[2]


def operstate(code: int) -> str:
    """IFLA_OPERSTATE's value by name (``"UP"``), as pyroute2 and ``ip`` print it."""
    return OPERSTATES[code] if code < len(OPERSTATES) else str(code)
