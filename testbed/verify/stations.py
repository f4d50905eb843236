"""Where a verification's traffic starts and ends, resolved from the topology alone (pure).

A *station* is one end of a stream: the namespace and interface a raw socket
uses there, and the MAC and IPv4 address its frames carry.  A *target* is what
a user names on the command line:

- ``server:vf0``   the VF ``vf0`` of host ``server`` (its own namespace, its MAC and address)
- ``server:rdma0`` the RDMA function (its namespace; the bond's MAC and address, RoCEv2)
- ``server:bond``  the bond itself (``bond0`` in the host's namespace): kernel traffic, the reference

The other end is a plain host (``client`` by default).  The *wires* of a NIC
host are its ports' switch-side peers (``server-pf0`` -> ``pf0``), where a
capture tells which port carried each frame.

Public API:
    Station(label, netns, ifname, mac, ip)                       frozen dataclass (traffic.streams)
    Target(spec, kind, host, station, function)                  frozen dataclass; kind "vf" | "rdma" | "bond"
    resolve_target(topo, spec) -> Target
    peer_station(topo, name=None) -> Station                     a plain host (the first, or by name)
    wires(topo, host) -> dict[str, str]                          switch-side port -> host port
    port_endpoint(topo, spec) -> (Host, port)                    "server:pf0" checked against the topology
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from testbed import naming
from testbed.errors import UsageError
from testbed.topology import Function, Host, Topology, split_endpoint
from traffic.streams import Station

BOND_ALIASES = ("bond", naming.BOND)


@dataclass(frozen=True)
class Target:
    spec: str  # as given, normalized: "server:vf0", "server:bond"
    kind: str  # "vf" | "rdma" | "bond"
    host: Host
    station: Station
    function: Optional[Function] = None  # the VF / RDMA function (None for the bond)


def _nic_host(topo: Topology, name: str, spec: str) -> Host:
    try:
        host = topo.host(name)
    except KeyError:
        raise UsageError(f"lab {topo.name}: {spec}: no host {name!r}",
                         fix=f"hosts: {', '.join(h.name for h in topo.hosts)}") from None
    if host.nic is None:
        raise UsageError(f"lab {topo.name}: {spec}: host {name} has no NIC",
                         fix=f"NIC hosts: {', '.join(h.name for h in topo.hosts if h.nic)}")
    return host


def resolve_target(topo: Topology, spec: str) -> Target:
    hname, item = split_endpoint(spec)
    host = _nic_host(topo, hname, spec)
    nic = host.nic
    assert nic is not None
    if item in BOND_ALIASES:
        st = Station("bond", host.netns, nic.bond.name, nic.mac, str(nic.address.ip))
        return Target(f"{hname}:bond", "bond", host, st)
    for fn in nic.functions:
        if fn.name == item:
            addr = fn.address if fn.address is not None else nic.address
            st = Station(fn.name, fn.netns, fn.name, fn.mac, str(addr.ip))
            return Target(f"{hname}:{fn.name}", fn.kind, host, st, fn)
    names = [fn.name for fn in nic.functions] + ["bond"]
    raise UsageError(f"lab {topo.name}: {spec}: host {hname} has no VF or RDMA function {item!r}",
                     fix=f"one of: {', '.join(f'{hname}:{n}' for n in names)}")


def peer_station(topo: Topology, name: Optional[str] = None) -> Station:
    """The plain host at the other end of the streams (``client`` in every shipped topology)."""
    plain = [h for h in topo.hosts if h.nic is None]
    if name is not None:
        plain = [h for h in plain if h.name == name]
    if not plain:
        what = f"plain host named {name!r}" if name else "plain host (without a NIC)"
        raise UsageError(f"lab {topo.name}: no {what} to exchange traffic with",
                         fix="add e.g. `client: {address: 198.18.0.100/24}` to the topology")
    h = plain[0]
    return Station(h.name, h.netns, naming.HOST_IF, h.mac, str(h.address.ip))


def wires(topo: Topology, host: Host) -> Dict[str, str]:
    """Switch-side port name -> the host's port it is wired to (``server-pf0`` -> ``pf0``)."""
    return {naming.switch_port(host.name, p): p for p in host.uplinks}


def port_endpoint(topo: Topology, spec: str) -> Tuple[Host, str]:
    """``server:pf0`` -> (host server, "pf0"), checked: the host must have that port."""
    hname, port = split_endpoint(spec)
    host = _nic_host(topo, hname, spec)
    if port not in host.uplinks:
        raise UsageError(f"lab {topo.name}: {spec}: host {hname} has no port {port!r}",
                         fix=f"ports: {', '.join(f'{hname}:{p}' for p in host.uplinks)}")
    return host, port
