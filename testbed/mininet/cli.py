"""``LagCLI``: Mininet's CLI plus the testbed's commands.

Added::

    fail HOST PORT          take PORT's wire down from the switch side (a pulled cable), then
                            show how the bond and the offload agent reacted, with timings
    restore HOST PORT       the wire back up, same report
    lagstatus [HOST] [-r]   each NIC's bond (active port, per-port state) and the agent's
                            mapping table; -r adds the tc rules with their packet counters
    traffic KIND [ARGS]     the traffic verifications (``lab.traffic``), e.g. traffic failover
    <fn> CMD...             run CMD in a VF's / the RDMA function's namespace: ``vf0 ping -c1 client``
                            (``server-vf0`` when several hosts have a vf0); no shell syntax

Changed::

    link A B up|down        Mininet's own (both ends of every link between A and B); an end may be
                            HOST:PORT (``link sw server:pf0 down``) to take one wire of a NIC host.
                            For a NIC host it then reports the bond's and the agent's reaction.
    <node> CMD              function names (vf0, server-vf0) are replaced by their addresses, as
                            Mininet does for node names: ``client ping vf0``

With standard input not a terminal (a script piped in), a running node
command does not read the following lines as its own input (Mininet would
feed them to it): they stay CLI commands.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mininet.cli import CLI
from mininet.log import error, output

from testbed import wire
from testbed.errors import TestbedError, UsageError
from testbed.mininet import lagstatus
from testbed.mininet.react import Follow
from testbed.topology import Function, Host, Topology

EXTRA_HELP = """
testbed commands (help CMD for details):
  fail HOST PORT, restore HOST PORT    a port's wire down / up from the switch side
  lagstatus [HOST] [-r]                bond state and the offload agent's mapping table
  traffic failover|rdma|hash [ARGS]    the traffic verifications (traffic --help)
  link sw server:pf0 down              one wire of a NIC host (Mininet's link takes them all)
  vf0 ping -c1 client                  a command in a VF's (or the RDMA function's) namespace
