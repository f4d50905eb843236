"""Link events of one namespace as a plain netlink socket the agent can ``select()`` on.

After an event the agent drains whatever else is queued. The batch keeps
the last RTM_NEWLINK of each interface: the agent's fast path lays them
over the links it last read (``agent.predict``) and acts on that at once,
then verifies with a fresh RTM_GETLINK dump when the socket is quiet, so a
stale or partial message (ifupdown2's ``nlcache`` documents duplicate
RTM_NEWLINKs and stale IFLA_MASTER in notifications) is corrected within
one dump. A plain
socket rather than pyroute2's IPRoute because pyroute2's buffered reader can
hold messages that ``select()`` then no longer reports (see ``nswait``).

The socket is created inside the namespace in-process (``nl.ns_socket``): a
namespace that does not exist is an error, never created. The socket holds a reference on the namespace, so
``ip netns del`` only removes its name; ``NetnsWatch`` (inotify on
``/run/netns``) tells the agent when that happened so it can let go.

Overrun: the kernel reports ENOBUFS on the next ``recv`` when it had to
drop notifications; ``drain()`` returns that as ``lost=True`` and the agent
does a full resync (dump rules and state, reconcile everything).
"""

from __future__ import annotations

import errno
import os
import select
import socket
from dataclasses import dataclass, field
from typing import Dict, List, Set

from testbed import rawnl
from testbed.errors import AgentError
from testbed.inotify import IN_DELETE, IN_MOVED_FROM, DirWatch
from testbed.nl import ns_socket
from testbed.rawnl import NETNS_DIR

RTMGRP_LINK = 0x1
RCVBUF = 4 << 20  # bytes; SO_RCVBUFFORCE as root, else capped by net.core.rmem_max
SO_RCVBUFFORCE = 33
RCVBUF_ENV = "TESTBED_AGENT_RCVBUF"  # tests only: a small buffer provokes the ENOBUFS overrun on purpose


@dataclass
class Batch:
    """What one drain of the socket brought."""

    messages: int = 0
    lost: bool = False  # ENOBUFS: notifications were dropped
    names: Set[str] = field(default_factory=set)  # interfaces mentioned
    deleted: Set[str] = field(default_factory=set)  # RTM_DELLINK
    links: Dict[str, bytes] = field(default_factory=dict)  # name -> its last RTM_NEWLINK (AF_UNSPEC), raw


def parse(data: bytes, batch: Batch) -> None:
    """Add the link messages in one datagram to ``batch`` (pure; unit-tested)."""
    for mtype, _flags, _seq, msg in rawnl.messages(data):
        if mtype in (rawnl.RTM_NEWLINK, rawnl.RTM_DELLINK):
            batch.messages += 1
            name = rawnl.link_name(msg)
            if name:
                batch.names.add(name)
                if mtype == rawnl.RTM_DELLINK:
                    batch.deleted.add(name)
                    batch.links.pop(name, None)
                elif msg[rawnl.HDR.size] == socket.AF_UNSPEC:  # not a bridge port's AF_BRIDGE record
                    batch.links[name] = bytes(msg)


def rcvbuf() -> int:
    """Receive buffer of the link-event socket: RCVBUF, or ``TESTBED_AGENT_RCVBUF`` bytes (tests)."""
    raw = os.environ.get(RCVBUF_ENV, "")
    return int(raw) if raw.isdigit() and 0 < int(raw) <= RCVBUF else RCVBUF


class LinkEvents:
    """RTMGRP_LINK subscription in namespace ``netns``; ``fileno()`` for select."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        if not os.path.exists(os.path.join(NETNS_DIR, netns)):
            raise AgentError(f"network namespace {netns!r} does not exist", fix="is the lab up? see `testbed list`")
        try:
            self.sock = ns_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        except OSError as exc:
            raise AgentError(f"{netns}: cannot open a netlink socket inside: {exc}") from None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf())
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf())
        self.sock.bind((0, RTMGRP_LINK))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self, limit: int = 1000) -> Batch:
        """Read what is queued now (never blocks; at most ``limit`` datagrams, the rest wakes select again)."""
        batch = Batch()
        for _ in range(limit):
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return batch
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    batch.lost = True
                    continue
                raise AgentError(f"{self.netns}: reading link events failed: {exc}") from None
            parse(data, batch)
        return batch

    def pending(self) -> bool:
        """Something is queued (an event, or an overrun to report) -- without reading it."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def close(self) -> None:
        self.sock.close()


# --- namespace removal ---------------------------------------------------------


class NetnsWatch:
    """Tells when a name under /run/netns disappears (``ip netns del``, ``testbed down``)."""

    def __init__(self, names: List[str]) -> None:
        self.names = set(names)
        self.dir = DirWatch(NETNS_DIR, IN_DELETE | IN_MOVED_FROM, AgentError)

    def fileno(self) -> int:
        return self.dir.fileno()

    def missing(self) -> List[str]:
        """Drain inotify and return the watched namespaces that no longer exist."""
        self.dir.drain()
        return sorted(n for n in self.names if not os.path.exists(os.path.join(NETNS_DIR, n)))

    def close(self) -> None:
        self.dir.close()
