"""Failure injection on the wire: a port's switch-side peer goes down, so the port loses carrier
exactly as a pulled cable would, and the bond (not us) decides what happens next.

One RTM_SETLINK by name over a raw netlink socket made in the switch namespace (``nl.ns_socket``,
``nlpipe``): ``fail`` and ``restore`` import no pyroute2, which under TCG is most of their start-up."""

from __future__ import annotations

import errno
import socket

from testbed import labstore, naming, nlpipe, rawnl
from testbed.errors import NetlinkOpError, UsageError
from testbed.nl import ns_socket, op_error

NETLINK_ROUTE = 0


def set_wire(lab: str, host: str, port: str, up: bool) -> str:
    topo = labstore.read(lab).model()
    try:
        h = topo.host(host)
    except KeyError:
        raise UsageError(f"lab {lab}: no host {host!r}; hosts: {', '.join(x.name for x in topo.hosts)}") from None
    if port not in h.uplinks:
        raise UsageError(f"lab {lab}: host {host} has no port {port!r}; ports: {', '.join(h.uplinks)}")
    peer = naming.switch_port(host, port)
    set_link_up(topo.switch_netns, peer, up)
    return peer


def set_link_up(ns: str, ifname: str, up: bool) -> None:
    """``ip -n NS link set IFNAME up|down``; NetlinkOpError naming the interface if it fails."""
    with ns_socket(ns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.setblocking(False)  # nlpipe waits with a deadline
        (reply,) = nlpipe.transact(sock, [(rawnl.RTM_SETLINK, 0, rawnl.link_set_up_body(ifname, up))])
    if reply.errno == errno.ENODEV:
        raise NetlinkOpError(f"{ifname}: no such interface in {ns}", errno=errno.ENODEV)
    if reply.errno:
        raise op_error(f"{ns}: {ifname}: set {'up' if up else 'down'}", reply.errno)
