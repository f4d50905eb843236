"""``fail``/``restore`` as one raw RTM_SETLINK (no pyroute2 on their path), and ``nl.netlink_op``'s error
mapping, which recognises pyroute2's NetlinkError without importing pyroute2 itself."""

from __future__ import annotations

import errno
import socket

import pytest

from testbed import nl, nlpipe, rawnl, wire
from testbed.errors import NetlinkOpError


@pytest.mark.parametrize("up", [True, False])
def test_the_setlink_body_is_what_pyroute2_encodes(up):
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    msg = ifinfmsg()
    msg["family"] = 0
    msg["index"] = 0
    msg["flags"] = rawnl.IFF_UP if up else 0
    msg["change"] = rawnl.IFF_UP
    msg["attrs"] = [("IFLA_IFNAME", "ab-server-pf0")]
    msg.encode()
    assert rawnl.link_set_up_body("ab-server-pf0", up) == bytes(msg.data[rawnl.HDR.size:msg["header"]["length"]])


class FakeSocket:
    def __init__(self, seen):
        self.seen = seen

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.seen.append("closed")

    def setblocking(self, flag):
        self.seen.append(("blocking", flag))


@pytest.mark.parametrize("code,message", [
    (0, None),
    (errno.ENODEV, "sw-p0: no such interface in ab-switch"),
    (errno.EPERM, "ab-switch: sw-p0: set down: EPERM (not permitted (run as root))"),
])
def test_set_link_up_sends_one_setlink_and_names_a_failure(monkeypatch, code, message):
    seen = []

    def ns_socket(ns, family, kind, proto=0):
        seen.append((ns, family, kind, proto))
        return FakeSocket(seen)

    def transact(sock, requests):
        seen.append(list(requests))
        return [nlpipe.Reply(code)]

    monkeypatch.setattr(wire, "ns_socket", ns_socket)
    monkeypatch.setattr(nlpipe, "transact", transact)
    if message is None:
        wire.set_link_up("ab-switch", "sw-p0", False)
    else:
        with pytest.raises(NetlinkOpError) as err:
            wire.set_link_up("ab-switch", "sw-p0", False)
        assert str(err.value) == message and err.value.errno == code
    assert seen[0] == ("ab-switch", socket.AF_NETLINK, socket.SOCK_RAW, 0) and ("blocking", False) in seen
    assert seen[2] == [(rawnl.RTM_SETLINK, 0, rawnl.link_set_up_body("sw-p0", False))] and seen[-1] == "closed"


def test_netlink_op_maps_netlink_errors_and_passes_the_rest():
    from pyroute2.netlink.exceptions import NetlinkError

    with pytest.raises(NetlinkOpError) as err:
        with nl.netlink_op("ab-server: bond0: enslave pf1"):
            raise NetlinkError(errno.EBUSY)
    assert str(err.value).startswith("ab-server: bond0: enslave pf1: EBUSY (busy") and err.value.errno == errno.EBUSY
    with pytest.raises(ValueError):
        with nl.netlink_op("anything"):
            raise ValueError("not netlink")
