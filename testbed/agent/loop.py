"""The agent process: one per lab, one thread, ``select()`` over every NIC namespace's link events.

::

    start: for each NIC host: open link events (before anything is read, so no
           change can slip between the first dump and the subscription), then a
           full reconcile (adopts existing rules) -> agent.json "ready": true
    loop:  select(link-event sockets, /run/netns inotify, signal pipe)
           events of NIC n  -> drain them all -> react: the events' link messages laid
                               over the last reading, the change prepared for that state
                               sent in one sendmsg (reconcile.NicReconciler.react)
           nothing queued   -> one step of background work when it is due (select's
                               timeout): verify the last fast reaction with a dump, then
                               prepare the changes for the states the bond may move to next
           ENOBUFS          -> full reconcile of n (dump state and rules)
           SIGHUP           -> full reconcile of every NIC
           SIGTERM / SIGINT -> exit 0, rules left in place (traffic keeps flowing;
                               a new agent adopts them)
           a NIC namespace deleted -> AgentError (exit 10); never recreated

Every reconcile that ran is logged with its latency, event read -> rules
applied (``report``).
"""

from __future__ import annotations

import fcntl
import functools
import gc
import os
import select
import signal
import time
from typing import Any, Callable, Dict, List, Optional

from pyroute2 import IPRoute

from testbed import labstore, nlpipe
from testbed.agent.events import LinkEvents, NetnsWatch
from testbed.agent.reconcile import NicReconciler, Reaction, safe_call, safe_reconcile
from testbed.agent.report import Reporter
from testbed.errors import AgentError
from testbed.nl import netns_exists, open_ns
from testbed.topology import Host, Topology

Ready = Callable[[Optional[str]], None]


def open_ipr(netns: str) -> IPRoute:
    """IPRoute inside ``netns`` that never creates it and hears no multicast (bulk tc work)."""
    if not netns_exists(netns):
        raise AgentError(f"network namespace {netns!r} does not exist", fix="is the lab up? see `testbed list`")
    return open_ns(netns, groups=0)


def process_age() -> float:
    """Seconds since this process started (/proc), to see what start-up costs beyond the reconcile."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


class NicWatch:
    """A NIC host: its link-event socket and its reconciler."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.events = LinkEvents(host.netns)
        try:
            self.ipr = open_ipr(host.netns)
        except BaseException:
            self.events.close()
            raise
        nlpipe.enable_ext_ack(self.ipr)  # once: the event path sends without toggling it
        self.rec = NicReconciler(host, self.ipr, quiet=lambda: not self.events.pending())

    def fileno(self) -> int:
        return self.events.fileno()

    def close(self) -> None:
        self.events.close()
        self.ipr.close()


class Agent:
    def __init__(self, lab: str, reporter: Reporter, topology: Optional[Topology] = None) -> None:
        self.lab = lab
        self.reporter = reporter
        self.topology = topology if topology is not None else labstore.read(lab).model()
        self.hosts = [h for h in self.topology.hosts if h.nic is not None]
        if not self.hosts:
            raise AgentError(f"lab {lab}: no host has a NIC, nothing to offload")
        self.nics: List[NicWatch] = []
        self.stop = False
        self.resync_all = False
        self._wake_r = self._wake_w = -1

    # -- signals --------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self.resync_all = True
        else:
            self.stop = True

    def _install_signals(self) -> Dict[int, Any]:
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        signal.set_wakeup_fd(self._wake_w)
        old = {}
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            old[s] = signal.signal(s, self._on_signal)
        return old

    # -- reactions ------------------------------------------------------------------
    def _record(self, reaction: Optional[Reaction]) -> None:
        if reaction is None:
            return
        self.reporter.reaction(reaction)
        self.reporter.write_status([n.rec for n in self.nics])

    def _check_netns(self, watch: NetnsWatch) -> None:
        gone = watch.missing()
        if gone:
            raise AgentError(f"lab {self.lab}: network namespace {', '.join(gone)} was deleted; the agent "
                             "stops (it never recreates a namespace) and releases it",
                             fix=f"`testbed down {self.lab}` to remove the rest of the lab, then `testbed up` again")

    def run(self, ready: Optional[Ready] = None) -> int:
        """Run until SIGTERM/SIGINT (returns 0) or an unrecoverable error (raises AgentError)."""
        old = self._install_signals()
        watch: Optional[NetnsWatch] = None
        t0 = time.monotonic()
        try:
            watch = NetnsWatch([h.netns for h in self.hosts])
            for host in self.hosts:
                self.nics.append(NicWatch(host))
            self._check_netns(watch)
            for n in self.nics:
                t = time.monotonic()
                reaction = n.rec.reconcile("start", t, full=True)
                self._record(reaction)
            # What start-up built (topology, plans, rules) lives as long as the agent: out of the
            # collector's generations, a full collection never scans it in the middle of a reaction.
            gc.freeze()
            self.reporter.ready = True
            self.reporter.write_status([n.rec for n in self.nics])
            self.reporter.line(f"agent ready: lab {self.lab}, {len(self.nics)} NIC(s), pid {os.getpid()}; "
                               f"sockets + first reconcile {time.monotonic() - t0:.1f} s, process age "
                               f"{process_age():.1f} s")
            if ready is not None:
                ready(None)
                ready = None
            self._loop(watch)
            self.reporter.line(f"agent stopping on signal: lab {self.lab}; rules left in place")
            return 0
        except AgentError as exc:
            if ready is not None:
                ready(str(exc))
            raise
        except BaseException as exc:
            if ready is not None:
                ready(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            for n in self.nics:
                n.close()
            if watch is not None:
                watch.close()
            signal.set_wakeup_fd(-1)
            for s, h in old.items():
                signal.signal(s, h)
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    def _loop(self, watch: NetnsWatch) -> None:
        by_fd = {n.fileno(): n for n in self.nics}
        fds = list(by_fd) + [watch.fileno(), self._wake_r]
        while not self.stop:
            if self.resync_all:
                self.resync_all = False
                for n in self.nics:
                    self._record(safe_reconcile(n.rec, "SIGHUP", time.monotonic(), full=True))
                continue
            dues = [d for d in (n.rec.due_in() for n in self.nics) if d is not None]
            readable, _, _ = select.select(fds, [], [], min(dues) if dues else None)
            t_event = time.monotonic()
            if not readable:
                for n in self.nics:
                    if n.rec.busy():
                        self._record(safe_call(n.rec, "background", t_event, n.rec.step))
                        break
                continue
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 512)
                except BlockingIOError:
                    pass
            if watch.fileno() in readable:
                self._check_netns(watch)
            for fd in readable:
                n = by_fd.get(fd)
                if n is None:
                    continue
                batch = n.events.drain()
                if batch.lost:
                    self._record(safe_reconcile(n.rec, "ENOBUFS: events lost", t_event, full=True))
                elif batch.messages:
                    self._check_netns(watch)
                    trigger = ",".join(sorted(batch.names)) or "link event"
                    react = functools.partial(n.rec.react, trigger, t_event, batch.links, batch.names,
                                              batch.deleted)
                    self._record(safe_call(n.rec, trigger, t_event, react))
