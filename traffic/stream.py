"""The sequenced-stream header: format, packing, parsing (pure, no scapy).

Stream header (32 bytes, network byte order), the first bytes of the L4
payload (after the BTH for RoCEv2)::

    0  magic     4s  b"TBSQ"
    4  stream_id u32
    8  flow_id   u32
    12 seq       u64
    20 tx_ns     u64   CLOCK_REALTIME of the send, ns
    28 fix       u16   checksum compensation (see ``checksum_fix``)
    30 reserved  u16   zero

Public API:
    STREAM_MAGIC: bytes; STREAM_HEADER: struct.Struct; STREAM_HEADER_LEN = 32; SEQ_OFF = 12
    StreamHeader(stream_id, flow_id, seq, tx_ns)                                 NamedTuple
    pack_stream_header(stream_id, flow_id, seq, tx_ns, fix=0) -> bytes
    parse_stream_header(buf, offset=0) -> StreamHeader | None
    checksum_fix(seq, tx_ns) -> int
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional

STREAM_MAGIC = b"TBSQ"
STREAM_HEADER = struct.Struct("!4sIIQQHH")
STREAM_HEADER_LEN = STREAM_HEADER.size  # 32
SEQ_OFF = 12  # of seq within the stream header; tx_ns follows at 20, fix at 28


class StreamHeader(NamedTuple):
    stream_id: int
    flow_id: int
    seq: int
    tx_ns: int


def pack_stream_header(stream_id: int, flow_id: int, seq: int, tx_ns: int, fix: int = 0) -> bytes:
    return STREAM_HEADER.pack(STREAM_MAGIC, stream_id, flow_id, seq, tx_ns, fix, 0)


def parse_stream_header(buf: bytes, offset: int = 0) -> Optional[StreamHeader]:
    """The stream header at ``buf[offset:]``, or None when the magic is not there."""
    if len(buf) < offset + STREAM_HEADER_LEN or buf[offset : offset + 4] != STREAM_MAGIC:
        return None
    _, stream_id, flow_id, seq, tx_ns, _, _ = STREAM_HEADER.unpack_from(buf, offset)
    return StreamHeader(stream_id, flow_id, seq, tx_ns)


def checksum_fix(seq: int, tx_ns: int) -> int:
    """The ``fix`` word that keeps the one's-complement sum of the header constant."""
    return 0xFFFF - (seq + tx_ns) % 0xFFFF
