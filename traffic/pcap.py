"""A classic pcap writer, nanosecond timestamps, Ethernet or Linux SLL2 link type.

``sll2`` (LINKTYPE_LINUX_SLL2, 276) records the ingress interface index and
the packet type of each frame, so a capture taken on a namespace-wide socket
still tells which wire carried every frame (tcpdump/wireshark show it).

Public API:
    LINKTYPES = {"ether": 1, "sll2": 276}
    PcapWriter(path, *, linktype="ether", snaplen=65535)   -- context manager
    PcapWriter.write(frame: bytes, ts_ns: int, *, ifindex=0, pkttype=0) -> None
    PcapWriter.close() -> None;  PcapWriter.count: int
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Optional

from testbed.errors import UsageError

LINKTYPES = {"ether": 1, "sll2": 276}
_MAGIC_NS = 0xA1B23C4D
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_SLL2 = struct.Struct("!HHIHBB8s")
ARPHRD_ETHER = 1


class PcapWriter:
    def __init__(self, path: str, *, linktype: str = "ether", snaplen: int = 65535) -> None:
        if linktype not in LINKTYPES:
            raise UsageError(f"pcap {path}: unknown link type {linktype!r}", fix="use ether or sll2")
        self.path = path
        self.linktype = linktype
        self.snaplen = snaplen
        self.count = 0
        self._f: Optional[BinaryIO] = open(path, "wb")  # closed by close()
        self._f.write(_GLOBAL.pack(_MAGIC_NS, 2, 4, 0, 0, snaplen, LINKTYPES[linktype]))

    def write(self, frame: bytes, ts_ns: int, *, ifindex: int = 0, pkttype: int = 0) -> None:
        if self._f is None:
            raise ValueError(f"pcap {self.path}: closed")
        if self.linktype == "sll2":
            ethertype = (frame[12] << 8 | frame[13]) if len(frame) >= 14 else 0
            data = _SLL2.pack(ethertype, 0, ifindex, ARPHRD_ETHER, pkttype, 6, bytes(frame[6:12]))
            data += bytes(frame[14:])
        else:
            data = bytes(frame)
        cap = data[: self.snaplen]
        sec, nsec = divmod(ts_ns, 1_000_000_000)
        self._f.write(_RECORD.pack(sec, nsec, len(cap), len(data)))
        self._f.write(cap)
        self.count += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
