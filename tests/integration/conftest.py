"""Leak guard for the integration suite: a lab owns what it creates and removes all of it.

Each integration module must leave behind no process and no network namespace that was
not there before it started (labs, agents, traffic senders, rping/verbs peers): a process
of this test run (started by it, or daemonized to init) or a namespace left by one module
would otherwise load the guest or clash with names, and make later timing tests fail far
from their cause. The module that leaked fails at its last teardown, naming what it left
(pid, command line, CPU seconds); the leftovers are killed and the namespaces removed, so
the rest of the run is not poisoned. The system's own processes (udev workers answering
the lab's new links) are not the lab's.
"""

from __future__ import annotations

import os
import signal
from typing import Dict, List, Set

import pytest

from testbed import pids, teardown
from testbed.progress import quiet
from testbed.rawnl import NETNS_DIR


def _processes() -> Dict[int, str]:
    """User-space processes (pid -> command line); kernel threads have an empty cmdline."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd:
            out[int(entry)] = cmd
    return out


def _stat(pid: int) -> List[str]:
    """The fields of /proc/PID/stat after the command name (state first); [] if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _cpu_s(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def _namespaces() -> Set[str]:
    try:
        return set(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return set()


def _parent(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else 0


def _ancestors(pid: int) -> Set[int]:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        pid = _parent(pid)
    return seen


@pytest.fixture(scope="module", autouse=True)
def leak_guard(request):
    mine = _ancestors(os.getpid())
    procs_before = set(_processes())
    ns_before = _namespaces()
    yield
    me = os.getpid()
    # ours: started by this process (directly or not), or daemonized (a lab's agent is
    # re-parented to init); not the system's own (udev workers answering the lab's new links)
    left = {pid: cmd for pid, cmd in _processes().items()
            if pid not in procs_before and pid not in mine
            and (me in _ancestors(pid) or _parent(pid) == 1)}
    stale: List[str] = []
    for pid, cmd in sorted(left.items()):
        if not pids.alive(pid):  # exited (a zombie not yet reaped is not a leak)
            continue
        stale.append(f"pid {pid} ({_cpu_s(pid):.1f} s CPU): {cmd[:160]}")
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    ns_left = sorted(_namespaces() - ns_before)
    if ns_left:
        teardown.delete_netns(ns_left, "leak guard: removing", quiet)
    if stale or ns_left:
        pytest.fail(f"{request.node.name} left behind {len(stale)} process(es) and "
                    f"{len(ns_left)} namespace(s) (killed and removed): "
                    + "; ".join(stale + [f"netns {n}" for n in ns_left]), pytrace=False)
