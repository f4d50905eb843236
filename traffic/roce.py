"""RoCEv2 frames (scapy's ``BTH`` over UDP port 4791) and their templates.

The ICRC itself is computed in ``traffic.icrc`` (re-exported here).

Per packet the PSN (= seq mod 2**24), seq and tx_ns change, so the ICRC is
recomputed: the CRC state after the constant masked prefix (up to and
including the masked BTH byte 4) is computed once per template, and each
packet costs one ``zlib.crc32`` over the rest of the BTH and the payload.

Public API:
    RC_SEND_ONLY = 0x04
    bth_for(flow, payload: bytes, *, psn=0, opcode=RC_SEND_ONLY) -> scapy BTH / Raw
    icrc, icrc_ok, roce_offsets        -- re-exported from traffic.icrc
    build_roce_template(flow, stream_id, *, payload_len=32, opcode=RC_SEND_ONLY) -> FrameTemplate
"""

from __future__ import annotations

import struct
import zlib

from scapy.contrib.roce import BTH
from scapy.packet import Packet, Raw

from traffic.flows import Flow
from traffic.icrc import BTH_LEN, ICRC_LEN, ROCEV2_PORT, icrc, icrc_ok, masked_headers, roce_offsets
from traffic.packets import FrameTemplate, scapy_frame
from traffic.stream import SEQ_OFF, STREAM_HEADER_LEN, pack_stream_header

__all__ = [
    "BTH_LEN",
    "ICRC_LEN",
    "RC_SEND_ONLY",
    "ROCEV2_PORT",
    "bth_for",
    "build_roce_template",
    "icrc",
    "icrc_ok",
    "roce_offsets",
]

RC_SEND_ONLY = 0x04
_U32_LE = struct.Struct("<I")
_U32_BE = struct.Struct("!I")
_SEQ_TS = struct.Struct("!QQ")


def bth_for(flow: Flow, payload: bytes, *, psn: int = 0, opcode: int = RC_SEND_ONLY) -> Packet:
    """BTH (dest QP = ``flow.qpn``) + payload padded to a multiple of 4; ICRC left to scapy."""
    pad = (-len(payload)) % 4
    return BTH(opcode=opcode, padcount=pad, dqpn=flow.qpn, psn=psn & 0xFFFFFF) / Raw(payload + bytes(pad))


def build_roce_template(
    flow: Flow, stream_id: int, *, payload_len: int = STREAM_HEADER_LEN, opcode: int = RC_SEND_ONLY
) -> FrameTemplate:
    """A RoCEv2 template: ``stamp(seq, tx_ns)`` sets PSN = seq mod 2**24, seq, tx_ns, ICRC."""
    payload = pack_stream_header(stream_id, flow.flow_id, 0, 0) + bytes(payload_len - STREAM_HEADER_LEN)
    pkt = scapy_frame(flow, payload, psn=0)
    pkt[BTH].opcode = opcode
    frame = bytearray(bytes(pkt))
    offs = roce_offsets(bytes(frame))
    assert offs is not None
    ip, bth = offs
    stream_off = bth + BTH_LEN
    psn_off = bth + 8
    seq_off = stream_off + SEQ_OFF
    icrc_off = len(frame) - ICRC_LEN
    ack_bits = frame[psn_off] << 24  # keep the AckReq/resv7 byte
    prefix_crc = zlib.crc32(masked_headers(bytes(frame), ip, bth))
    tail = memoryview(frame)[bth + 5 : icrc_off]  # a view: sees every patch
    pack_psn = _U32_BE.pack_into
    pack_seq_ts = _SEQ_TS.pack_into
    pack_icrc = _U32_LE.pack_into
    crc32 = zlib.crc32

    def stamp(seq: int, tx_ns: int) -> bytearray:
        pack_psn(frame, psn_off, ack_bits | (seq & 0xFFFFFF))
        pack_seq_ts(frame, seq_off, seq, tx_ns)
        pack_icrc(frame, icrc_off, crc32(tail, prefix_crc))
        return frame

    return FrameTemplate(flow, stream_id, frame, stream_off, stamp)