"""


def function_names(topo: Topology) -> Dict[str, Tuple[Host, Function]]:
    """CLI names of the VFs and RDMA functions: ``<host>-<fn>`` always, bare ``<fn>`` when unique."""
    out: Dict[str, Tuple[Host, Function]] = {}
    bare: Dict[str, List[Tuple[Host, Function]]] = {}
    for h in topo.hosts:
        if not h.nic:
            continue
        for f in h.nic.functions:
            out[f"{h.name}-{f.name}"] = (h, f)
            bare.setdefault(f.name, []).append((h, f))
    for name, owners in bare.items():
        if len(owners) == 1 and name not in out:
            out[name] = owners[0]
    return out


def split_end(spec: str) -> Tuple[str, Optional[str]]:
    """``server:pf0`` -> (``server``, ``pf0``); ``sw`` -> (``sw``, None)."""
    node, sep, intf = spec.partition(":")
    if sep and (not node or not intf):
        raise UsageError(f"{spec!r}: expected NODE or NODE:INTERFACE, e.g. server:pf0")
    return node, (intf or None)


def two_args(line: str, usage: str) -> Tuple[str, str]:
    args = line.split()
    if len(args) != 2:
        raise UsageError(f"usage: {usage}")
    return args[0], args[1]


class LagCLI(CLI):
    """Use as Mininet's CLI: ``LagCLI(net)`` runs until ``exit``/EOF. ``errors`` holds the testbed
    errors commands raised (the session's exit status is the last one's)."""

    helpStr = CLI.helpStr + EXTRA_HELP

    def __init__(self, mininet: Any, stdin: Any = sys.stdin, script: Optional[str] = None, **kwargs: Any) -> None:
        self.topo: Topology = mininet.model
        self.lab = self.topo.name
        self.functions = function_names(self.topo)
        self.errors: List[TestbedError] = []
        self.follow_timeout = 10.0
        super().__init__(mininet, stdin=stdin, script=script, **kwargs)

    # -- plumbing ---------------------------------------------------------------------------------------
    def onecmd(self, line: str) -> Any:
        """Every command: a TestbedError is reported and the CLI goes on."""
        try:
            return super().onecmd(line)
        except TestbedError as exc:
            self.errors.append(exc)
            error(f"*** {exc}\n")
            return None

    def waitForNode(self, node: Any) -> None:  # noqa: N802 - Mininet's name
        if self.isatty():
            super().waitForNode(node)
            return
        while node.waiting:  # a script: the next lines are CLI commands, not the command's input
            try:
                output(node.monitor())
            except KeyboardInterrupt:
                node.sendInt()

    def _ip_of(self, word: str) -> str:
        """A word of a command line with node and function names replaced by their addresses."""
        if word in self.mn:
            return self.mn[word].defaultIntf().updateIP() or word
        owner = self.functions.get(word)
        if owner and owner[1].address is not None:
            return str(owner[1].address.ip)
        return word

    def default(self, line: str) -> None:
        first, args, line = self.parseline(line)
        if first in self.functions and first not in self.mn:
            self.run_in_function(first, args or "")
            return
        if first in self.mn and args:
            words = [w if w in self.mn or w not in self.functions else self._ip_of(w) for w in args.split(" ")]
            line = f"{first} {' '.join(words)}"
        super().default(line)

    def run_in_function(self, name: str, args: str) -> None:
        _host, fn = self.functions[name]
        words = [self._ip_of(w) for w in shlex.split(args)]
        if not words:
            raise UsageError(f"{name}: give a command to run, e.g. {name} ping -c1 client")
        sys.stdout.flush()
        stdin = None if self.isatty() else subprocess.DEVNULL
        subprocess.run(["ip", "netns", "exec", fn.netns] + words, stdin=stdin, check=False)

    def _host(self, name: str) -> Host:
        try:
            return self.topo.host(name)
        except KeyError:
            raise UsageError(f"lab {self.lab}: no host {name!r}; hosts: "
                             f"{', '.join(h.name for h in self.topo.hosts)}") from None

    def _report(self, follows: Sequence[Tuple[Follow, Sequence[str]]], up: bool) -> None:
        for follow, ports in follows:
            try:
                res = follow.wait(ports, up, self.follow_timeout)
            finally:
                follow.close()
            output("\n".join(res.lines()) + "\n")

    # -- fail / restore ---------------------------------------------------------------------------------
    def _wire(self, line: str, up: bool) -> None:
        verb = "restore" if up else "fail"
        host_name, port = two_args(line, f"{verb} HOST PORT   e.g. {verb} server pf0")
        host = self._host(host_name)
        follow = Follow(self.topo, host) if host.nic and port in host.nic.ports else None
        try:
            if follow:
                follow.mark()
            peer = wire.set_wire(self.lab, host_name, port, up)
        except BaseException:
            if follow:
                follow.close()
            raise
        output(f"{host_name}:{port}: wire {peer} {'up' if up else 'down'} (switch side)\n")
        if follow:
            self._report([(follow, [port])], up)

    def do_fail(self, line: str) -> None:
        """Take a port's wire down from the switch side, as a pulled cable: the port loses carrier, the
           bond fails over by itself, the offload agent follows. Prints the bond's and the agent's
           reaction with timings.
           Usage: fail HOST PORT      e.g. fail server pf0"""
        self._wire(line, up=False)

    def do_restore(self, line: str) -> None:
        """Bring a port's wire back up (undo fail); prints the bond's and the agent's reaction.
           Usage: restore HOST PORT   e.g. restore server pf0"""
        self._wire(line, up=True)

    # -- lagstatus --------------------------------------------------------------------------------------
    def do_lagstatus(self, line: str) -> None:
        """Each NIC's bond as the kernel reports it (mode, active port, per-port carrier, bond and MII
           state, LACP) and the offload agent's mapping table (entry -> port) and last reaction.
           Usage: lagstatus [HOST] [-r|--rules]   (-r: also the tc rules and their packet counters)"""
        args = line.split()
        rules = any(a in ("-r", "--rules") for a in args)
        rest = [a for a in args if a not in ("-r", "--rules")]
        if len(rest) > 1 or any(a.startswith("-") for a in rest):
            raise UsageError("usage: lagstatus [HOST] [-r|--rules]")
        data = lagstatus.collect(self.topo, rest[0] if rest else None)
        output(lagstatus.render(data, rules=rules) + "\n")

    # -- link (Mininet's, plus HOST:PORT) ---------------------------------------------------------------
    def do_link(self, line: str) -> None:
        """Bring link(s) between two nodes up or down (Mininet: both ends of every link between them).
           An end may be NODE:INTERFACE to pick one wire: link sw server:pf0 down.
           For a NIC host, prints how the bond and the offload agent reacted.
           Usage: link end1 end2 [up down]"""
        args = line.split()
        if len(args) != 3 or args[2] not in ("up", "down"):
            raise UsageError("usage: link END1 END2 up|down   (END: node, or HOST:PORT for one wire)")
        (a, ia), (b, ib) = split_end(args[0]), split_end(args[1])
        for n in (a, b):
            if n not in self.mn:
                raise UsageError(f"no node {n!r}; nodes: {' '.join(sorted(self.mn))}")
        pairs = [(x, y) for x, y in self.mn[a].connectionsTo(self.mn[b])
                 if (ia is None or x.name == ia) and (ib is None or y.name == ib)]
        if not pairs:
            raise UsageError(f"no link between {args[0]} and {args[1]}")
        up = args[2] == "up"
        follows = []
        for node, idx in ((a, 0), (b, 1)):
            host = next((h for h in self.topo.hosts if h.name == node and h.nic), None)
            ports = sorted({p[idx].name for p in pairs} & set(host.nic.ports)) if host else []
            if host and ports:
                follows.append((Follow(self.topo, host), ports))
        try:
            for follow, _ in follows:
                follow.mark()
            if ia is None and ib is None:
                self.mn.configLinkStatus(a, b, args[2])  # Mininet's own
            else:
                for x, y in pairs:
                    for intf in (x, y):
                        result = intf.ifconfig(args[2])
                        if result:
                            error(f"*** {intf.node.name}:{intf.name}: {result}\n")
        except BaseException:
            for follow, _ in follows:
                follow.close()
            raise
        output(f"link {args[0]} <-> {args[1]}: {', '.join(f'{x.name}/{y.name}' for x, y in pairs)} "
               f"{args[2]} (both ends)\n")
        self._report(follows, up)

    # -- traffic ----------------------------------------------------------------------------------------
    def do_traffic(self, line: str) -> None:
        """Run a traffic verification on this lab (testbed.verify): real frames through the namespaces,
           checks against stated tolerances, PASS/FAIL. Defaults: the first NIC host's first VF as the
           target, its bond's active port as the port to fail.
           Usage: traffic failover [TARGET...] [--fail HOST:PORT] [--restore-after S]
                  traffic rdma [TARGET] [--fail HOST:PORT] [--qps N]
                  traffic hash [--target HOST:FN] [--flows N] [--fail HOST:PORT]
                  traffic KIND --help"""
        from testbed.mininet.traffic import run_traffic

        words = shlex.split(line)
        if not words:
            raise UsageError("usage: traffic failover|rdma|hash [ARGS]   (traffic --help)")
        sys.stdout.flush()
        run_traffic(self.topo, words)
