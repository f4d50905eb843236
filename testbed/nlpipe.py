"""Pipelined rtnetlink requests and raw dumps over an open pyroute2 IPRoute (used by ``tc`` and the bond reader).

pyroute2 0.9.7 sends one request and waits for its ack, and parses every
reply through its generic decoder (a NetlinkRequest, an asyncio queue and an
nlmsgerr object per message).  For thousands of tc filters that is slower
than ``tc -batch``.  This module uses only the IPRoute's socket (its public
``send``/``recv``/``fileno``/``getsockopt``/``setsockopt``) so it works in
whatever namespace the caller opened the IPRoute in:

* ``transact()`` packs many requests into one ``sendmsg`` (a *window*), only
  the last asking for an ack, and matches replies back by sequence number.
  rtnetlink handles a request in the sender's context, so when ``send``
  returns the window's replies are already queued; the window keeps them
  (and any notifications) within the receive buffer -- an overrun would
  lose replies, and is reported as such.
* ``dump()`` returns each reply message's raw bytes, for the caller's decoder.

Messages on the socket that are not replies to us (multicast notifications:
a default IPRoute subscribes to RTMGRP_TC and so hears of every filter we
add) are read and dropped; do not share the IPRoute with an event listener
while these run.  Not thread-safe, like the IPRoute itself.
"""

from __future__ import annotations

import errno as errno_mod
import itertools
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Tuple

from testbed import rawnl
from testbed.errors import NetlinkOpError, WaitTimeout
from testbed.rawnl import HDR, header, messages

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # in NLMSG_ERROR: the echoed request is only its header
NLM_F_ACK_TLVS = 0x200  # in NLMSG_ERROR: extended ack attributes follow

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLMSGERR_ATTR_MSG = 1

SOL_NETLINK = 270
NETLINK_EXT_ACK = 11

ACK_TIMEOUT = 10.0  # s without progress before a reply counts as lost
RECV_SIZE = 1 << 16  # > the 32 KiB the kernel puts in one dump datagram

Request = Tuple[int, int, bytes]  # (msg_type, flags, body)
# receive-buffer charge per request in the worst case: an error reply echoing
# the request (~1 KiB skb) plus a multicast notification (a ~4.5 KiB skb)
BYTES_PER_REQUEST = 6144

# sequence numbers of our own, far from pyroute2's allocator (which starts low)
_seq = itertools.count(0x40000000)


@dataclass(frozen=True)
class Reply:
    """The outcome of one request: errno 0 is success; ``message`` is the kernel's ext-ack text."""

    errno: int
    message: str = ""


OK = Reply(0)


def parse_error(msg: memoryview, flags: int) -> Reply:
    """NLMSG_ERROR body: errno, the echoed request, then ext-ack TLVs if flagged."""
    (code,) = struct.unpack_from("=i", msg, HDR.size)
    if not code or not flags & NLM_F_ACK_TLVS:
        return Reply(-code)
    echoed = HDR.size if flags & NLM_F_CAPPED else HDR.unpack_from(msg, HDR.size + 4)[0]
    text = rawnl.attr_str(msg, HDR.size + 4 + rawnl.align(echoed), NLMSGERR_ATTR_MSG) or ""
    return Reply(-code, text)


class _ExtAck:
    """Turn on NETLINK_EXT_ACK for the duration (kernel error texts), then restore it."""

    def __init__(self, ipr) -> None:
        self.ipr = ipr
        self.old: Optional[int] = None

    def __enter__(self) -> _ExtAck:
        try:
            self.old = self.ipr.getsockopt(SOL_NETLINK, NETLINK_EXT_ACK)
            if not self.old:
                self.ipr.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:
            self.old = None  # kernel without ext ack: plain errnos
        return self

    def __exit__(self, *exc) -> None:
        if self.old == 0:
            self.ipr.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 0)


def _recv(ipr, deadline: float, what: str) -> bytes:
    """One datagram from the (non-blocking) socket, waiting until ``deadline``."""
    poller = select.poll()
    poller.register(ipr.fileno(), select.POLLIN)
    while True:
        try:
            return ipr.recv(RECV_SIZE)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno == errno_mod.ENOBUFS:
                raise NetlinkOpError(
                    f"netlink socket overrun while waiting for {what}: replies were lost",
                    errno=exc.errno,
                    fix="use a smaller window, or an IPRoute(groups=0) that hears no multicast",
                ) from exc
            raise
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"no netlink reply for {what} within {ACK_TIMEOUT:.0f} s")
        poller.poll(left * 1000)  # waits for the socket, not a fixed sleep


