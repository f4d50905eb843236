"""The bond's own gap: a kernel UDP stream through the bond, beside the offloaded traffic.

``UdpProbe(src_netns, dst_netns, dst_ip, rate_pps)`` sends datagrams (8-byte sequence number) from
a kernel socket in ``src_netns`` to ``dst_ip`` in ``dst_netns`` at ``rate_pps`` on a thread, and
receives them on another; ``arrivals`` holds the CLOCK_REALTIME receive times.  Kernel traffic to
or from the bond's address is carried by the bond itself (not the offload), so its largest gap
around a fault is the bond's own outage.

    with UdpProbe("lab-client", "lab-server", "198.18.0.1", 200) as p:
        ...
    p.arrivals
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from typing import List, Optional

from traffic.netns import run_in_netns

PROBE_PORT = 5311


class UdpProbe:
    def __init__(self, src_netns: str, dst_netns: str, dst_ip: str, rate_pps: float = 200.0,
                 port: int = PROBE_PORT) -> None:
        self.src_netns, self.dst_netns, self.dst_ip = src_netns, dst_netns, dst_ip
        self.rate, self.port = rate_pps, port
        self.arrivals: List[int] = []
        self.sent = 0
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._tx: Optional[socket.socket] = None
        self._rx: Optional[socket.socket] = None

    def __enter__(self) -> UdpProbe:
        def rx() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((self.dst_ip, self.port))
            return s

        self._rx = run_in_netns(self.dst_netns, rx)
        self._tx = run_in_netns(self.src_netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        for fn in (self._recv, self._send):
            t = threading.Thread(target=fn, name=f"udpprobe{fn.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _send(self) -> None:
        assert self._tx is not None
        t0 = time.monotonic()
        seq = 0
        while not self._stop.is_set():
            try:
                self._tx.sendto(struct.pack("!Q", seq), (self.dst_ip, self.port))
                self.sent += 1
            except OSError:
                pass  # no route while the bond has no port: counted as lost
            seq += 1
            self._stop.wait(max(0.0, t0 + seq / self.rate - time.monotonic()))

    def _recv(self) -> None:
        assert self._rx is not None
        while not self._stop.is_set():
            if select.select([self._rx], [], [], 0.1)[0]:
                self._rx.recv(64)
                self.arrivals.append(time.clock_gettime_ns(time.CLOCK_REALTIME))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5.0)
        for s in (self._tx, self._rx):
            if s is not None:
                s.close()
