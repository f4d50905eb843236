"""``LagNet``: Mininet that builds a testbed lab — Mininet's hosts, wires and switch, our NIC, the agent.

::

    build()  check names are free, write the lab record (state "building");
             Mininet creates each node; its namespace is recorded, marked
             and named <lab>-<host> / <lab>-switch (``netns.adopt``)
    start()  Mininet starts the LinuxBridge; then realize.Builder, the same
             code as ``testbed up``: the wires on the switch (partner bond
             for balance-xor/802.3ad), the NIC (bond, VFs, RDMA function,
             clsact, RPS), wait for the bonds; state "up"; start the agent
    stop()   stop the agent, stop Mininet (links, switch, node shells),
             remove the lab (teardown.remove_lab: every recorded, marked
             namespace; waits until the kernel destroyed them). Idempotent;
             also run at interpreter exit if nobody called it.

The NIC host's bond becomes its default Mininet interface (``NicHost``), so
``pingall``/``iperf`` and ``client ping server`` use the bond's address.
``iperf`` (TCP) runs through ``testbed.mininet.iperf``: Mininet 2.3.0's own
hangs with iperf >= 2.0.14.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Any, Dict, Optional

from mininet.link import Intf
from mininet.log import info, warn
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge

from testbed import bringup, labstore, naming, nsfs, realize, teardown
from testbed.errors import BuildError, TestbedError, UsageError
from testbed.mininet import netns
from testbed.mininet.iperf import iperf_tcp
from testbed.mininet.topo import SWITCH, LagTopo, NicHost
from testbed.progress import Progress


def _info(msg: str) -> None:
    info(f"*** {msg}\n")


def _no_move(*_args: Any, **_kwargs: Any) -> None:
    """The bond is created inside the node's namespace: nothing for Mininet to move."""


