"""The agent's CPU priority: its reactions ahead of the lab's own processes.

A NIC driver follows the bond in the kernel (a netdev notifier, then its work queue), ahead of
every user process. The agent stands in for it from user space, so on a busy machine its
wake-up waited behind the lab's traffic: the verifications' sender and captures, a user's
load, and in the VM lane all of them on TCG's one host thread. In a 7.3 guest (2 VFs,
active-backup, 16 failovers each) the agent's event -> rules applied was 16-75 ms at normal
priority and 6-29 ms at SCHED_FIFO; the VF and RDMA gaps over the bond's own, median 1.08x
(17 of 32 within 1.1x) against 0.90x (27 of 32).

So the agent waits for link events, and makes the fast reaction they call for (the prepared
batch, one sendmsg), at the lowest real-time priority (SCHED_FIFO 1), and does everything else
at normal priority: a reaction that needs the read path (``NicReconciler.slow_path``), a full
reconcile, its start-up, the background verify and preparation of the next states' batches,
its status file, the resilient switch's tables. A real-time task that runs long starves the rest of its
CPU (the kernel leaves others 5 % of each second by default), so only the short path is
real-time.

``TESTBED_AGENT_PRIORITY=normal`` keeps the agent at normal priority throughout (the
comparison above). Where the scheduler refuses (no CAP_SYS_NICE, an RT budget of 0 in a
cgroup), the agent runs at normal priority and says so once in its log and ``agent.json``.

Public API::

    Priority.from_env() -> Priority
    p.fast(); p.normal()     set this thread's policy (no-op when unchanged or disabled)
    p.describe() -> str      "realtime (SCHED_FIFO 1) for reactions", "normal", or why not
"""

from __future__ import annotations

import os
from typing import Optional

ENV = "TESTBED_AGENT_PRIORITY"  # "realtime" (default) or "normal"
RT_PRIORITY = 1


class Priority:
    def __init__(self, realtime: bool = True, refused: Optional[str] = None) -> None:
        self.realtime = realtime
        self.refused = refused  # why realtime is off although asked for
        self._fast = False

    @classmethod
    def from_env(cls) -> Priority:
        want = os.environ.get(ENV, "realtime").strip().lower()
        return cls(realtime=want != "normal")

    def fast(self) -> None:
        """Real-time from here (waiting for events, reacting to them)."""
        if not self.realtime or self._fast:
            return
        try:
            # SCHED_RESET_ON_FORK: nothing the agent may ever start inherits real-time priority
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(RT_PRIORITY))
        except (OSError, AttributeError) as exc:
            self.realtime = False
            self.refused = f"the scheduler refused SCHED_FIFO: {getattr(exc, 'strerror', None) or exc}"
            return
        self._fast = True

    def normal(self) -> None:
        """Normal priority from here (anything that may take long)."""
        if not self._fast:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass
        self._fast = False

    def describe(self) -> str:
        if self.realtime:
            return f"realtime (SCHED_FIFO {RT_PRIORITY}) for reactions"
        if self.refused:
            return f"normal ({self.refused})"
        return f"normal ({ENV}=normal)"
