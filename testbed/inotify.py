"""Changes under one directory as a file descriptor to ``select()`` on (inotify, through libc): how the agent
hears a namespace's name removed from ``/run/netns``, and how a waiter hears a status file replaced without
polling it (under single-threaded TCG a poller steals the one host thread from the process it waits for).
"""

from __future__ import annotations

import ctypes
import os
import select
import time

from testbed.errors import TestbedError

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_DELETE = 0x00000200
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000


class DirWatch:
    """inotify on ``path`` for the events in ``mask``; raises ``error`` (a TestbedError class) when it cannot."""

    def __init__(self, path: str, mask: int, error: type = TestbedError) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise error(f"inotify_init1 failed: {os.strerror(ctypes.get_errno())}")
        if libc.inotify_add_watch(self.fd, os.fsencode(path), mask) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise error(f"cannot watch {path}: {os.strerror(err)}")

    def fileno(self) -> int:
        return self.fd

    def drain(self) -> bool:
        """Read every queued event; whether there was one."""
        seen = False
        while True:
            try:
                if not os.read(self.fd, 1 << 14):
                    return seen
            except BlockingIOError:
                return seen
            seen = True

    def wait(self, deadline: float) -> bool:
        """Block until an event is queued or the monotonic ``deadline`` passes; drains it. Whether one came."""
        left = deadline - time.monotonic()
        if left > 0:
            select.select([self.fd], [], [], left)
        return self.drain()

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> DirWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
