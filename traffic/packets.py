"""Packet builders: prebuilt frame templates of flows carrying the stream header.

scapy builds each flow's frame once; per packet only the sequence number and
the send timestamp are patched into the prebuilt bytes (``struct.pack_into``
at a known offset), so a sender can go at hundreds of thousands of packets/s.

The stream header (``traffic.stream``) is the start of the L4 payload
(after the BTH for RoCEv2); ``Flow``/``flows`` live in ``traffic.flows`` and
are re-exported here, as are the stream names.

Checksums: a UDP-over-IPv4 frame carries UDP checksum 0 unless
``l4_checksum=True``.  Where a checksum is kept (TCP, UDP over IPv6, or on
request) the ``fix`` word is set to ``0xffff - (seq + tx_ns) % 0xffff`` so that
the one's-complement sum of the patched words stays that of the template
(2**16 == 1 mod 0xffff): the checksum in the template stays valid for every
packet without being touched.

Public API (besides the re-exported Flow, flows, stream names):
    FrameTemplate: .flow, .stream_id, .frame (bytearray), .stream_off, .stamp(seq, tx_ns)
    build_template(flow, stream_id, *, payload_len=32, l4_checksum=None) -> FrameTemplate
    build_templates(flows, stream_id, **kw) -> list[FrameTemplate]
    scapy_frame(flow, payload: bytes, *, l4_checksum=None, psn=0) -> scapy Packet
"""

from __future__ import annotations

import struct
from typing import Callable, List, Optional, Sequence

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from testbed.errors import UsageError
from traffic.flows import DEFAULT_DST_MAC, DEFAULT_SRC_MAC, ROCEV2_PORT, Flow, flows
from traffic.stream import (
    SEQ_OFF,
    STREAM_HEADER,
    STREAM_HEADER_LEN,
    STREAM_MAGIC,
    StreamHeader,
    checksum_fix,
    pack_stream_header,
    parse_stream_header,
)

__all__ = [
    "DEFAULT_DST_MAC",
    "DEFAULT_SRC_MAC",
    "ROCEV2_PORT",
    "SEQ_OFF",
    "STREAM_HEADER",
    "STREAM_HEADER_LEN",
    "STREAM_MAGIC",
    "Flow",
    "FrameTemplate",
    "StreamHeader",
    "build_template",
    "build_templates",
    "checksum_fix",
    "flows",
    "pack_stream_header",
    "parse_stream_header",
    "scapy_frame",
]

_SEQ_TS = struct.Struct("!QQ")
_SEQ_TS_FIX = struct.Struct("!QQH")


def _uses_l4_checksum(flow: Flow, l4_checksum: Optional[bool]) -> bool:
    if flow.proto == "tcp" or (flow.proto == "udp" and ":" in flow.src_ip):
        return True  # TCP always; UDP over IPv6 must carry one
    if flow.proto == "roce":
        return False  # RoCEv2 sends UDP checksum 0; the ICRC protects the packet
    return bool(l4_checksum)


def scapy_frame(flow: Flow, payload: bytes, *, l4_checksum: Optional[bool] = None, psn: int = 0) -> Packet:
    """The scapy packet of ``flow`` carrying ``payload`` (the reference build)."""
    eth = Ether(src=flow.src_mac, dst=flow.dst_mac)
    if ":" in flow.src_ip:
        l3 = IPv6(src=flow.src_ip, dst=flow.dst_ip, hlim=64)
    else:
        l3 = IP(src=flow.src_ip, dst=flow.dst_ip, ttl=64, id=0, flags="DF")
    if flow.proto == "tcp":
        l4 = TCP(sport=flow.sport, dport=flow.dport, flags="PA", seq=1, ack=1, window=65535)
        return eth / l3 / l4 / Raw(payload)
    csum = None if _uses_l4_checksum(flow, l4_checksum) else 0
    udp = UDP(sport=flow.sport, dport=flow.dport, chksum=csum)
    if flow.proto == "roce":
        from traffic.roce import bth_for

        return eth / l3 / udp / bth_for(flow, payload, psn=psn)
    return eth / l3 / udp / Raw(payload)


class FrameTemplate:
    """A prebuilt frame of one flow; ``stamp(seq, tx_ns)`` patches it in place.

    ``stamp`` returns the (same) bytearray, ready for ``socket.send``; copy it
    if you keep it.  ``stream_off`` is the offset of the stream header.
    """

    __slots__ = ("flow", "stream_id", "frame", "stream_off", "stamp")

    def __init__(
        self,
        flow: Flow,
        stream_id: int,
        frame: bytearray,
        stream_off: int,
        stamp: Callable[[int, int], bytearray],
    ) -> None:
        self.flow = flow
        self.stream_id = stream_id
        self.frame = frame
        self.stream_off = stream_off
        self.stamp = stamp


def _stamp_plain(buf: bytearray, off: int) -> Callable[[int, int], bytearray]:
    pack = _SEQ_TS.pack_into

    def stamp(seq: int, tx_ns: int) -> bytearray:
        pack(buf, off, seq, tx_ns)
        return buf

    return stamp


def _stamp_fixed(buf: bytearray, off: int) -> Callable[[int, int], bytearray]:
    pack = _SEQ_TS_FIX.pack_into

    def stamp(seq: int, tx_ns: int) -> bytearray:
        pack(buf, off, seq, tx_ns, 0xFFFF - (seq + tx_ns) % 0xFFFF)
        return buf

    return stamp


def build_template(
    flow: Flow,
    stream_id: int,
    *,
    payload_len: int = STREAM_HEADER_LEN,
    l4_checksum: Optional[bool] = None,
) -> FrameTemplate:
    """Build ``flow``'s frame once (seq 0, tx_ns 0) and return its template.

    ``payload_len`` is the L4 payload (after the BTH for RoCEv2) including the
    32-byte stream header; the rest is zeros.
    """
    if payload_len < STREAM_HEADER_LEN:
        raise UsageError(
            f"flow {flow.flow_id}: payload_len {payload_len} < {STREAM_HEADER_LEN}",
            fix="the stream header alone takes 32 bytes",
        )
    if flow.proto == "roce":
        from traffic.roce import build_roce_template

        return build_roce_template(flow, stream_id, payload_len=payload_len)
    payload = pack_stream_header(stream_id, flow.flow_id, 0, 0)
    payload += bytes(payload_len - STREAM_HEADER_LEN)
    frame = bytearray(bytes(scapy_frame(flow, payload, l4_checksum=l4_checksum)))
    stream_off = len(frame) - payload_len
    assert frame[stream_off : stream_off + 4] == STREAM_MAGIC
    seq_off = stream_off + SEQ_OFF
    if _uses_l4_checksum(flow, l4_checksum):
        return FrameTemplate(flow, stream_id, frame, stream_off, _stamp_fixed(frame, seq_off))
    return FrameTemplate(flow, stream_id, frame, stream_off, _stamp_plain(frame, seq_off))


def build_templates(flow_list: Sequence[Flow], stream_id: int, **kwargs) -> List[FrameTemplate]:
    return [build_template(f, stream_id, **kwargs) for f in flow_list]
