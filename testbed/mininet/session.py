"""``testbed mininet FILE``: build the lab in Mininet, run the CLI, and always clean up.

Whatever ends the session - ``exit``, end of input, an error while
building, an exception in a command, SIGTERM or SIGHUP (a closed terminal)
- ``LagNet.stop()`` runs: agent, Mininet, the lab's namespaces. Only a
SIGKILL skips it; ``testbed clean --lab LAB`` (or ``testbed down LAB``) then
removes what is left.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

from mininet.log import setLogLevel

from testbed.bringup import AGENT_TIMEOUT
from testbed.errors import BuildError, TestbedError
from testbed.mininet.cli import LagCLI
from testbed.mininet.net import LagNet
from testbed.mininet.topo import LagTopo
from testbed.topology import Topology


@contextmanager
def signals_end_session() -> Iterator[None]:
    """SIGTERM/SIGHUP raise SystemExit (once) so the ``finally`` that cleans up runs.

    Only in this process: pyroute2 forks helper children (namespace sockets) and ends them with
    SIGTERM; a child that inherited the handler must just exit, not unwind a copy of our stack
    into a second teardown."""
    owner = os.getpid()

    def handler(signum: int, _frame: Any) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # the cleanup itself is not interrupted again
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(topo: Topology, *, agent: bool = True, agent_timeout: float = AGENT_TIMEOUT, loglevel: str = "info",
        stdin: TextIO = sys.stdin) -> int:
    """Build, run the CLI until exit, tear down. Returns 0, or the exit status of the last testbed error a
    CLI command raised (so a piped script fails when e.g. a verification failed)."""
    setLogLevel(loglevel)
    net = LagNet(LagTopo(topo), agent=agent, agent_timeout=agent_timeout, build=False)
    cli = None
    with signals_end_session():
        try:
            try:
                net.build()
                net.start()
            except (TestbedError, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # Mininet raises plain Exception (e.g. "Error creating interface pair")
                raise BuildError(f"lab {topo.name}: Mininet: {exc}") from exc
            cli = LagCLI(net, stdin=stdin)
        finally:
            net.stop()
    if cli is not None and cli.errors:
        return cli.errors[-1].exit_code
    return 0