class LagNet(Mininet):
    def __init__(self, topo: Optional[LagTopo] = None, *, agent: bool = True,
                 agent_timeout: float = bringup.AGENT_TIMEOUT, bond_timeout: float = 60.0,
                 progress: Progress = _info, **kwargs: Any) -> None:
        if not isinstance(topo, LagTopo):
            raise UsageError("LagNet needs a LagTopo (a testbed topology file)",
                             fix="mn --custom testbed/mininet/custom.py --topo lag,FILE.yaml")
        self.model = topo.model
        self.lab = self.model.name
        self.agent = agent
        self.agent_timeout = agent_timeout
        self.bond_timeout = bond_timeout
        self.progress = progress
        self.rec: Optional[labstore.LabRecord] = None  # set once *we* own the lab name
        self.netns_of: Dict[str, str] = {}  # Mininet node name -> its namespace's name
        self.stopped = False
        self.timings: Dict[str, float] = {}
        self._t0 = time.monotonic()
        kwargs.setdefault("switch", LinuxBridge)
        kwargs["controller"] = None  # a Linux bridge needs no OpenFlow controller
        super().__init__(topo=topo, **kwargs)

    # -- build: the record first, then each node's namespace named as it appears --------------
    def build(self) -> None:
        bringup.check(self.model)
        rec = labstore.LabRecord(name=self.lab, file=self.model.file, topology=self.model.raw, pid=os.getpid())
        rec.agent = self.agent
        rec.holder = os.getpid()  # the lab lives and dies with this process: `clean` removes it once it is gone
        labstore.write(rec)
        self.rec = rec
        atexit.register(self._at_exit)
        self._t0 = time.monotonic()
        super().build()

    def _adopt(self, node: Any, name: str) -> None:
        assert self.rec is not None
        self.rec.netns.append(name)
        labstore.write(self.rec)  # recorded before it is reachable by name
        netns.adopt(name, node.pid, naming.mark(self.lab))
        nsfs.write_in_netns(name, nsfs.quiet_ipv6_writes())
        self.netns_of[node.name] = name

    def addHost(self, name: str, cls: Any = None, **params: Any) -> Any:  # noqa: N802 - Mininet's name
        node = super().addHost(name, cls, **params)
        self._adopt(node, naming.host_netns(self.lab, name))
        return node

    def addSwitch(self, name: str, cls: Any = None, **params: Any) -> Any:  # noqa: N802 - Mininet's name
        node = super().addSwitch(name, cls, **params)
        self._adopt(node, self.model.switch_netns)
        return node

    # -- start: Mininet's switch, then the same NIC code as `testbed up`, then the agent ------------
    def start(self) -> None:
        super().start()
        self.timings["mininet_s"] = time.monotonic() - self._t0
        t = time.monotonic()
        self.progress(f"building the NIC (bond, VFs, RDMA function, tc) of lab {self.lab}")
        self.build_nic()
        self.timings["nic_s"] = time.monotonic() - t
        t = time.monotonic()
        assert self.rec is not None
        bringup.finish(self.rec, agent=self.agent, agent_timeout=self.agent_timeout, progress=self.progress)
        if self.agent:
            self.timings["agent_s"] = time.monotonic() - t
        self.timings["total_s"] = time.monotonic() - self._t0
        parts = [("Mininet", "mininet_s"), ("NIC", "nic_s"), ("agent", "agent_s")]
        detail = ", ".join(f"{label} {self.timings[k]:.1f} s" for label, k in parts if k in self.timings)
        self.progress(f"lab {self.lab} is up in {self.timings['total_s']:.1f} s ({detail}); "
                      f"{len(self.rec.netns) if self.rec else 0} namespaces")

    def build_nic(self) -> None:
        assert self.rec is not None
        builder = realize.Builder(self.model, rec=self.rec)
        builder.bond_timeout = self.bond_timeout
        mark = naming.mark(self.lab)
        try:
            builder.step = "mark Mininet's interfaces"
            for link in self.links:
                for intf in (link.intf1, link.intf2):
                    builder.link_set(self.netns_of[intf.node.name], intf.name, ifalias=mark)
            sw = self.model.switch_netns
            for host in self.model.hosts:
                if host.nic:
                    # Mininet set every interface up; the bonding driver enslaves only ports that are down
                    builder.step = f"{host.netns}: ports down before enslaving"
                    for port in host.nic.ports:
                        builder.link_set(host.netns, port, state="down")
                        builder.link_set(sw, naming.switch_port(host.name, port), state="down")
                builder.step = f"{sw}: attach {host.name}'s wires to {SWITCH}"
                builder.switch_side(host, bridge=SWITCH)
                if host.nic:
                    builder.step = f"create the namespaces of {host.name}'s functions"  # ours, as in `up`
                    builder.create_netns(*(fn.netns for fn in host.nic.functions))
                    builder.nic(host)
                    self._register_bond(host)
            builder.step = "wait for the bonds"
            builder.wait_bonds(self.bond_timeout)
        except TestbedError as exc:
            raise BuildError(f"lab {self.lab}: step '{builder.step}' failed: {exc.message}", fix=exc.fix) from exc
        except OSError as exc:
            raise BuildError(f"lab {self.lab}: step '{builder.step}' failed: {exc}") from exc
        finally:
            builder.close()

    def iperf(self, hosts: Any = None, l4Type: str = "TCP", udpBw: str = "10M", fmt: Any = None,  # noqa: N803
              seconds: int = 5, port: int = 5001) -> Any:
        """Mininet's iperf; TCP through ``testbed.mininet.iperf``, which works with iperf >= 2.0.14."""
        if l4Type != "TCP":
            return super().iperf(hosts, l4Type, udpBw, fmt, seconds, port)
        client, server = hosts or [self.hosts[0], self.hosts[-1]]
        return iperf_tcp(self, client, server, fmt, seconds, port)

    def _register_bond(self, host: Any) -> None:
        """Tell Mininet about the bond, so it is the NIC host's default interface."""
        node = self[host.name]
        nic = host.nic
        intf = Intf(nic.bond.name, node=node, mac=nic.mac, moveIntfFn=_no_move, up=None)
        intf.ip, intf.prefixLen = str(nic.address.ip), nic.address.network.prefixlen
        if isinstance(node, NicHost):
            node.bond_intf = intf

    # -- stop: agent, Mininet, our lab ---------------------------------------------------------------
    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        atexit.unregister(self._at_exit)
        if self.rec is None and not (self.hosts or self.switches):
            return  # nothing was built (e.g. the lab name was taken)
        try:
            if self.rec is not None:
                teardown.stop_agent(self.lab)
            super().stop()
        finally:
            self.remove_lab()

    def remove_lab(self) -> None:
        if self.rec is None:
            return  # the lab name was never ours: touch nothing
        rec = labstore.try_read(self.lab) or self.rec
        self.rec = None
        removed = teardown.remove_lab(rec, progress=lambda m: None)
        self.progress(f"lab {self.lab} removed: {len(removed)} namespaces")

    def _at_exit(self) -> None:
        """Interpreter exit without stop() (mn after an exception): end the nodes' shells, remove the lab."""
        if self.stopped or self.rec is None:
            return
        self.stopped = True
        print(f"testbed: lab {self.lab}: removing it at exit", file=sys.stderr)
        try:
            teardown.stop_agent(self.lab)
            for node in list(self.hosts) + list(self.switches):
                try:
                    node.terminate()
                except Exception as exc:  # noqa: BLE001 - best effort on the way out
                    warn(f"{node.name}: {exc}\n")
            self.remove_lab()
        except TestbedError as exc:
            print(f"testbed: error: {exc}", file=sys.stderr)
