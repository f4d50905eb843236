"""Where a verification's traffic starts and ends, resolved from the topology alone (pure).

A *station* is one end of a stream: the namespace and interface a raw socket
uses there, and the MAC and IPv4 address its frames carry.  A *target* is what
a user names on the command line:

- ``server:vf0``   the VF ``vf0`` of host ``server`` (its own namespace, its MAC and address)
- ``server:rdma0`` the RDMA function (its namespace; the bond's MAC and address, RoCEv2)
- ``server:bond``  the bond itself (``bond0`` in the host's namespace): kernel traffic, the reference

Which address a station carries (``family``): 4 or 6, or None for IPv4 where the
endpoint has it and IPv6 otherwise (an IPv6-only VF of a dual-stack lab).

Several at once (``expand_targets``): ``server:vf0-vf63`` is every VF of
``server`` from ``vf0`` to ``vf63`` in the NIC's order, ``server:vfs``
every VF of it.

The other end is a plain host (``client`` by default).  The *wires* of a NIC
host are its ports' switch-side peers (``server-pf0`` -> ``pf0``), where a
capture tells which port carried each frame.

Public API:
    Station(label, netns, ifname, mac, ip)                       frozen dataclass (traffic.streams)
    Target(spec, kind, host, station, function)                  frozen dataclass; kind "vf" | "rdma" | "bond"
    resolve_target(topo, spec, family=None) -> Target
    expand_targets(topo, specs) -> list[str]                     ranges and ``HOST:vfs`` spelled out, in order
    peer_station(topo, name=None, family=4) -> Station           a plain host (the first, or by name)
    wires(topo, host) -> dict[str, str]                          switch-side port -> host port
    port_endpoint(topo, spec) -> (Host, port)                    "server:pf0" checked against the topology
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from testbed import naming
from testbed.errors import UsageError
from testbed.topology import Function, Host, Topology, split_endpoint
from traffic.streams import Station

BOND_ALIASES = ("bond", naming.BOND)
ALL_VFS = "vfs"  # HOST:vfs -- every VF of the host


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


def _ip(topo: Topology, what: str, owner: Any, family: Optional[int]) -> str:
    """``owner``'s address of ``family`` (``Host.ip`` / ``Function.ip``), as text; UsageError if it has none."""
    addr = owner.ip(family)
    if addr is None:
        fix = (f"target it over IPv{6 if family == 4 else 4}, or give it an address"
               if owner.ip(None) is not None else "give it an address")
        raise UsageError(f"lab {topo.name}: {what} has no IPv{family} address",
                         fix=fix + ("" if topo.subnet6 or family == 4 else " (a dual-stack lab: `ipv6: true`)"))
    return str(addr.ip)


def resolve_target(topo: Topology, spec: str, family: Optional[int] = None) -> Target:
    hname, item = split_endpoint(spec)
    host = _nic_host(topo, hname, spec)
    nic = host.nic
    assert nic is not None
    if item in BOND_ALIASES:
        st = Station("bond", host.netns, nic.bond.name, nic.mac, _ip(topo, f"{hname}:bond", host, family))
        return Target(f"{hname}:bond", "bond", host, st)
    for fn in nic.functions:
        if fn.name == item:
            st = Station(fn.name, fn.netns, fn.name, fn.mac, _ip(topo, f"{hname}:{fn.name}", fn, family))
            return Target(f"{hname}:{fn.name}", fn.kind, host, st, fn)
    names = [fn.name for fn in nic.functions] + ["bond"]
    raise UsageError(f"lab {topo.name}: {spec}: host {hname} has no VF or RDMA function {item!r}",
                     fix=f"one of: {', '.join(f'{hname}:{n}' for n in names)}")


def _vf_range(topo: Topology, host: Host, spec: str, item: str) -> List[str]:
    """``vfA-vfB`` -> the VF names from A to B (inclusive) in the NIC's order; [] when ``item`` is no range."""
    nic = host.nic
    assert nic is not None
    names = [fn.name for fn in nic.vfs]
    if item == ALL_VFS and ALL_VFS not in names:
        if not names:
            raise UsageError(f"lab {topo.name}: {spec}: host {host.name} has no VF", fix="name a function: "
                             + ", ".join(f"{host.name}:{fn.name}" for fn in nic.functions))
        return names
    first, dash, last = item.partition("-")
    if not dash or item in names:
        return []
    if first not in names or last not in names:
        bad = first if first not in names else last
        raise UsageError(f"lab {topo.name}: {spec}: host {host.name} has no VF {bad!r}",
                         fix=f"a range of its VFs, e.g. {host.name}:{names[0]}-{names[-1]}" if names
                         else f"host {host.name} has no VF")
    a, b = names.index(first), names.index(last)
    if a > b:
        raise UsageError(f"lab {topo.name}: {spec}: {first} comes after {last}",
                         fix=f"{host.name}:{last}-{first}")
    return names[a:b + 1]


def expand_targets(topo: Topology, specs: Sequence[str]) -> List[str]:
    """The targets named by ``specs``, one ``HOST:NAME`` each, in the order given: ``HOST:vfA-vfB`` (a range
    of the host's VFs, inclusive, in the NIC's order) and ``HOST:vfs`` (all of them) spelled out; other
    specs are kept as given (``resolve_target`` checks them)."""
    out: List[str] = []
    for spec in specs:
        hname, item = split_endpoint(spec)
        names = _vf_range(topo, _nic_host(topo, hname, spec), spec, item)
        out += [f"{hname}:{n}" for n in names] if names else [spec]
    return out


def peer_station(topo: Topology, name: Optional[str] = None, family: int = 4) -> Station:
    """The plain host at the other end of the streams (``client`` in every shipped topology)."""
    plain = [h for h in topo.hosts if h.nic is None]
    if name is not None:
        plain = [h for h in plain if h.name == name]
    if not plain:
        what = f"plain host named {name!r}" if name else "plain host (without a NIC)"
        raise UsageError(f"lab {topo.name}: no {what} to exchange traffic with",
                         fix="add e.g. `client: {address: 198.18.0.100/24}` to the topology")
    h = plain[0]
    return Station(h.name, h.netns, naming.HOST_IF, h.mac, _ip(topo, h.name, h, family))


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
