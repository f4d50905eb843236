"""rtnetlink request bodies as bytes, for batches (``nlpipe.transact``): pure, no sockets, no pyroute2.

What a lab builds per function (a VF or the RDMA function) is a handful of small requests; sent one at a
time through pyroute2 each is a round trip and a generic encode/decode, which under TCG costs more than
the kernel's work. These are the bodies (the message after the nlmsghdr), so many go in one ``sendmsg``::

    transact(ipr, [(RTM_NEWLINK, CREATE, veth_pair("vf0-rep", rep_mac, "vf0", vf_mac, vf_ns_fd)),
                   (RTM_NEWLINK, 0, link_alias("vf0-rep", "testbed:ab"))])

Layouts are the kernel's (``include/uapi/linux/{rtnetlink,if_link,veth,if_addr,neighbour}.h``).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from testbed.rawnl import HDR, IFINFO, NLA, align, attrs

RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWNEIGH = 28
RTM_NEWQDISC = 36

NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
CREATE = NLM_F_CREATE | NLM_F_EXCL  # a new object; EEXIST if it is there

IFF_UP = 0x1
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
NLA_F_NESTED = 0x8000
RTEXT_FILTER_SKIP_STATS = 1 << 3

IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
IFA_LOCAL = 2
IFA_ADDRESS = 1

NDMSG = struct.Struct("=BxxxiHBB")  # family, pad, ifindex, state, flags, type
NDA_DST = 1
NDA_LLADDR = 2
NUD_PERMANENT = 0x80

TCMSG = struct.Struct("=BxxxiIII")  # family, pad, ifindex, handle, parent, info
TCA_KIND = 1
TC_H_CLSACT = 0xFFFFFFF1
TC_H_CLSACT_HANDLE = 0xFFFF0000  # clsact's own handle (ffff:), as tc gives it


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = NLA.pack(NLA.size + len(payload), kind) + payload
    return raw + b"\0" * (align(len(raw)) - len(raw))


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def _str(value: str) -> bytes:
    return value.encode() + b"\0"


def _mac(value: str) -> bytes:
    return bytes.fromhex(value.replace(":", ""))


def _ifinfo(index: int = 0, up: bool | None = None) -> bytes:
    """struct ifinfomsg: by index (0: by the IFLA_IFNAME that follows); ``up`` sets/clears IFF_UP."""
    return IFINFO.pack(0, 0, index, IFF_UP if up else 0, IFF_UP if up is not None else 0)


def veth_pair(name: str, mac: str, peer: str, peer_mac: str, peer_netns_fd: int) -> bytes:
    """RTM_NEWLINK (with ``CREATE``): veth ``name`` here, its peer ``peer`` made directly in the namespace of
    ``peer_netns_fd``, both with their MAC, both down: the kernel refuses IFF_UP at creation (ENOTCONN,
    the peer is not yet linked when the first end is opened), so ``link_set`` brings them up."""
    peer_info = _ifinfo() + attr(IFLA_IFNAME, _str(peer)) + attr(IFLA_ADDRESS, _mac(peer_mac)) \
        + attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
    info = nested(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"veth"),
                  nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info)))
    return _ifinfo() + attr(IFLA_IFNAME, _str(name)) + attr(IFLA_ADDRESS, _mac(mac)) + info


def link_set(name: str, *, alias: str | None = None, up: bool | None = None) -> bytes:
    """RTM_NEWLINK (no flags) for the interface named ``name``: its ifalias (the lab's mark), and with ``up``
    set or clear IFF_UP (no other flag changes)."""
    return _ifinfo(up=up) + attr(IFLA_IFNAME, _str(name)) + (attr(IFLA_IFALIAS, alias.encode()) if alias else b"")


def getlink(name: str) -> bytes:
    """RTM_GETLINK (no dump): the interface named ``name``, without statistics."""
    return _ifinfo() + attr(IFLA_IFNAME, _str(name)) + attr(IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_SKIP_STATS))


IFA_F_NODAD = 0x02  # an IPv6 address without duplicate address detection: usable at once


def addr(index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bytes:
    """RTM_NEWADDR (with ``CREATE``): ``iface`` (address/prefix) on interface ``index``, as ``ip addr add``
    (no broadcast address given, like it). An IPv6 address skips duplicate address detection
    (``nodad``): a lab's addresses are unique by construction, and the RDMA function shares its bond's."""
    ip = iface.ip.packed
    if iface.version == 6:
        return IFADDRMSG.pack(socket.AF_INET6, iface.network.prefixlen, IFA_F_NODAD, 0, index) \
            + attr(IFA_LOCAL, ip) + attr(IFA_ADDRESS, ip)
    return IFADDRMSG.pack(socket.AF_INET, iface.network.prefixlen, 0, 0, index) + attr(IFA_LOCAL, ip) \
        + attr(IFA_ADDRESS, ip)


def neigh(index: int, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, mac: str) -> bytes:
    """RTM_NEWNEIGH (with ``CREATE``): a permanent neighbour ``ip`` (IPv4 or IPv6) -> ``mac`` on ``index``."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return NDMSG.pack(family, index, NUD_PERMANENT, 0, 0) + attr(NDA_DST, ip.packed) + attr(NDA_LLADDR, _mac(mac))


def clsact(index: int) -> bytes:
    """RTM_NEWQDISC (with ``CREATE``): the clsact qdisc on interface ``index``."""
    return TCMSG.pack(socket.AF_UNSPEC, index, TC_H_CLSACT_HANDLE, TC_H_CLSACT, 0) + attr(TCA_KIND, b"clsact\0")


RT_SCOPE_UNIVERSE = 0


def ifaddr_dump() -> bytes:
    """RTM_GETADDR dump request body: every address of the namespace (IPv4 and IPv6)."""
    return IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def ifaddr(msg: bytes) -> str | None:
    """``"198.18.0.2/23"`` or ``"2001:2::2/64"`` from a raw RTM_NEWADDR message (its IFA_LOCAL, else
    IFA_ADDRESS); None for an address of narrower than global scope (IPv6 link-local, loopback)."""
    family, prefixlen, _flags, scope, _index = IFADDRMSG.unpack_from(msg, HDR.size)
    if scope != RT_SCOPE_UNIVERSE:
        return None
    found = dict((t, bytes(p)) for t, p in attrs(msg, HDR.size + IFADDRMSG.size) if t in (IFA_LOCAL, IFA_ADDRESS))
    raw = found.get(IFA_LOCAL) or found[IFA_ADDRESS]
    ip = ipaddress.IPv6Address(raw) if family == socket.AF_INET6 else ipaddress.IPv4Address(raw)
    return f"{ip}/{prefixlen}"
