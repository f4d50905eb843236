"""RoCEv2 ICRC over raw frame bytes (pure, no scapy).

ICRC (IBTA spec, Annex A17 "RoCEv2"): CRC-32 (the Ethernet polynomial, as
``zlib.crc32``) over 8 bytes of 0xff (the masked LRH RoCEv2 lacks), then the
IP header, UDP header, BTH and payload with the variant fields masked to
ones -- IPv4 TOS, TTL and header checksum; IPv6 traffic class, flow label and
hop limit; the UDP checksum; the BTH byte holding FECN/BECN/resv6 -- and
stored after the payload as a little-endian u32 (what Linux rxe and scapy's
``BTH.compute_icrc`` do).

Public API:
    ROCEV2_PORT = 4791; BTH_LEN = 12; ICRC_LEN = 4
    roce_offsets(frame: bytes) -> tuple[int, int] | None   -- (ip offset, BTH offset)
    masked_headers(frame, ip, bth) -> bytearray  -- 8 x 0xff + IP + UDP + BTH[0:5], masked
    icrc(frame: bytes) -> int          -- ICRC of an Ethernet frame (its last 4 bytes excluded)
    icrc_ok(frame: bytes) -> bool      -- the frame's trailing ICRC is right
"""

from __future__ import annotations

import struct
import zlib
from typing import Optional, Tuple

ROCEV2_PORT = 4791
BTH_LEN = 12
ICRC_LEN = 4
_MASKED_LRH = b"\xff" * 8
_U32_LE = struct.Struct("<I")


def roce_offsets(frame: bytes) -> Optional[Tuple[int, int]]:
    """(IP header offset, BTH offset) of a RoCEv2 frame, or None if it is not one."""
    if len(frame) < 14:
        return None
    ethertype = (frame[12] << 8) | frame[13]
    ip = 14
    if ethertype == 0x0800:
        if len(frame) < ip + 20 or frame[ip + 9] != 17:
            return None
        udp = ip + (frame[ip] & 0x0F) * 4
    elif ethertype == 0x86DD:
        if len(frame) < ip + 40 or frame[ip + 6] != 17:
            return None
        udp = ip + 40
    else:
        return None
    if len(frame) < udp + 8 + BTH_LEN + ICRC_LEN or (frame[udp + 2] << 8 | frame[udp + 3]) != ROCEV2_PORT:
        return None
    return ip, udp + 8


def masked_headers(frame: bytes, ip: int, bth: int) -> bytearray:
    """8 x 0xff + IP + UDP + the first 5 BTH bytes, variant fields set to ones."""
    hdr = bytearray(_MASKED_LRH + frame[ip : bth + 5])
    i = len(_MASKED_LRH)
    udp = i + (bth - 8 - ip)
    if frame[ip] >> 4 == 4:
        hdr[i + 1] = 0xFF  # TOS
        hdr[i + 8] = 0xFF  # TTL
        hdr[i + 10 : i + 12] = b"\xff\xff"  # header checksum
    else:
        hdr[i] |= 0x0F  # traffic class (high nibble)
        hdr[i + 1 : i + 4] = b"\xff\xff\xff"  # traffic class (low nibble), flow label
        hdr[i + 7] = 0xFF  # hop limit
    hdr[udp + 6 : udp + 8] = b"\xff\xff"  # UDP checksum
    hdr[-1] = 0xFF  # BTH byte 4: FECN, BECN, resv6
    return hdr


def icrc(frame: bytes) -> int:
    """The ICRC the frame should carry (computed over all but its last 4 bytes)."""
    offs = roce_offsets(frame)
    if offs is None:
        raise ValueError("not an Ethernet/IP/UDP:4791 frame")
    ip, bth = offs
    crc = zlib.crc32(masked_headers(frame, ip, bth))
    return zlib.crc32(memoryview(frame)[bth + 5 : len(frame) - ICRC_LEN], crc) & 0xFFFFFFFF


def icrc_ok(frame: bytes) -> bool:
    try:
        want = icrc(frame)
    except ValueError:
        return False
    return _U32_LE.unpack_from(frame, len(frame) - ICRC_LEN)[0] == want
