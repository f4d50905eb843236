"""One bring-up behind every front end (CLI ``up``, demo, pytest plugin, ``Lab.up``, benchmarks, Mininet).

::

    rec = bringup.up(topo, agent=True, progress=print)

1. ``check``: kernel modules loaded (``caps.ensure_modules``), every bond option the file uses known to
   this kernel's bonding (``bond.kernel.require``), no name the lab needs is taken;
2. ``realize.up``: the lab record (state ``building``, the builder's pid), namespaces, wires, bond, VFs;
3. ``finish``: the agent started and confirmed (its first reconcile done), and only then the record
   says ``up``; how long the agent took is ``rec.agent_ready_s`` (``up`` says it, and its --json).

Until step 3 is through, the record says ``building`` with this process's pid: if this process dies
(SIGKILL at any point) the lab is a crashed build that plain ``testbed clean`` removes, agent
included. Any failure removes what was built and re-raises.
"""

from __future__ import annotations

import time

from testbed import caps, labstore, realize, teardown
from testbed.agent import AGENT_TIMEOUT
from testbed.bond import kernel as bond_kernel
from testbed.progress import Progress, quiet
from testbed.topology import Topology

__all__ = ["AGENT_TIMEOUT", "check", "finish", "ready_line", "up"]
_modules_ready = False  # caps.ensure_modules() passed in this process (modules stay loaded): not again per lab


def ready_line(seconds: float) -> str:
    """The progress line for the agent's start-up (start -> first reconcile done)."""
    return f"agent ready in {seconds:.2f} s (first reconcile)"


def check(topo: Topology, *, progress: Progress = quiet) -> None:
    """What must hold before anything is built: the kernel modules, the bond options, the lab's names free."""
    global _modules_ready
    if not _modules_ready:
        loaded = caps.ensure_modules()
        _modules_ready = True
        if loaded:
            progress(f"loaded kernel modules: {', '.join(loaded)}")
    bond_kernel.require(topo)
    realize.check_conflicts(topo)


def finish(rec: labstore.LabRecord, *, agent: bool, agent_timeout: float = AGENT_TIMEOUT,
           progress: Progress = quiet) -> labstore.LabRecord:
    """Start the agent (if wanted) and wait for its first reconcile, then mark the lab ``up``.
    ``rec.agent_ready_s``: how long that took (the agent's imports, sockets and first reconcile).

    The caller removes the lab if this raises (``up`` does; Mininet's ``LagNet.stop`` does)."""
    rec.agent = agent
    labstore.write(rec)
    if agent:
        from testbed.agent import launcher

        progress("starting the offload agent")
        t = time.monotonic()
        launcher.start(rec.name, timeout=agent_timeout)
        rec.agent_ready_s = round(time.monotonic() - t, 3)
        progress(ready_line(rec.agent_ready_s))
    rec.state = "up"
    labstore.write(rec)
    return rec


def up(topo: Topology, *, agent: bool = True, agent_timeout: float = AGENT_TIMEOUT,
       progress: Progress = quiet) -> labstore.LabRecord:
    """Check, build, start the agent, mark up; on any failure remove what was built and re-raise."""
    check(topo, progress=progress)
    rec = realize.up(topo, progress=progress)
    try:
        return finish(rec, agent=agent, agent_timeout=agent_timeout, progress=progress)
    except BaseException:
        progress(f"lab {topo.name}: bring-up failed, removing what was built")
        teardown.down(topo.name)
        raise
