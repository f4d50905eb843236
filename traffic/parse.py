"""Fast dissection of a received Ethernet frame into its stream fields (pure).

Public API:
    StreamFrame(kind, sport, dport, stream_id, flow_id, seq, tx_ns, psn, icrc_ok)   NamedTuple
    parse_stream_frame(frame: bytes, *, check_icrc=True) -> StreamFrame | None

None means "not a stream packet": not IPv4/IPv6 (up to two VLAN tags are
skipped) carrying UDP or TCP, an IPv4 fragment other than the first, or no
stream magic where the stream header belongs (right after the UDP/TCP header,
or after the BTH when the UDP destination port is 4791).
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional

from traffic.icrc import BTH_LEN, ROCEV2_PORT, icrc_ok
from traffic.stream import STREAM_HEADER, STREAM_HEADER_LEN, STREAM_MAGIC

_PORTS = struct.Struct("!HH")
_VLAN_TPIDS = (0x8100, 0x88A8)


class StreamFrame(NamedTuple):
    kind: str  # "udp" | "tcp" | "roce"
    sport: int
    dport: int
    stream_id: int
    flow_id: int
    seq: int
    tx_ns: int
    psn: Optional[int]
    icrc_ok: Optional[bool]


def parse_stream_frame(frame: bytes, *, check_icrc: bool = True) -> Optional[StreamFrame]:
    n = len(frame)
    if n < 14 + 20 + 8 + STREAM_HEADER_LEN:
        return None
    off = 12
    ethertype = frame[off] << 8 | frame[off + 1]
    while ethertype in _VLAN_TPIDS and off < 20:
        off += 4
        ethertype = frame[off] << 8 | frame[off + 1]
    ip = off + 2
    if ethertype == 0x0800:
        if frame[ip + 6] & 0x1F or frame[ip + 7]:
            return None  # a non-first fragment
        proto = frame[ip + 9]
        l4 = ip + (frame[ip] & 0x0F) * 4
    elif ethertype == 0x86DD:
        proto = frame[ip + 6]
        l4 = ip + 40
    else:
        return None
    if l4 + 20 > n:
        return None
    sport, dport = _PORTS.unpack_from(frame, l4)
    psn = ok = None
    if proto == 17:
        hdr = l4 + 8
        if dport == ROCEV2_PORT:
            kind = "roce"
            psn = int.from_bytes(frame[hdr + 9 : hdr + 12], "big")
            hdr += BTH_LEN
            if check_icrc:
                ok = icrc_ok(frame)
        else:
            kind = "udp"
    elif proto == 6:
        kind = "tcp"
        hdr = l4 + (frame[l4 + 12] >> 4) * 4
    else:
        return None
    if hdr + STREAM_HEADER_LEN > n or frame[hdr : hdr + 4] != STREAM_MAGIC:
        return None
    _, stream_id, flow_id, seq, tx_ns, _, _ = STREAM_HEADER.unpack_from(frame, hdr)
    return StreamFrame(kind, sport, dport, stream_id, flow_id, seq, tx_ns, psn, ok)
