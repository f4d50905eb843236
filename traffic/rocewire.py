"""Which wire carried the RoCEv2 frames: AF_PACKET capture on the switch side of a NIC host's ports.

``RoceWires(netns, {port: wire_ifname}, ips)`` opens one packet socket per wire (in the switch
namespace, on a thread that entered it) and, on a thread of its own, records every IPv4 or IPv6 UDP
frame to port 4791 whose source or destination is one of ``ips`` as ``(t_ns, port, src, dst)`` (kernel
receive time, CLOCK_REALTIME).  ``counts(src, since_ns, until_ns)`` -> {port: frames}.

Frames whose kernel stamp was on another clock (``traffic.stamps``) are counted in ``restamped``.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from typing import Collection, Dict, List, Mapping, Optional, Tuple

from traffic.netns import run_in_netns
from traffic.stamps import SO_TIMESTAMPNS, real_ns

ETH_P_ALL = 0x0003
ROCE_PORT = 4791
Frame = Tuple[int, str, str, str]  # t_ns, port, src ip, dst ip


def parse_roce(frame: bytes) -> Optional[Tuple[str, str]]:
    """(src, dst) of an Ethernet/IPv4/UDP or Ethernet/IPv6/UDP frame to port 4791 (RoCEv2), else None.
    IPv6: the fixed header's next header must be UDP (RoCEv2 carries no extension headers)."""
    ethertype = frame[12:14]
    if ethertype == b"\x86\xdd":
        if len(frame) < 14 + 40 + 8 or frame[20] != 17:
            return None
        if struct.unpack_from("!H", frame, 14 + 40 + 2)[0] != ROCE_PORT:
            return None
        return socket.inet_ntop(socket.AF_INET6, frame[22:38]), socket.inet_ntop(socket.AF_INET6, frame[38:54])
    if len(frame) < 42 or ethertype != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[23] != 17 or len(frame) < 14 + ihl + 8:
        return None
    dport = struct.unpack_from("!H", frame, 14 + ihl + 2)[0]
    if dport != ROCE_PORT:
        return None
    return socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])


class RoceWires:
    def __init__(self, netns: str, wires: Mapping[str, str], ips: Collection[str]) -> None:
        self.netns = netns
        self.wires = dict(wires)
        self.ips = set(ips)
        self.frames: List[Frame] = []
        self.restamped = 0
        self._socks: Dict[int, Tuple[socket.socket, str]] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> RoceWires:
        def open_all() -> None:
            for port, wire in self.wires.items():
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                s.bind((wire, 0))
                s.setblocking(False)
                self._socks[s.fileno()] = (s, port)

        try:
            run_in_netns(self.netns, open_all)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._loop, name="rocewires", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        fds = list(self._socks)
        while not self._stop.is_set():
            ready, _, _ = select.select(fds, [], [], 0.1)
            for fd in ready:
                self._drain(fd)
        for fd in fds:  # frames that crossed before close() but were not read yet (a slow guest lags)
            self._drain(fd)

    def _drain(self, fd: int) -> None:
        sock, port = self._socks[fd]
        while True:
            try:
                data, anc, _flags, _addr = sock.recvmsg(128, 64)
            except OSError:  # BlockingIOError: drained
                return
            parsed = parse_roce(data)
            if parsed and (parsed[0] in self.ips or parsed[1] in self.ips):
                self.frames.append((self._stamp(anc), port, parsed[0], parsed[1]))

    def _stamp(self, anc: List[Tuple[int, int, bytes]]) -> int:
        t_ns, moved = real_ns(anc)
        self.restamped += moved
        return t_ns

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for s, _ in self._socks.values():
            s.close()
        self._socks.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def counts(self, src: Optional[str] = None, since_ns: int = 0, until_ns: Optional[int] = None) -> Dict[str, int]:
        out = {p: 0 for p in self.wires}
        for t, port, s, _d in list(self.frames):
            if (src is None or s == src) and t >= since_ns and (until_ns is None or t < until_ns):
                out[port] += 1
        return out
