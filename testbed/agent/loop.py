"""The agent process: one per lab, one thread, ``select()`` over every NIC namespace's link events.

::

    start: for each NIC host: open link events (before anything is read, so no
           change can slip between the first dump and the subscription), then a
           full reconcile (adopts existing rules) -> agent.json "ready": true
    loop:  select(link-event sockets, /run/netns inotify, signal pipe)
           events of NIC n  -> drain them all -> react: the events' link messages laid
                               over the last reading, the change prepared for that state
                               sent in one sendmsg (reconcile.NicReconciler.react)
                               (waiting and reacting at real-time priority, all else at
                               normal: agent.priority)
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
from testbed.agent.priority import Priority
from testbed.agent.reconcile import NicReconciler, Reaction, safe_call, safe_reconcile
from testbed.agent.report import Reporter
from testbed.agent.switch import SwitchReconciler
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


class Watch:
    """A namespace the agent watches: its link-event socket and an IPRoute for the rules there."""

    def __init__(self, netns: str) -> None:
        self.events = LinkEvents(netns)
        try:
            self.ipr = open_ipr(netns)
        except BaseException:
            self.events.close()
            raise

    def fileno(self) -> int:
        return self.events.fileno()

    def close(self) -> None:
        self.events.close()
        self.ipr.close()


class NicWatch(Watch):
    """A NIC host: its namespace's link events and its reconciler."""

    def __init__(self, host: Host) -> None:
        super().__init__(host.netns)
        self.host = host
        nlpipe.enable_ext_ack(self.ipr)  # once: the event path sends without toggling it
        self.rec = NicReconciler(host, self.ipr, quiet=lambda: not self.events.pending())


class SwitchWatch(Watch):
    """The switch's side of a NIC with ``partner_select: resilient``: link events of the switch namespace and
    the reconciler of the partner bonds' tables (``agent.switch``)."""

    def __init__(self, topo: Topology, host: Host) -> None:
        super().__init__(topo.switch_netns)
        self.rec = SwitchReconciler(host, topo.switch_netns, self.ipr)


class Agent:
    def __init__(self, lab: str, reporter: Reporter, topology: Optional[Topology] = None) -> None:
        self.lab = lab
        self.reporter = reporter
        self.topology = topology if topology is not None else labstore.read(lab).model()
        self.hosts = [h for h in self.topology.hosts if h.nic is not None]
        if not self.hosts:
            raise AgentError(f"lab {lab}: no host has a NIC, nothing to offload")
        self.nics: List[NicWatch] = []
        self.switch_hosts = [h for h in self.hosts if h.nic is not None and h.nic.resilient_switch]
        self.switches: List[SwitchWatch] = []
        self.stop = False
        self.resync_all = False
        self._wake_r = self._wake_w = -1
        self.priority = Priority.from_env()

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
        self._write_status()

    def _write_status(self) -> None:
        self.reporter.write_status([n.rec for n in self.nics], [w.rec for w in self.switches])

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
            watch = NetnsWatch([h.netns for h in self.hosts]
                               + ([self.topology.switch_netns] if self.switch_hosts else []))
            for host in self.hosts:
                self.nics.append(NicWatch(host))
                self.nics[-1].rec.slow_path = self.priority.normal
            for host in self.switch_hosts:
                self.switches.append(SwitchWatch(self.topology, host))
            self._check_netns(watch)
            for n in self.nics:
                t = time.monotonic()
                reaction = n.rec.reconcile("start", t, full=True)
                self._record(reaction)
            for w in self.switches:
                reaction = w.rec.reconcile("start", time.monotonic())
                self._record(reaction)
            # What start-up built (topology, plans, rules) lives as long as the agent: out of the
            # collector's generations, a full collection never scans it in the middle of a reaction.
            gc.freeze()
            self.priority.fast()
            self.priority.normal()
            self.reporter.priority = self.priority.describe()
            if self.priority.refused:
                self.reporter.line(f"agent: reactions at normal priority: {self.priority.refused}")
            self.reporter.ready = True
            self._write_status()
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
            for w in self.switches:
                w.close()
            if watch is not None:
                watch.close()
            signal.set_wakeup_fd(-1)
            for s, h in old.items():
                signal.signal(s, h)
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)

    def _react(self, n: NicWatch, t_event: float, watch: NetnsWatch) -> Optional[Reaction]:
        """NIC ``n``'s queued events: the fast reaction, or a full reconcile when events were lost."""
        batch = n.events.drain()
        if batch.lost:
            self.priority.normal()  # a full reconcile may take long
            return safe_reconcile(n.rec, "ENOBUFS: events lost", t_event, full=True)
        if not batch.messages:
            return None
        self._check_netns(watch)
        trigger = ",".join(sorted(batch.names)) or "link event"
        react = functools.partial(n.rec.react, trigger, t_event, batch.links, batch.names, batch.deleted)
        return safe_call(n.rec, trigger, t_event, react)

    def _loop(self, watch: NetnsWatch) -> None:
        by_fd = {n.fileno(): n for n in self.nics}
        switch_fd = {w.fileno(): w for w in self.switches}
        fds = list(by_fd) + list(switch_fd) + [watch.fileno(), self._wake_r]
        while not self.stop:
            if self.resync_all:
                self.resync_all = False
                for n in self.nics:
                    self._record(safe_reconcile(n.rec, "SIGHUP", time.monotonic(), full=True))
                for w in self.switches:
                    self._record(w.rec.safe_reconcile("SIGHUP", time.monotonic()))
                continue
            dues = [d for d in (n.rec.due_in() for n in self.nics) if d is not None]
            self.priority.fast()  # woken, and reacting, ahead of the lab's processes
            readable, _, _ = select.select(fds, [], [], min(dues) if dues else None)
            t_event = time.monotonic()
            reactions = [self._react(by_fd[fd], t_event, watch) for fd in readable if fd in by_fd]
            self.priority.normal()  # the rest may take long
            for reaction in reactions:
                self._record(reaction)
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
                w = switch_fd.get(fd)
                if w is not None:  # the switch's tables: every change read and planned afresh
                    batch = w.events.drain()
                    if batch.lost or batch.messages:
                        names = ",".join(sorted(batch.names)) or "link event"
                        trigger = "ENOBUFS: events lost" if batch.lost else names
                        self._record(w.rec.safe_reconcile(trigger, t_event))
