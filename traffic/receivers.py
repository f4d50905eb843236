"""``ReceiverGroup``: many ``Receiver``s, each in its own namespace, served by one capture thread.

A failover run with 64 VFs as targets captures in 65 destinations (each VF's
namespace and the client's). A ``Receiver`` each would be 65 threads
contending for the interpreter lock with the sending loop, and 3 file
descriptors each. A group opens every receiver's socket in its namespace (a
short-lived thread each, ``netns.run_in_netns``: a socket keeps the
namespace it was made in), then one thread waits on all of them and a stop
pipe with ``epoll`` (no ``FD_SETSIZE`` limit, and a wakeup costs what is
ready, not what is watched: 65 sockets in a TCG guest) and drains whichever is
readable through that receiver's own filter; the records, counts and waits
stay per receiver (``Receiver.records``, ``.wait_count``, ``.stats``,
``.stop``).

Only for receivers bound to an interface (``ifname`` given): an unbound
one learns the names of interfaces that appear during the run from its own
namespace, which the shared thread is not in.

Public API:
    ReceiverGroup(receivers)             -- context manager
    ReceiverGroup.start() -> ReceiverGroup     every socket open (a failure closes those opened, re-raised)
    ReceiverGroup.stop() -> None               drains what the sockets hold; idempotent; then each
                                               receiver's ``stop()`` returns its records
"""

from __future__ import annotations

import os
import select
import threading
from typing import Dict, List, Optional, Sequence

from testbed.errors import UsageError
from traffic.netns import run_in_netns
from traffic.pcap import PcapWriter
from traffic.receiver import Receiver


class ReceiverGroup:
    def __init__(self, receivers: Sequence[Receiver]) -> None:
        unbound = [r for r in receivers if not r.ifname]
        if unbound:
            raise UsageError(f"{unbound[0]._where}: not bound to an interface",
                             fix="a group serves receivers bound to one interface each; start it on its own")
        self.receivers = list(receivers)
        self._thread: Optional[threading.Thread] = None
        self._stop_r = self._stop_w = -1
        self._stopped = False

    def start(self) -> ReceiverGroup:
        if self._thread is not None:
            raise UsageError("receiver group: already started")
        try:
            for r in self.receivers:
                if r._thread is not None or r._sock is not None:
                    raise UsageError(f"{r._where}: already started")
                if r.pcap_path:
                    r._pcap = PcapWriter(r.pcap_path, linktype=r.pcap_linktype)
                r._sock, r._ifindex = run_in_netns(None, r._open_with_names)  # enters r.netns itself
        except BaseException:
            self._close()
            raise
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"receivers x{len(self.receivers)}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None and not self._stopped:
            os.write(self._stop_w, b"x")
            self._thread.join()
            for fd in (self._stop_r, self._stop_w):
                os.close(fd)
        self._stopped = True
        self._close()

    def __enter__(self) -> ReceiverGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close(self) -> None:
        """Each receiver's socket closed and marked stopped (its ``stop()`` then returns what it holds)."""
        for r in self.receivers:
            if r._sock is not None:
                r._sock.close()
            if r._pcap is not None:
                r._pcap.close()
            r._stopped = True
            with r._cond:
                r._cond.notify_all()

    def _run(self) -> None:
        by_fd: Dict[int, Receiver] = {r._sock.fileno(): r for r in self.receivers if r._sock is not None}
        poller = select.epoll(len(by_fd) + 1)
        try:
            for fd in (*by_fd, self._stop_r):
                poller.register(fd, select.EPOLLIN)
            while True:
                ready: List[int] = [fd for fd, _ in poller.poll()]
                for fd in ready:
                    r = by_fd.get(fd)
                    if r is not None:
                        r._drain(r._sock, r._ifindex)
                if self._stop_r in ready:
                    break
            for r in by_fd.values():
                while r._drain(r._sock, r._ifindex):
                    pass
                r._count_drops(r._sock)
        except BaseException as exc:  # surfaced by every receiver's wait_*() and stop()
            for r in self.receivers:
                r._error = exc
        finally:
            poller.close()
