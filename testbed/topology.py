"""The validated topology model: plain data, no kernel calls.

``testbed.loader`` turns a YAML file into these objects; ``testbed.realize``
turns them into namespaces, links and bonds. Every derived name (namespace,
representor, switch port) is a property here so all layers agree on it.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

from testbed import naming
from testbed.errors import UsageError

OFFLOAD_MODES = ("active-backup", "hash", "vf-split")


def split_endpoint(spec: str) -> Tuple[str, str]:
    """``"server:pf0"`` -> ``("server", "pf0")``: HOST:NAME as the CLI, ``Lab`` and verify take it."""
    host, sep, item = spec.partition(":")
    if not sep or not host or not item:
        raise UsageError(f"{spec!r}: expected HOST:NAME",
                         fix="e.g. server:pf0, server:vf0, server:rdma0 or server:bond")
    return host, item


@dataclass(frozen=True)
class Bond:
    mode: str
    miimon: int = 100
    updelay: int = 0
    downdelay: int = 0
    primary: str | None = None
    primary_reselect: str | None = None
    xmit_hash_policy: str | None = None
    lacp_rate: str | None = None
    min_links: int | None = None
    name: str = naming.BOND
    # every other bond option of ``bond.options.OPTIONS`` the file gives: ((name, value), ...)
    settings: Tuple[Tuple[str, object], ...] = ()
    # the ports' own options (``bond.ports`` in the file): ((port, ((name, value), ...)), ...)
    port_settings: Tuple[Tuple[str, Tuple[Tuple[str, object], ...]], ...] = ()

    def value(self, name: str) -> object:
        """A bond option by its table name: a field of its own, else from ``settings`` (None: not given)."""
        if name in self.__dataclass_fields__ and name not in ("settings", "port_settings", "name"):
            return getattr(self, name)
        return dict(self.settings).get(name)

    def port_values(self, port: str) -> dict:
        """The options the file gives for one port (``{}``: none)."""
        return dict(dict(self.port_settings).get(port, ()))

    @property
    def arp_monitor(self) -> bool:
        """The ARP/NS monitor watches the ports (instead of miimon)."""
        return bool(self.value("arp_interval"))


def pick_address(v4: ipaddress.IPv4Interface | None, v6: ipaddress.IPv6Interface | None,
                 family: int | None) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    """``v4`` or ``v6`` for family 4 or 6; for None ``v4`` if given, else ``v6``."""
    if family == 4:
        return v4
    if family == 6:
        return v6
    return v4 if v4 is not None else v6


@dataclass(frozen=True)
class Function:
    """A VF or the RDMA function: a netdev in its own namespace with a representor."""

    name: str
    mac: str
    address: ipaddress.IPv4Interface | None
    netns: str
    kind: str = "vf"  # "vf" or "rdma"
    verbs: bool = False  # a Soft-RoCE device on this netdev (testbed.rdma)
    address6: ipaddress.IPv6Interface | None = None  # a lab with ``ipv6: true``; a VF may have only this

    def ip(self, family: int | None = None) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
        """Its address of ``family`` (4 or 6), or with None its IPv4 address if it has one, else its IPv6."""
        return pick_address(self.address, self.address6, family)

    @functools.cached_property
    def rep(self) -> str:  # cached: the agent's plan asks 65,000 times for 256 VFs (not a field: eq/hash ignore it)
        return naming.representor(self.name)


@dataclass(frozen=True)
class Offload:
    mode: str
    buckets: int = 16


@dataclass(frozen=True)
class Nic:
    ports: Tuple[str, ...]
    bond: Bond
    address: ipaddress.IPv4Interface
    mac: str
    offload: Offload
    vfs: Tuple[Function, ...] = ()
    rdma: Function | None = None
    address6: ipaddress.IPv6Interface | None = None  # the bond's (and the RDMA function's) IPv6 address
    partners: int = 1  # 802.3ad: the switch's LACP partner systems (2: the ports split between two)
    partner_select: str = "modulo"  # how the switch picks the port toward this NIC: its bond's hash, or a table

    @property
    def resilient_switch(self) -> bool:
        """The switch picks the port toward this NIC from a bucket table the agent keeps (``agent.switch``)."""
        return self.partner_select == "resilient"

    @property
    def partner_groups(self) -> Tuple[Tuple[str, ...], ...]:
        """The ports each switch-side partner bond holds: all of them, or with two partners the first half
        (rounded up) and the rest."""
        if self.partners == 1:
            return (self.ports,)
        half = (len(self.ports) + 1) // 2
        return (self.ports[:half], self.ports[half:])

    @property
    def functions(self) -> Tuple[Function, ...]:
        return self.vfs + ((self.rdma,) if self.rdma else ())

    @property
    def primary(self) -> str:
        """The port the bond prefers: ``primary`` if set, else the first enslaved (ice's rule)."""
        return self.bond.primary or self.ports[0]


def partner_nics(host: "Host") -> Tuple["Nic", ...]:
    """The switch's partner bonds facing ``host``'s NIC, each as a Nic over its switch-side ports (for the pure
    bond-state functions): none for active-backup or a plain host, one per partner switch otherwise."""
    nic = host.nic
    if nic is None or nic.bond.mode == "active-backup":
        return ()
    return tuple(replace(nic, ports=tuple(naming.switch_port(host.name, p) for p in group),
                         bond=replace(nic.bond, name=naming.partner_bond(host.name, i)), vfs=(), rdma=None)
                 for i, group in enumerate(nic.partner_groups))


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    address: ipaddress.IPv4Interface
    mac: str
    nic: Nic | None = None
    verbs: bool = False  # a Soft-RoCE device on eth0 (plain hosts)
    address6: ipaddress.IPv6Interface | None = None  # as ``address``: a NIC host's is its bond's

    def ip(self, family: int | None = None) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
        """The host's address of ``family`` (a NIC host: its bond's), as ``Function.ip``."""
        return pick_address(self.address, self.address6, family)

    @property
    def uplinks(self) -> Tuple[str, ...]:
        """The host-side interfaces that have a wire to the switch."""
        return self.nic.ports if self.nic else (naming.HOST_IF,)


@dataclass(frozen=True)
class VerbsDevice:
    """A Soft-RoCE (rxe) device the lab makes on one of its netdevs. RDMA device names are system-wide,
    so ``name`` carries the lab's (``naming.rdma_device``)."""

    name: str  # tb_<lab>_<host>_<netdev>
    host: str
    owner: str  # "client" (a plain host) or "server:rdma0" (a function)
    netns: str
    netdev: str
    address: ipaddress.IPv4Interface | None


@dataclass(frozen=True)
class Topology:
    name: str
    file: str
    subnet: ipaddress.IPv4Network
    hosts: Tuple[Host, ...]
    description: str = ""
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    subnet6: ipaddress.IPv6Network | None = None  # set when the lab is dual stack (``ipv6: true``)

    @property
    def switch_netns(self) -> str:
        return naming.switch_netns(self.name)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def nic_host(self, name: Optional[str] = None) -> Host:
        """The host with a NIC named ``name`` (default: the first NIC host); UsageError if there is none."""
        for h in self.hosts:
            if h.nic and (name is None or h.name == name):
                return h
        raise UsageError(f"lab {self.name}: no NIC host{f' named {name}' if name else ''}")

    def plain_host(self, name: Optional[str] = None) -> Host:
        """The host without a NIC named ``name`` (default: the first one); UsageError if there is none."""
        for h in self.hosts:
            if not h.nic and (name is None or h.name == name):
                return h
        raise UsageError(f"lab {self.name}: no plain host{f' named {name}' if name else ''}")

    @property
    def netns_names(self) -> Tuple[str, ...]:
        """Every namespace the lab creates, in creation order."""
        names = [self.switch_netns]
        for h in self.hosts:
            names.append(h.netns)
            if h.nic:
                names.extend(f.netns for f in h.nic.functions)
        return tuple(names)

    @property
    def verbs_devices(self) -> Tuple[VerbsDevice, ...]:
        """Every Soft-RoCE device the lab creates, in creation order."""
        out = []
        for h in self.hosts:
            if h.verbs and not h.nic:
                out.append(VerbsDevice(naming.rdma_device(self.name, h.name, naming.HOST_IF), h.name,
                                       h.name, h.netns, naming.HOST_IF, h.address))
            for fn in h.nic.functions if h.nic else ():
                if fn.verbs:
                    out.append(VerbsDevice(naming.rdma_device(self.name, h.name, fn.name), h.name,
                                           f"{h.name}:{fn.name}", fn.netns, fn.name, fn.address))
        return tuple(out)

    def with_name(self, name: str) -> Topology:
        """The same topology under another lab name (for parallel test labs)."""
        from testbed.loader import build_model

        return build_model(self.raw, self.file, lab_name=name)
