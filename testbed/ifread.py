"""One interface of a named namespace, read over a raw rtnetlink socket this process makes there.

``testbed status`` reads every function's netdev in the function's own namespace; through pyroute2 each
such read cost a helper process (``IPRoute(netns=...)`` forks to enter the namespace), 257 of them for a
host with 256 VFs. Here a short-lived thread enters the namespace and makes the socket
(``nl.route_socket``); one RTM_GETLINK and one address dump follow::

    iface("mv-server-vf0", "vf0")
    # {"name": "vf0", "present": True, "mac": "02:..", "operstate": "UP", "up": True,
    #  "alias": "testbed:mv", "addresses": ["198.18.0.2/23"]}
"""

from __future__ import annotations

import errno
from typing import Any, Dict

from testbed import nlpipe, rawnl, rtnlmsg
from testbed.errors import NetlinkOpError
from testbed.nl import route_socket

IFLA_OPERSTATE = rawnl.IFLA_OPERSTATE


def iface(ns: str, ifname: str) -> Dict[str, Any]:
    """``ifname`` in namespace ``ns``: MAC, operstate, IFF_UP, ifalias and its global
    IPv4 and IPv6 addresses (``present``
    False when it is not there)."""
    with route_socket(ns) as sock:
        try:
            link = nlpipe.get(sock, rawnl.RTM_GETLINK, rtnlmsg.getlink(ifname), f"{ns}: {ifname}")
        except NetlinkOpError as exc:
            if exc.errno == errno.ENODEV:
                return {"name": ifname, "present": False}
            raise
        addrs = nlpipe.dump(sock, rtnlmsg.RTM_GETADDR, rtnlmsg.ifaddr_dump(), f"{ns}: addresses")
    return describe(link, addrs)


def describe(link: bytes, addrs: list) -> Dict[str, Any]:
    """The fields of ``iface`` from a raw RTM_NEWLINK and the namespace's raw RTM_NEWADDR messages."""
    index, flags = rawnl.IFINFO.unpack_from(link, rawnl.HDR.size)[2:4]
    got = {t: bytes(p) for t, p in rawnl.attrs(link, rawnl.HDR.size + rawnl.IFINFO.size)}
    oper = got.get(IFLA_OPERSTATE, b"\0")[0]
    return {"name": got.get(rawnl.IFLA_IFNAME, b"").split(b"\0")[0].decode(), "present": True,
            "mac": got[rtnlmsg.IFLA_ADDRESS].hex(":") if rtnlmsg.IFLA_ADDRESS in got else None,
            "operstate": rawnl.operstate(oper),
            "up": bool(flags & rtnlmsg.IFF_UP),
            "alias": got[rtnlmsg.IFLA_IFALIAS].split(b"\0")[0].decode() if rtnlmsg.IFLA_IFALIAS in got else None,
            "addresses": [a for a in (rtnlmsg.ifaddr(m) for m in addrs
                                      if rtnlmsg.IFADDRMSG.unpack_from(m, rawnl.HDR.size)[4] == index) if a]}
