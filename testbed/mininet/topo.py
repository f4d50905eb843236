"""A topology file as a Mininet ``Topo``: plain data, no kernel calls (Mininet's own rule).

::

    client ── eth0 ═══ client-eth0 ─┐
                                    sw (LinuxBridge, own namespace <lab>-switch)
    server ── pf0  ═══ server-pf0  ─┤
              pf1  ═══ server-pf1  ─┘

Interface names are the ones ``testbed up`` uses, so ``testbed status``,
``testbed fail`` and the agent work unchanged. A NIC host gets no address
from Mininet: its address belongs to the bond, which ``LagNet`` builds after
Mininet has started. VFs and the RDMA function are not Mininet nodes; they
live in their own namespaces exactly as in ``testbed up``.
"""

from __future__ import annotations

from typing import Optional, Union

from mininet.node import Host
from mininet.nodelib import LinuxBridge
from mininet.topo import Topo

from testbed import loader, naming
from testbed.errors import TopologyError
from testbed.topology import Topology

SWITCH = "sw"  # the Mininet switch's node name (and its bridge's name inside <lab>-switch)
SWITCH_DPID = "1"  # Mininet derives a DPID from digits in the name; "sw" has none


class NicHost(Host):
    """A Mininet host that holds a NIC. Once ``LagNet`` has built the bond, the bond is the host's default
    interface, so ``pingall``, ``iperf`` and name substitution (``client ping server``) use its address."""

    bond_intf = None  # set by LagNet once the bond exists

    def defaultIntf(self):  # noqa: N802 - Mininet's name
        return self.bond_intf or super().defaultIntf()


class LagTopo(Topo):
    """``LagTopo(source, name=None)``: ``source`` is a topology file path or a loaded ``Topology``;
    ``name`` overrides the lab name (as ``testbed up --name``). The model is ``self.model``."""

    def build(self, source: Union[str, Topology], name: Optional[str] = None) -> None:  # noqa: D102
        model = source if isinstance(source, Topology) else loader.load(source, lab_name=name)
        if name and model.name != name:
            model = model.with_name(name)
        self.model = model
        for host in model.hosts:
            if host.name == SWITCH:
                raise TopologyError(model.file, f"hosts.{host.name}",
                                    f"the name {SWITCH!r} is the Mininet switch's; rename the host")
            if host.nic and host.nic.resilient_switch:
                raise TopologyError(model.file, f"hosts.{host.name}.nic.partner_select",
                                    "the Mininet CLI builds no resilient switch; `testbed up` does")
        if model.subnet6 is not None:
            raise TopologyError(model.file, "ipv6", "the Mininet CLI builds IPv4-only labs; `testbed up` builds "
                                                    "a dual-stack one")
        self.addSwitch(SWITCH, cls=LinuxBridge, inNamespace=True, dpid=SWITCH_DPID)
        for host in model.hosts:
            if host.nic:
                self.addHost(host.name, cls=NicHost, ip=None)
                for i, port in enumerate(host.nic.ports):
                    self.addLink(host.name, SWITCH, port1=i, intfName1=port,
                                 intfName2=naming.switch_port(host.name, port))
            else:
                self.addHost(host.name, cls=Host, ip=str(host.address))
                self.addLink(host.name, SWITCH, port1=0, intfName1=naming.HOST_IF,
                             intfName2=naming.switch_port(host.name, naming.HOST_IF), addr1=host.mac)