def _chunks(requests: Iterable[Request], window: int) -> Iterator[List[Request]]:
    it = iter(requests)
    while True:
        chunk = list(itertools.islice(it, window))
        if not chunk:
            return
        yield chunk


def transact(
    ipr, requests: Iterable[Request], window: int = 64, ack_each: bool = False
) -> List[Reply]:
    """Send (msg_type, flags, body) requests, ``window`` per sendmsg; one Reply each.

    NLM_F_REQUEST is added to every request and NLM_F_ACK to the last of each
    window (to all with ``ack_each``).  The kernel answers a failed request
    with an error whether or not it asked for an ack, and answers in order,
    so once the window's last reply is in, a request without an error reply
    has succeeded (a lost reply would have raised ENOBUFS).  All requests
    are sent even if some fail; the caller decides what a failure means.

    ``requests`` may be a lazy iterable: each window is built just before
    it is sent.  The window is capped so that a reply *and* a notification
    (tc's are built in a page-sized skb) per request fit the socket's
    receive buffer.
    """
    rcvbuf = ipr.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    window = max(1, min(window, rcvbuf // BYTES_PER_REQUEST))
    replies: List[Reply] = []
    with _ExtAck(ipr):
        for chunk in _chunks(requests, window):
            replies.extend(_send_window(ipr, chunk, ack_each))
    return replies


@dataclass(frozen=True)
class Packed:
    """Requests encoded as one netlink buffer, ready for one ``sendmsg`` (``pack`` / ``send_packed``).

    ``offsets``: where each message starts (its sequence number is stamped
    anew at every send, so a buffer kept for later can be sent many times).
    ``acked``: the positions of the messages that ask for an ack.
    """

    data: bytes
    offsets: Tuple[int, ...]
    acked: Tuple[int, ...]

    def __len__(self) -> int:
        return len(self.offsets)


def pack(requests: Iterable[Request], ack_each: bool = False) -> Packed:
    """Encode requests back to back: NLM_F_REQUEST on each, NLM_F_ACK on the last (``ack_each``: on all).

    The kernel handles the messages of one ``sendmsg`` one after the other, in
    order, and answers a failed one with an error whether or not it asked for
    an ack: the last message's ack tells that all were handled.
    """
    reqs = list(requests)
    parts = []
    offsets = []
    acked = []
    size = 0
    for n, (msg_type, flags, body) in enumerate(reqs, 1):
        ack = NLM_F_ACK if ack_each or n == len(reqs) else 0
        if ack:
            acked.append(n - 1)
        offsets.append(size)
        parts.append(header(len(body), msg_type, flags | NLM_F_REQUEST | ack, 0))
        parts.append(body)
        size += HDR.size + rawnl.align(len(body))
        if len(body) != rawnl.align(len(body)):
            parts.append(b"\0" * (rawnl.align(len(body)) - len(body)))
    return Packed(b"".join(parts), tuple(offsets), tuple(acked))


_SEQ = struct.Struct("=I")
_SEQ_AT = 8  # offset of nlmsg_seq in struct nlmsghdr


def send_packed(ipr, packed: Packed) -> List[Reply]:
    """Send a ``Packed`` buffer with one ``sendmsg`` and wait for its replies (one Reply per message).

    No ext-ack toggling here (``enable_ext_ack`` once on the socket): this is
    the agent's reaction path, where every system call counts.
    """
    if not packed.offsets:
        return []
    buf = bytearray(packed.data)
    seqs = []
    for off in packed.offsets:
        seq = next(_seq) & 0xFFFFFFFF
        _SEQ.pack_into(buf, off + _SEQ_AT, seq)
        seqs.append(seq)
    return _exchange(ipr, bytes(buf), seqs, [seqs[i] for i in packed.acked])


def enable_ext_ack(ipr) -> None:
    """Turn NETLINK_EXT_ACK on for good (the kernel's error texts); a kernel without it: plain errnos."""
    try:
        ipr.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    except OSError:
        pass


def max_requests(ipr) -> int:
    """How many requests one buffer may hold so that every reply (and notification) fits the socket's
    receive buffer (see ``transact``)."""
    return max(1, ipr.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // BYTES_PER_REQUEST)


def _send_window(ipr, chunk: List[Request], ack_each: bool) -> List[Reply]:
    packed = pack(chunk, ack_each)
    return send_packed(ipr, packed)


def _exchange(ipr, data: bytes, seqs: List[int], acked: List[int]) -> List[Reply]:
    """Send one buffer, then read until every acked message is answered (in order, so then all are)."""
    try:
        ipr.send(data)
    except OSError as exc:
        raise NetlinkOpError(
            f"netlink send of {len(seqs)} requests failed: {exc}",
            errno=exc.errno,
            fix="use a smaller window" if exc.errno == errno_mod.EMSGSIZE else None,
        ) from exc
    got = {}
    waiting = set(acked)
    mine = set(seqs)
    deadline = time.monotonic() + ACK_TIMEOUT
    while waiting:
        data = _recv(ipr, deadline, f"{len(waiting)} acks")
        for msg_type, flags, seq, msg in messages(data):
            if msg_type == NLMSG_ERROR and seq in mine:
                got[seq] = parse_error(msg, flags)
                waiting.discard(seq)
                deadline = time.monotonic() + ACK_TIMEOUT
            # anything else is a notification or a stale reply: dropped
    return [got.get(seq, OK) for seq in seqs]


def dump(ipr, msg_type: int, body: bytes, what: str) -> List[bytes]:
    """Run one NLM_F_DUMP request; the reply messages' raw bytes (header included).

    Retries (up to 5 times) when the kernel flags the dump as interrupted by
    a concurrent change (NLM_F_DUMP_INTR).
    """
    for _ in range(5):
        seq = next(_seq) & 0xFFFFFFFF
        out: List[bytes] = []
        interrupted = False
        with _ExtAck(ipr):
            ipr.send(header(len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq) + body)
            deadline = time.monotonic() + ACK_TIMEOUT
            done = False
            while not done:
                data = _recv(ipr, deadline, f"dump of {what}")
                for t, flags, s, msg in messages(data):
                    if s != seq:
                        continue
                    deadline = time.monotonic() + ACK_TIMEOUT
                    interrupted |= bool(flags & NLM_F_DUMP_INTR)
                    if t == NLMSG_DONE:
                        done = True
                        break
                    if t == NLMSG_ERROR:
                        reply = parse_error(msg, flags)
                        raise NetlinkOpError(
                            f"dump of {what}: {errno_name(reply.errno)}"
                            + (f": {reply.message}" if reply.message else ""),
                            errno=reply.errno,
                        )
                    out.append(bytes(msg))
        if not interrupted:
            return out
    raise NetlinkOpError(
        f"dump of {what} kept being interrupted by concurrent changes",
        errno=errno_mod.EINTR,
        fix="retry when the namespace is quiet",
    )


def get(ipr, msg_type: int, body: bytes, what: str) -> bytes:
    """One non-dump request (``RTM_GETLINK`` of one interface): its reply message's raw bytes (header
    included); NetlinkOpError with the kernel's errno (and text) when it answers with an error."""
    seq = next(_seq) & 0xFFFFFFFF
    with _ExtAck(ipr):
        ipr.send(header(len(body), msg_type, NLM_F_REQUEST, seq) + body)
        deadline = time.monotonic() + ACK_TIMEOUT
        while True:
            for t, flags, s, msg in messages(_recv(ipr, deadline, what)):
                if s != seq:
                    continue  # a notification or a stale reply
                if t == NLMSG_ERROR:
                    reply = parse_error(msg, flags)
                    raise NetlinkOpError(f"{what}: {errno_name(reply.errno)}"
                                         + (f": {reply.message}" if reply.message else ""), errno=reply.errno)
                return bytes(msg)


def errno_name(code: int) -> str:
    return errno_mod.errorcode.get(code, str(code))


# --- links --------------------------------------------------------------------


def link_index(ipr) -> dict:
    """name -> ifindex of every interface in the IPRoute's namespace (one dump)."""
    names = {}
    for msg in dump(ipr, rawnl.RTM_GETLINK, rawnl.link_dump_body(), "links"):
        name = rawnl.link_name(msg)
        if name is not None:
            names[name] = rawnl.link_index(msg)
    return names
