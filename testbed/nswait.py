"""Wait until deleted network namespaces are really gone.

Removing ``/run/netns/X`` only drops a reference; the kernel tears the
namespace (and the veth peers it held) down asynchronously. Before removal
each namespace gets a namespace id in ours (RTM_NEWNSID); the kernel then
announces its destruction with RTM_DELNSID on RTNLGRP_NSID, which is what we
wait for. pyroute2's buffered reader can swallow readiness for ``select``, so
this uses a plain netlink socket: it only counts message types.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from typing import Dict, Iterable

from pyroute2 import IPRoute

from testbed.errors import WaitTimeout
from testbed.nl import TIMEOUT_SCALE_ENV, timeout_scale

RTNLGRP_NSID = 28
RTM_DELNSID = 89
NETNSA_NSID = 1


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


def _signed(nsid: object) -> int:
    """pyroute2 reports NETNSA_NSID_NOT_ASSIGNED (-1) as an unsigned 4294967295."""
    if not isinstance(nsid, int):
        return -1
    return nsid - (1 << 32) if nsid >= (1 << 31) else nsid


class NetnsDeletion:
    """Context: ``arm(names)`` before removing them, ``wait(timeout)`` after."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 1 << (RTNLGRP_NSID - 1)))
        self.pending: Dict[int, str] = {}

    def arm(self, paths: Iterable[str]) -> None:
        with IPRoute() as ipr:
            for path in paths:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    nsid = _signed(ipr.get_netnsid(fd=fd).get("nsid"))
                    if nsid < 0:
                        ipr.set_netnsid(fd=fd)
                        nsid = _signed(ipr.get_netnsid(fd=fd).get("nsid"))
                finally:
                    os.close(fd)
                if nsid >= 0:
                    self.pending[nsid] = os.path.basename(path)

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
            data = self.sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, off)
                if length < 16:
                    break
                if mtype == RTM_DELNSID:
                    self.pending.pop(_nsid_of(data, off, length), None)
                off += (length + 3) & ~3
        return time.monotonic() - start

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NetnsDeletion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
