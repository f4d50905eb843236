"""``Receiver``: capture a sequenced stream in a namespace, on a background thread.

The capture thread enters the namespace, opens an AF_PACKET socket for every
protocol with kernel receive timestamps (``SO_TIMESTAMPNS``, CLOCK_REALTIME)
and a large receive buffer, and -- with ``ifname=None`` -- binds it to no
interface: it then sees every frame entering the namespace and learns the
ingress interface of each from the kernel (``sll_ifindex``), i.e. which wire
carried it.  Note that a frame entering a bond slave is seen twice by such a
socket: on the slave (``pf0``) and again on the bond (``bond0``); pass
``ifnames`` to keep only the wires.  Frames the namespace sends
(PACKET_OUTGOING) are skipped unless ``include_outgoing``.

The filter is plain Python (no BPF): frames whose stream magic sits where a
stream header belongs (see ``parse``), optionally of one ``stream_id`` or to
some UDP/TCP destination ports.  RoCEv2 frames have their ICRC checked.

The thread blocks in ``select`` on the socket and a stop pipe; it never polls.
``stop()`` drains what the socket already holds, then returns every record.

Public API:
    Receiver(netns: str | None, ifname: str | None = None, *, stream_id=None, dports=None,
             ifnames=None, include_outgoing=False, pcap=None, pcap_linktype="sll2",
             pcap_all=True, check_icrc=True, keep_frames=False, rcvbuf=16 MiB)        -- context manager
    Receiver.start() -> Receiver          (returns once the socket is open)
    Receiver.stop() -> list[RxRecord]     (idempotent)
    Receiver.records -> list[RxRecord]    (snapshot)
    Receiver.count -> int
    Receiver.wait_count(n, timeout_s) -> None            raises WaitTimeout
    Receiver.wait_quiet(quiet_s, timeout_s) -> None      no new record (nor kept frame) for
                                                         quiet_s; WaitTimeout otherwise
    Receiver.stats() -> dict(frames, matched, outgoing_skipped, socket_drops, pcap_frames)
    Receiver.frames -> list[CapturedFrame]  (snapshot; only with keep_frames=True: every frame
                                            that passed the ifnames/outgoing filters)
    CapturedFrame(rx_ns, ifindex, ifname, pkttype, data)      NamedTuple
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from typing import Collection, Dict, List, NamedTuple, Optional, Tuple

from testbed.errors import UsageError, WaitTimeout
from traffic.netns import enter_netns
from traffic.parse import parse_stream_frame
from traffic.pcap import PcapWriter
from traffic.records import RxRecord
from traffic.stamps import SO_TIMESTAMPNS, TIMESPEC, real_ns

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33
PACKET_OUTGOING = 4
_TPACKET_STATS = struct.Struct("II")
_ANC_SIZE = socket.CMSG_SPACE(TIMESPEC.size)
BATCH = 512  # frames read before publishing them (and looking at the stop pipe again)


class CapturedFrame(NamedTuple):
    rx_ns: int
    ifindex: int
    ifname: str
    pkttype: int  # PACKET_HOST 0, BROADCAST 1, MULTICAST 2, OTHERHOST 3, OUTGOING 4
    data: bytes


class Receiver:
    def __init__(
        self,
        netns: Optional[str],
        ifname: Optional[str] = None,
        *,
        stream_id: Optional[int] = None,
        dports: Optional[Collection[int]] = None,
        ifnames: Optional[Collection[str]] = None,
        include_outgoing: bool = False,
        pcap: Optional[str] = None,
        pcap_linktype: str = "sll2",
        pcap_all: bool = True,
        check_icrc: bool = True,
        keep_frames: bool = False,
        rcvbuf: int = 16 << 20,
    ) -> None:
        self.netns = netns
        self.ifname = ifname
        self.stream_id = stream_id
        self.dports = frozenset(dports) if dports is not None else None
        self.ifnames = frozenset(ifnames) if ifnames is not None else None
        self.include_outgoing = include_outgoing
        self.pcap_path = pcap
        self.pcap_linktype = pcap_linktype
        self.pcap_all = pcap_all
        self.check_icrc = check_icrc
        self.keep_frames = keep_frames
        self._frames: List[CapturedFrame] = []
        self.rcvbuf = rcvbuf
        self._where = f"receiver in netns {netns}" if netns else "receiver"
        if ifname:
            self._where += f" on {ifname}"
        self._records: List[RxRecord] = []
        self._cond = threading.Condition()
        self._last_arrival = time.monotonic()
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        self._stop_r = self._stop_w = -1  # the stop pipe, made by start()
        self._sock: Optional[socket.socket] = None
        self._ifindex: Dict[str, int] = {}  # its namespace's, for a ReceiverGroup's thread
        self._pcap: Optional[PcapWriter] = None
        self._stats = {"frames": 0, "matched": 0, "outgoing_skipped": 0, "socket_drops": 0}
        self._stopped = False

    # -- life cycle ----------------------------------------------------------

    def start(self) -> Receiver:
        if self._thread is not None or self._sock is not None:
            raise UsageError(f"{self._where}: already started")
        if self.pcap_path:
            self._pcap = PcapWriter(self.pcap_path, linktype=self.pcap_linktype)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=self._where, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._stopped = True
            self._close_fds()
            error, self._error = self._error, None  # raised here, not again by stop()
            raise error
        return self

    def stop(self) -> List[RxRecord]:
        if self._thread is not None and not self._stopped:
            self._stopped = True
            os.write(self._stop_w, b"x")
            self._thread.join()
            self._close_fds()
        if self._error is not None:
            raise self._error
        return self.records

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_fds(self) -> None:
        for fd in (self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._pcap is not None:
            self._pcap.close()

    # -- results -------------------------------------------------------------

    @property
    def records(self) -> List[RxRecord]:
        with self._cond:
            return list(self._records)

    @property
    def frames(self) -> List[CapturedFrame]:
        with self._cond:
            return list(self._frames)

    @property
    def count(self) -> int:
        with self._cond:
            return len(self._records)

    def stats(self) -> Dict[str, int]:
        with self._cond:
            out = dict(self._stats)
        out["pcap_frames"] = self._pcap.count if self._pcap is not None else 0
        return out

    def wait_count(self, n: int, timeout_s: float) -> None:
        """Return once ``n`` stream packets are in; ``WaitTimeout`` at the deadline."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self._records) < n:
                if self._error is not None:
                    raise self._error
                left = deadline - time.monotonic()
                if left <= 0 or self._stopped:
                    raise WaitTimeout(
                        f"{self._where}: {len(self._records)} of {n} stream packets after {timeout_s:g} s",
                        fix="check that the sender reaches this namespace (links up, rules)",
                    )
                self._cond.wait(left)

    def wait_quiet(self, quiet_s: float, timeout_s: float) -> None:
        """Return once no stream packet has arrived for ``quiet_s``; ``WaitTimeout`` if
        packets keep coming until the deadline."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                now = time.monotonic()
                quiet_until = self._last_arrival + quiet_s
                if now >= quiet_until:
                    return
                if now >= deadline:
                    raise WaitTimeout(
                        f"{self._where}: packets still arriving after {timeout_s:g} s "
                        f"(waited for {quiet_s:g} s of silence)",
                    )
                self._cond.wait(min(quiet_until, deadline) - now)

    # -- the capture thread --------------------------------------------------

    def _open(self) -> socket.socket:
        enter_netns(self.netns)
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if self.ifname:
                try:
                    sock.bind((self.ifname, ETH_P_ALL))
                except OSError as exc:
                    raise UsageError(
                        f"{self._where}: cannot bind: {exc.strerror}",
                        fix="check the interface name",
                    ) from None
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _open_with_names(self) -> Tuple[socket.socket, Dict[str, int]]:
        """The socket, and the namespace's interface indexes (on a thread that may enter the namespace)."""
        sock = self._open()
        return sock, {name: idx for idx, name in socket.if_nameindex()}

    def _run(self) -> None:
        try:
            sock, ifindex = self._open_with_names()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._sock = sock
        self._ready.set()
        try:
            while True:
                readable, _, _ = select.select([sock, self._stop_r], [], [])
                self._drain(sock, ifindex)
                if self._stop_r in readable:
                    break
            while self._drain(sock, ifindex):
                pass
            self._count_drops(sock)
        except BaseException as exc:  # surfaced by wait_*() and stop()
            self._error = exc
        finally:
            sock.close()
            with self._cond:
                self._cond.notify_all()

    def _count_drops(self, sock: socket.socket) -> None:
        """Add the frames the kernel dropped for want of buffer (PACKET_STATISTICS) to the stats."""
        raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
        with self._cond:
            self._stats["socket_drops"] += _TPACKET_STATS.unpack(raw)[1]

    def _drain(self, sock: socket.socket, ifindex: Dict[str, int]) -> int:
        """Read up to BATCH frames the socket holds, publish them; return how many were read."""
        batch: List[RxRecord] = []
        kept: List[CapturedFrame] = []
        keep = self.keep_frames
        frames = outgoing = 0
        recvmsg = sock.recvmsg
        stream_id, dports, ifnames = self.stream_id, self.dports, self.ifnames
        pcap = self._pcap
        pcap_all = self.pcap_all
        read = 0
        while read < BATCH:
            try:
                data, anc, _flags, addr = recvmsg(65536, _ANC_SIZE)
            except BlockingIOError:
                break
            read += 1
            name, pkttype = addr[0], addr[2]
            if pkttype == PACKET_OUTGOING and not self.include_outgoing:
                outgoing += 1
                continue
            if ifnames is not None and name not in ifnames:
                continue
            rx_ns = real_ns(anc)[0]  # the kernel's receive stamp on the real-time clock, else now
            frames += 1
            idx = ifindex.get(name)
            if idx is None:  # a new interface: look again (once per name)
                ifindex.update({n: i for i, n in socket.if_nameindex()})
                idx = ifindex.setdefault(name, 0)
            if pcap is not None and pcap_all:
                pcap.write(data, rx_ns, ifindex=idx, pkttype=pkttype)
            if keep:
                kept.append(CapturedFrame(rx_ns, idx, name, pkttype, data))
            p = parse_stream_frame(data, check_icrc=self.check_icrc)
            if p is None:
                continue
            if stream_id is not None and p.stream_id != stream_id:
                continue
            if dports is not None and p.dport not in dports:
                continue
            if pcap is not None and not pcap_all:
                pcap.write(data, rx_ns, ifindex=idx, pkttype=pkttype)
            batch.append(RxRecord(p.stream_id, p.flow_id, p.seq, p.tx_ns, rx_ns, idx, name, p.kind, p.sport,
                                  p.dport, p.psn, p.icrc_ok))
        self._publish(frames, outgoing, kept, batch)
        return read

    def _publish(self, frames: int, outgoing: int, kept: List[CapturedFrame], batch: List[RxRecord]) -> None:
        with self._cond:
            self._stats["frames"] += frames
            self._stats["outgoing_skipped"] += outgoing
            self._frames.extend(kept)
            if batch or kept:
                self._last_arrival = time.monotonic()
            if batch:
                self._stats["matched"] += len(batch)
                self._records.extend(batch)
            self._cond.notify_all()

