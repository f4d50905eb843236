"""The CLI's ``traffic KIND [ARGS]``: a thin call into ``lab.traffic`` (``testbed.verify.LabTraffic``).

::

    traffic failover [TARGET...] [--fail HOST:PORT] [--restore-after S] [--duration S] [--rate PPS]
    traffic rdma [TARGET] [--fail HOST:PORT] [--qps N]
    traffic hash [--target HOST:FN] [--flows N] [--fail HOST:PORT]

Defaults come from the topology: the target is the first NIC host's first
VF (its RDMA function for ``rdma``, its bond if it has no VF); ``--fail``
is that host's bond's active port (``HOST:active``). Prints every check,
the summary and the verdict; a FAIL raises ``VerificationFailed``.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, List, NoReturn, Optional

from mininet.log import output

from testbed import labstore
from testbed.errors import UsageError, VerificationFailed
from testbed.topology import Topology
from traffic.pacing import STREAM_RATE_PPS


class _HelpShown(Exception):
    """``-h`` printed the help: nothing else to do."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting the Mininet session."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", fix=f"`{self.prog} --help`")

    def exit(self, status: int = 0, message: Optional[str] = None) -> NoReturn:
        if message or status:
            raise UsageError((message or f"{self.prog}: exit status {status}").strip())
        raise _HelpShown()


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="traffic", description="Traffic verifications on this lab (testbed.verify): real frames "
                "through the namespaces, checked against stated tolerances; prints the checks and PASS/FAIL.")
    sub = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    f = sub.add_parser("failover", help="streams to/from targets while a port fails: gaps and losses vs the bond")
    f.add_argument("targets", nargs="*", metavar="TARGET",
                   help="HOST:FN, e.g. server:vf0 server:rdma0 (default: the first NIC host's first VF)")
    f.add_argument("--fail", metavar="HOST:PORT", help="the port to fail (default HOST:active, the bond's active port)")
    f.add_argument("--restore-after", type=float, metavar="S", help="repair the port S seconds after the failure "
                   "(default: it stays failed; `restore HOST PORT` repairs it)")
    f.add_argument("--duration", type=float, default=3.0, metavar="S", help="stream duration (default 3)")
    f.add_argument("--rate", type=float, default=STREAM_RATE_PPS, metavar="PPS",
                   help=f"packets per second per stream (default {STREAM_RATE_PPS:g})")
    r = sub.add_parser("rdma", help="RoCEv2 streams (one flow per QP) while a port fails; ICRC and PSN checked")
    r.add_argument("target", nargs="?", metavar="TARGET", help="HOST:RDMA (default: the first NIC host's)")
    r.add_argument("--fail", metavar="HOST:PORT", help="default HOST:active")
    r.add_argument("--qps", type=int, default=4, help="queue pairs (default 4)")
    h = sub.add_parser("hash", help="active-active labs: flows spread over the ports by the RX hash, moves on failure")
    h.add_argument("--target", metavar="HOST:FN", help="default: the first NIC host's first VF")
    h.add_argument("--flows", type=int, default=256, help="flows (default 256)")
    h.add_argument("--fail", metavar="HOST:PORT", help="the port failed in the middle phase (default HOST:active)")
    return p


def default_target(topo: Topology, kind: str) -> str:
    host = topo.nic_host()
    nic = host.nic
    assert nic is not None
    if kind == "rdma":
        if nic.rdma is None:
            raise UsageError(f"lab {topo.name}: {host.name} has no RDMA function", fix="topology: rdma: true")
        return f"{host.name}:{nic.rdma.name}"
    return f"{host.name}:{nic.vfs[0].name}" if nic.vfs else f"{host.name}:bond"


def default_fail(target: str) -> str:
    return f"{target.partition(':')[0]}:active"


def plan(topo: Topology, words: List[str]) -> Callable[[Any], Any]:
    """Parse ``words`` into a call on ``lab.traffic`` (pure; raises UsageError / _HelpShown)."""
    a = parser().parse_args(words)
    if a.kind == "failover":
        targets = a.targets or [default_target(topo, "failover")]
        fail = a.fail or default_fail(targets[0])
        return lambda t: t.failover(targets=targets, fail=fail, restore_after_s=a.restore_after,
                                    duration_s=a.duration, rate_pps=a.rate)
    if a.kind == "rdma":
        target = a.target or default_target(topo, "rdma")
        fail = a.fail or default_fail(target)
        return lambda t: t.rdma(target=target, fail=fail, qps=a.qps)
    target = a.target or default_target(topo, "hash")
    fail = a.fail or default_fail(target)
    return lambda t: t.hash(flows=a.flows, fail=fail, target=target)


def run_traffic(topo: Topology, words: List[str]) -> None:
    try:
        call = plan(topo, words)
    except _HelpShown:
        return
    from testbed.lab import Lab

    lab = Lab(topo, agent=labstore.read(topo.name).agent)
    result = call(lab.traffic)
    for c in result.checks:
        output(f"  {c.line()}\n")
    summary = getattr(result, "summary", "")
    if summary:
        output(f"  {summary}\n")
    output(f"traffic {' '.join(words)}: {result.verdict}\n")
    if not result.passed:
        raise VerificationFailed(f"lab {topo.name}: traffic {' '.join(words)}: FAIL",
                                 fix="the FAIL lines above say which check and by how much")
