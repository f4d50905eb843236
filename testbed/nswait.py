"""Wait until deleted network namespaces are really gone.

Removing ``/run/netns/X`` only drops a reference; the kernel tears the
namespace (and the veth peers it held) down asynchronously. Before removal
each namespace gets a namespace id in ours (RTM_NEWNSID); the kernel then
announces its destruction with RTM_DELNSID on RTNLGRP_NSID, which is what we
wait for. pyroute2's buffered reader can swallow readiness for ``select``, so
this uses a plain netlink socket: it only counts message types.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from typing import Dict, Iterable, Optional

from testbed import nlpipe
from testbed.errors import NetlinkOpError, WaitTimeout
from testbed.nl import TIMEOUT_SCALE_ENV, timeout_scale

RTNLGRP_NSID = 28
RTM_NEWNSID = 88
RTM_DELNSID = 89
RTM_GETNSID = 90
NETNSA_NSID = 1
NETNSA_FD = 3
NSID_ANY = -1  # RTM_NEWNSID: the kernel picks the id
SO_RCVBUFFORCE = 33
_RTGEN_FD = struct.Struct("=4xHHI")  # struct rtgenmsg (padded to 4), NETNSA_FD
_NLA_S32 = struct.Struct("=HHi")


def _fd_body(fd: int, nsid: Optional[int] = None) -> bytes:
    body = _RTGEN_FD.pack(8, NETNSA_FD, fd)
    return body if nsid is None else body + _NLA_S32.pack(8, NETNSA_NSID, nsid)


def _nsid_of(msg: bytes, off: int, length: int) -> int:
    # struct rtgenmsg (1 byte, padded to 4) then attributes
    pos = off + 16 + 4
    end = off + length
    while pos + 4 <= end:
        alen, atype = struct.unpack_from("=HH", msg, pos)
        if alen < 4:
            break
        if atype == NETNSA_NSID:
            return struct.unpack_from("=i", msg, pos + 4)[0]
        pos += (alen + 3) & ~3
    return -1


class NetnsDeletion:
    """Context: ``arm(names)`` before removing them, ``wait(timeout)`` after."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:  # a 256-VF lab: ~260 ids made (RTM_NEWNSID, heard here too) and ~260 destroyed
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        except PermissionError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 1 << (RTNLGRP_NSID - 1)))
        self.pending: Dict[int, str] = {}

    def arm(self, paths: Iterable[str]) -> None:
        """Give each namespace an id in ours (if it has none) and remember it: raw rtnetlink, the new ids
        asked for in pipelined batches (one with an id already is refused with EEXIST: fine), then one
        RTM_GETNSID each (was three pyroute2 requests each: ~4 s for 260 namespaces under TCG)."""
        fds: Dict[str, int] = {}
        try:
            for path in paths:
                try:
                    fds[os.path.basename(path)] = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
            if not fds:
                return
            with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
                sock.setblocking(False)
                nlpipe.transact(sock, [(RTM_NEWNSID, 0, _fd_body(fd, NSID_ANY)) for fd in fds.values()])
                for name, fd in fds.items():
                    try:
                        msg = nlpipe.get(sock, RTM_GETNSID, _fd_body(fd), f"netns id of {name}")
                    except NetlinkOpError:
                        continue  # not waited for, as before when it got no id
                    nsid = _nsid_of(msg, 0, len(msg))
                    if nsid >= 0:
                        self.pending[nsid] = name
        finally:
            for fd in fds.values():
                os.close(fd)

    def wait(self, timeout: float = 10.0) -> float:
        """Block until every armed namespace is destroyed; returns the seconds waited."""
        start = time.monotonic()
        timeout *= timeout_scale()
        deadline = start + timeout
        while self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"network namespaces {', '.join(sorted(self.pending.values()))} still exist "
                                  f"{timeout:.0f}s after removal (a process still inside them?)",
                                  fix=f"find it with `ip netns pids NAME` or `lsns -t net`; on a loaded machine "
                                      f"raise the deadline with {TIMEOUT_SCALE_ENV}=2")
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            try:
                data = self.sock.recv(1 << 16)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self._resync()  # events were lost: ask the kernel which ids still exist
                continue
            off = 0
            while off + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, off)
                if length < 16:
                    break
                if mtype == RTM_DELNSID:
                    self.pending.pop(_nsid_of(data, off, length), None)
                off += (length + 3) & ~3
        return time.monotonic() - start

    def _resync(self) -> None:
        """Keep pending only the ids the kernel still has (one RTM_GETNSID dump of ours)."""
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            alive = {_nsid_of(m, 0, len(m)) for m in nlpipe.dump(sock, RTM_GETNSID, bytes(4), "netns ids")}
        self.pending = {nsid: name for nsid, name in self.pending.items() if nsid in alive}

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NetnsDeletion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
