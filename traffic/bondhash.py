"""The Linux bonding driver's transmit hash (kernel 6.1), to predict a frame's port.

balance-xor and 802.3ad send a frame on ``usable_slaves[hash % count]``
(``bond_xmit_3ad_xor_slave_get``), the usable slaves being those that can
transmit, in the order they were enslaved.  The hash (``__bond_xmit_hash`` in
drivers/net/bonding/bond_main.c, 6.1), on a little-endian machine:

- ``layer2``:   eth = dst_mac[5] ^ src_mac[5] ^ ethertype   (``bond_eth_hash``;
  the ethertype as a number, ``be16_to_cpu(h_proto)``, e.g. 0x0800 -- checked
  against Debian's 6.1 kernel, where a vendor tree without the ethertype
  mispredicted)
- ``layer2+3``: eth ^ ip, where for IPv4/IPv6 (else: layer2)
  ip(h) = h ^ u32le(dst) ^ u32le(src); h ^= h >> 16; h ^= h >> 8
  (IPv6 addresses fold to the XOR of their four little-endian u32 words)
- ``layer3+4``: ip(l4) >> 1, where l4 = the first 4 bytes of the transport
  header read little-endian (sport | dport for TCP/UDP/SCTP/DCCP/UDP-Lite, the
  SPI for ESP, bytes 4..8 for AH, 0 for other protocols and IPv4 fragments);
  ICMP/ICMPv6 echo and timestamp messages use type | code << 8 | id << 16
  instead (id in host order, 1 when 0); ICMP errors hash the addresses and
  ports of the packet they quote.  Non-IP frames: layer2.
  ``>> 1`` discards the low bit because of the common even-port pattern.

Only the IPv6 header's own next-header is looked at (no extension-header
walk), as the bonding dissector does.  VLAN tags in the frame are not
modelled; encap2+3/encap3+4/vlan+srcmac are not supported.

Public API:
    POLICIES = ("layer2", "layer2+3", "layer3+4")
    HashFields(src_mac, dst_mac, ethertype, src_ip, dst_ip, ip_proto, l4, icmp)   frozen dataclass
    fields_from_frame(frame: bytes) -> HashFields
    fields_from_flow(flow: traffic.flows.Flow) -> HashFields
    xmit_hash(policy, what) -> int                   what: frame bytes | Flow | HashFields
    predict_port(policy, what, n_slaves) -> int      index into the usable slaves
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from testbed.errors import UsageError
from traffic.flows import Flow

POLICIES = ("layer2", "layer2+3", "layer3+4")
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58
_PORTS_OFFSET = {6: 0, 17: 0, 33: 0, 50: 0, 132: 0, 136: 0, 51: 4}  # proto_ports_offset()
_ICMP_HAS_ID = {0, 8, 13, 14, 128, 129}  # echo(reply), timestamp(reply), ICMPv6 echo
_ICMP_ERR = {3, 4, 5, 11, 12}  # icmp_is_err()
_ICMPV6_ERR = {1, 2, 3, 4}  # icmpv6_is_err()
_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class HashFields:
    """What the hash reads from a frame."""

    src_mac: bytes
    dst_mac: bytes
    ethertype: int
    src_ip: Optional[bytes] = None  # 4 or 16 bytes; None: not IP
    dst_ip: Optional[bytes] = None
    ip_proto: int = -1  # -1: unknown (IPv4 fragment)
    l4: int = 0  # the 4 transport-header bytes the hash takes, read little-endian
    icmp: Optional[Tuple[int, int, int]] = None  # (type, code, id) for ICMP with an id


def _mac(text: str) -> bytes:
    return bytes(int(b, 16) for b in text.split(":"))


def _u32le(b: bytes) -> int:
    if len(b) == 4:
        return int.from_bytes(b, "little")
    w = struct.unpack("<4I", b)
    return w[0] ^ w[1] ^ w[2] ^ w[3]


def fields_from_flow(flow: Flow) -> HashFields:
    src = ipaddress.ip_address(flow.src_ip)
    dst = ipaddress.ip_address(flow.dst_ip)
    proto = 6 if flow.proto == "tcp" else 17
    l4 = int.from_bytes(struct.pack("!HH", flow.sport, flow.dport), "little")
    return HashFields(
        src_mac=_mac(flow.src_mac),
        dst_mac=_mac(flow.dst_mac),
        ethertype=ETH_P_IP if src.version == 4 else ETH_P_IPV6,
        src_ip=src.packed,
        dst_ip=dst.packed,
        ip_proto=proto,
        l4=l4,
    )


def _ip_layer(frame: bytes, ethertype: int, off: int, proto: int):
    """bond_flow_ip(): (src, dst, next offset, ip_proto), or None when truncated."""
    if ethertype == ETH_P_IP:
        if len(frame) < off + 20:
            return None
        frag = (frame[off + 6] << 8 | frame[off + 7]) & 0x3FFF  # MF | fragment offset
        if not frag:
            proto = frame[off + 9]
        return frame[off + 12 : off + 16], frame[off + 16 : off + 20], off + (frame[off] & 15) * 4, proto
    if len(frame) < off + 40:
        return None
    return frame[off + 8 : off + 24], frame[off + 24 : off + 40], off + 40, frame[off + 6]


def _l4_word(frame: bytes, off: int, proto: int) -> int:
    poff = _PORTS_OFFSET.get(proto)
    if poff is None or len(frame) < off + poff + 4:
        return 0
    return int.from_bytes(frame[off + poff : off + poff + 4], "little")


def fields_from_frame(frame: bytes) -> HashFields:
    frame = bytes(frame)
    if len(frame) < 14:
        raise ValueError(f"frame of {len(frame)} bytes is shorter than an Ethernet header")
    dst_mac, src_mac = frame[0:6], frame[6:12]
    ethertype = frame[12] << 8 | frame[13]
    base = HashFields(src_mac=src_mac, dst_mac=dst_mac, ethertype=ethertype)
    if ethertype not in (ETH_P_IP, ETH_P_IPV6):
        return base
    ip = _ip_layer(frame, ethertype, 14, -1)
    if ip is None:
        return base
    src, dst, off, proto = ip
    l4 = _l4_word(frame, off, proto) if proto >= 0 else 0
    icmp = None
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and len(frame) >= off + 8:
        itype, code = frame[off], frame[off + 1]
        if itype in _ICMP_HAS_ID:
            ident = frame[off + 4] << 8 | frame[off + 5]
            icmp = (itype, code, ident or 1)
        errors = _ICMP_ERR if proto == IPPROTO_ICMP else _ICMPV6_ERR
        if itype in errors:  # hash the quoted packet's addresses and ports
            inner = _ip_layer(frame, ethertype, off + 8, proto)
            if inner is not None:
                src, dst, ioff, iproto = inner
                l4 = _l4_word(frame, ioff, iproto)
    return HashFields(src_mac, dst_mac, ethertype, src, dst, proto, l4, icmp)


def xmit_hash(policy: str, what: Union[bytes, bytearray, Flow, HashFields]) -> int:
    """The u32 ``bond_xmit_hash`` of a frame (bytes), a ``Flow`` or ``HashFields``."""
    if policy not in POLICIES:
        raise UsageError(f"bond hash: unsupported policy {policy!r}", fix=f"use {', '.join(POLICIES)}")
    if isinstance(what, HashFields):
        f = what
    elif isinstance(what, Flow):
        f = fields_from_flow(what)
    else:
        f = fields_from_frame(what)
    eth = f.dst_mac[5] ^ f.src_mac[5] ^ f.ethertype
    if policy == "layer2" or f.src_ip is None or f.dst_ip is None:
        return eth
    if policy == "layer2+3":
        h = eth
    elif f.icmp is not None and f.icmp[2]:
        h = f.icmp[0] | f.icmp[1] << 8 | f.icmp[2] << 16
    else:
        h = f.l4
    h ^= _u32le(f.dst_ip) ^ _u32le(f.src_ip)
    h ^= h >> 16
    h ^= h >> 8
    h &= _MASK32
    return h >> 1 if policy == "layer3+4" else h


def predict_port(policy: str, what: Union[bytes, bytearray, Flow, HashFields], n_slaves: int) -> int:
    """Index, among the bond's usable slaves in enslave order, of the port that sends ``what``."""
    if n_slaves < 1:
        raise UsageError(f"bond hash: {n_slaves} usable slaves", fix="a bond needs a slave up")
    return xmit_hash(policy, what) % n_slaves
