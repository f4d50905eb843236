"""Failure injection on the wire: a port's switch-side peer goes down, so the port loses carrier
exactly as a pulled cable would, and the bond (not us) decides what happens next."""

from __future__ import annotations

from testbed import labstore, naming
from testbed.errors import UsageError
from testbed.nl import ifindex, netlink_op, open_ns


def set_wire(lab: str, host: str, port: str, up: bool) -> str:
    topo = labstore.read(lab).model()
    try:
        h = topo.host(host)
    except KeyError:
        raise UsageError(f"lab {lab}: no host {host!r}; hosts: {', '.join(x.name for x in topo.hosts)}") from None
    if port not in h.uplinks:
        raise UsageError(f"lab {lab}: host {host} has no port {port!r}; ports: {', '.join(h.uplinks)}")
    peer = naming.switch_port(host, port)
    with open_ns(topo.switch_netns) as ipr:
        with netlink_op(f"{topo.switch_netns}: {peer}: set {'up' if up else 'down'}"):
            ipr.link("set", index=ifindex(ipr, peer, topo.switch_netns), state="up" if up else "down")
    return peer
