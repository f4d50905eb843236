"""A NIC host's functions (its VFs and the RDMA function), built in batches: a few ``sendmsg`` calls for
hundreds of them, no process and no pyroute2 handle per function namespace.

::

    NIC host ns:  <fn>-rep ═══ <fn>  (the function's own namespace, already made and marked)

1. From the NIC host's namespace, batches (``nlpipe.transact``) of RTM_NEWLINK: per function the
   representor with the bond's MAC, its peer -- the function's netdev -- born in the function's
   namespace (``IFLA_NET_NS_FD``) with its MAC; then per representor its mark and IFF_UP (the kernel
   takes neither ifalias nor, for a veth, IFF_UP at creation).
2. In each function's namespace, a raw rtnetlink socket made by this process (``nl.ns_sockets``: one
   thread enters namespace after namespace, making a socket in each): one RTM_GETLINK for the netdev's ifindex, then
   one batch: its mark and IFF_UP, its address, and for the RDMA function the static neighbours of its
   peers (it shares the bond's MAC, so ARP replies would go to the bond).
3. clsact on the given devices (ports and representors): one link dump for their ifindexes, one batch.

Sent one by one through pyroute2 the same work took a helper process per namespace and about ten round
trips per function (see ``benchmarks/bench_scale.py``). The kernel answers every request of a batch in
order; any refusal becomes NetlinkOpError naming the object.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Callable, Iterable, List, Sequence, Tuple

from testbed import nlpipe, rawnl, rtnlmsg
from testbed.errors import NetlinkOpError
from testbed.nl import ns_sockets, op_error
from testbed.rawnl import NETNS_DIR
from testbed.topology import Function, Nic

Step = Tuple[nlpipe.Request, str]  # a request and what it does, for the error message
FD_CHUNK = 64  # namespace fds held open at once while their functions' veths are made
Peer = Tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]  # (address, MAC) the RDMA function pins as a neighbour


def run(conn, ns: str, steps: Sequence[Step]) -> None:
    """Send the steps as batches over ``conn`` (an IPRoute or a raw rtnetlink socket); NetlinkOpError
    naming the first that the kernel refused (all are sent: the caller's unwind removes what was made)."""
    replies = nlpipe.transact(conn, [req for req, _ in steps])
    for (_, what), reply in zip(steps, replies):
        if reply.errno:
            err = op_error(f"{ns}: {what}", reply.errno)
            if reply.message:
                err = NetlinkOpError(f"{err.message} [{reply.message}]", errno=reply.errno, fix=err.fix)
            raise err


def veths(ipr, ns: str, nic: Nic, functions: Sequence[Function], mark: str) -> None:
    """Step 1: every function's representor in ``ns`` (``ipr``'s namespace) and its netdev in its own."""
    for start in range(0, len(functions), FD_CHUNK):
        chunk = functions[start:start + FD_CHUNK]
        fds: List[int] = []
        try:
            steps: List[Step] = []
            for fn in chunk:
                fds.append(os.open(os.path.join(NETNS_DIR, fn.netns), os.O_RDONLY | os.O_CLOEXEC))
                body = rtnlmsg.veth_pair(fn.rep, nic.mac, fn.name, fn.mac, fds[-1])
                steps.append(((rtnlmsg.RTM_NEWLINK, rtnlmsg.CREATE, body), f"veth {fn.rep} <-> {fn.netns}: {fn.name}"))
            steps += [((rtnlmsg.RTM_NEWLINK, 0, rtnlmsg.link_set(fn.rep, alias=mark, up=True)), f"{fn.rep}: mark, up")
                      for fn in chunk]
            run(ipr, ns, steps)
        finally:
            for fd in fds:
                os.close(fd)


def configure(functions: Sequence[Function], mark: str, peers: Callable[[Function], Iterable[Peer]]) -> None:
    """Step 2 for each function, inside its namespace: mark and up, address, ``peers(fn)`` as static
    neighbours. The sockets are made ``FD_CHUNK`` at a time by one thread (``nl.ns_sockets``)."""
    for start in range(0, len(functions), FD_CHUNK):
        chunk = functions[start:start + FD_CHUNK]
        socks = ns_sockets([fn.netns for fn in chunk], socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            for fn, sock in zip(chunk, socks):
                if sock is None:
                    raise op_error(f"{fn.netns}: cannot enter the namespace", errno.ENOENT)
                configure_one(sock, fn, mark, peers(fn))
        finally:
            for sock in socks:
                if sock is not None:
                    sock.close()


def configure_one(sock: socket.socket, fn: Function, mark: str, peers: Iterable[Peer]) -> None:
    sock.setblocking(False)  # nlpipe waits with poll and a deadline
    index = link_index(sock, fn.netns, fn.name)
    steps: List[Step] = [((rtnlmsg.RTM_NEWLINK, 0, rtnlmsg.link_set(fn.name, alias=mark, up=True)),
                          f"{fn.name}: mark, up")]
    steps += [((rtnlmsg.RTM_NEWADDR, rtnlmsg.CREATE, rtnlmsg.addr(index, a)), f"{fn.name}: address {a}")
              for a in (fn.address, fn.address6) if a is not None]
    steps += [((rtnlmsg.RTM_NEWNEIGH, rtnlmsg.CREATE, rtnlmsg.neigh(index, ip, mac)), f"neighbour {ip}")
              for ip, mac in peers]
    run(sock, fn.netns, steps)


def link_index(conn, ns: str, name: str) -> int:
    """The ifindex of interface ``name`` (one RTM_GETLINK); NetlinkOpError (ENODEV) if it is not there."""
    return rawnl.link_index(nlpipe.get(conn, rtnlmsg.RTM_GETLINK, rtnlmsg.getlink(name), f"{ns}: {name}"))


def clsact(ipr, ns: str, devs: Sequence[str]) -> None:
    """Step 3: a clsact qdisc on each of ``devs`` (interfaces of ``ipr``'s namespace)."""
    index = nlpipe.link_index(ipr)
    missing = [d for d in devs if d not in index]
    if missing:
        raise op_error(f"{ns}: {missing[0]}: vanished while building", errno.ENODEV)
    run(ipr, ns, [((rtnlmsg.RTM_NEWQDISC, rtnlmsg.CREATE, rtnlmsg.clsact(index[d])), f"{d}: clsact qdisc")
                  for d in devs])
