"""Mininet's TCP ``iperf`` command, made to work with iperf >= 2.0.14 (Debian 12 ships 2.1.8).

Mininet 2.3.0 first probes the server with telnet, then reads the server's
output until it holds *two* bandwidth reports, the probe's and the test's.
Newer iperf prints none for a connection that sent nothing ("read tcp flags
(peer close) failed"), so Mininet waits forever (mininet/mininet#1060, open
upstream; checked here: one report, then a hang). Here the commands and the
output are Mininet's, but the server's output is read until the report of
the client's own connection (found by the client's port) has arrived, with
a deadline; and ``select`` waits for output, because Node.monitor's timeout
never fires (its poll object also reports the pty as writable).
"""

from __future__ import annotations

import re
import select
import time
from typing import Any, Callable, List, Optional

from mininet.log import output
from mininet.util import waitListening

from testbed.errors import WaitTimeout


def read_until(node: Any, done: Callable[[str], bool], timeout: float, what: str) -> str:
    """The output of ``node``'s running command until ``done(output)``; WaitTimeout after ``timeout`` s."""
    out = ""
    deadline = time.monotonic() + timeout
    while not done(out):
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"{node.name}: timed out after {timeout:g}s waiting for {what}")
        if select.select([node.stdout], [], [], left)[0]:
            out += node.monitor()
    return out


def stop(node: Any, timeout: float = 10.0) -> str:
    """Interrupt ``node``'s running command and collect what it still prints."""
    node.sendInt()
    try:
        return read_until(node, lambda _out: not node.waiting, timeout / 2, "the command to end after ^C")
    except WaitTimeout:
        node.sendInt()
        return read_until(node, lambda _out: not node.waiting, timeout / 2, "the command to end after ^C ^C")


def report_after(server_out: str, client_port: str) -> Optional[str]:
    """The server's output from the line of the client's connection on, once it holds a bandwidth report."""
    m = re.search(rf"connected with \S+ port {client_port}\b.*", server_out, re.S)
    if m and "/sec" in m.group(0):
        return m.group(0)
    return None


def iperf_tcp(net: Any, client: Any, server: Any, fmt: Optional[str], seconds: int, port: int) -> List[str]:
    output("*** Iperf: testing TCP bandwidth between", client, "and", server, "\n")
    args = f"iperf -p {port} " + (f"-f {fmt} " if fmt else "")
    server.sendCmd(args + "-s")
    try:
        if not waitListening(client, server.IP(), port, timeout=30):
            raise WaitTimeout(f"{server.name}: iperf is not listening on port {port} after 30s")
        cliout = client.cmd(args + f"-t {seconds} -c {server.IP()}")
        m = re.search(r"local \S+ port (\d+) connected with", cliout)
        if not m:
            raise WaitTimeout(f"{client.name}: iperf client did not connect: {cliout.strip()[-300:]}")
        servout = read_until(server, lambda out: report_after(out, m.group(1)) is not None, seconds + 30,
                             f"iperf's report for the connection from port {m.group(1)}")
    finally:
        if server.waiting:
            stop(server)
    result = [net._parseIperf(report_after(servout, m.group(1)) or ""), net._parseIperf(cliout)]
    output(f"*** Results: {result}\n")
    return result
