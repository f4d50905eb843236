"""The batched build's request bodies (``testbed.rtnlmsg``), read back by an independent decoder: pyroute2's
own message classes parse each body as the kernel would see it."""

from __future__ import annotations

import ipaddress

import pytest

from testbed import fnbuild, loader, nlpipe, rawnl, rtnlmsg


def decode(cls, msg_type: int, body: bytes):
    msg = cls(rawnl.header(len(body), msg_type, 0, 1) + body)
    msg.decode()
    return msg


def test_veth_pair_makes_the_peer_in_its_namespace_with_its_mac():
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    msg = decode(ifinfmsg, rtnlmsg.RTM_NEWLINK,
                 rtnlmsg.veth_pair("vf255-rep", "02:00:00:00:00:01", "vf255", "02:aa:bb:cc:dd:ee", 17))
    assert msg["index"] == 0 and msg["change"] == 0  # IFF_UP at creation: the kernel says ENOTCONN
    assert msg.get_attr("IFLA_IFNAME") == "vf255-rep" and msg.get_attr("IFLA_ADDRESS") == "02:00:00:00:00:01"
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "vf255" and peer.get_attr("IFLA_ADDRESS") == "02:aa:bb:cc:dd:ee"
    assert peer.get_attr("IFLA_NET_NS_FD") == 17 and peer["change"] == 0


def test_link_set_and_getlink_go_by_name():
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    msg = decode(ifinfmsg, rtnlmsg.RTM_NEWLINK, rtnlmsg.link_set("vf0-rep", alias="testbed:mv"))
    assert (msg["index"], msg["change"]) == (0, 0)  # no flag changes: only the alias
    msg = decode(ifinfmsg, rtnlmsg.RTM_NEWLINK, rtnlmsg.link_set("vf0-rep", alias="testbed:mv", up=True))
    assert (msg["flags"], msg["change"]) == (1, 1) and msg.get_attr("IFLA_IFALIAS") == "testbed:mv"
    assert msg.get_attr("IFLA_IFNAME") == "vf0-rep" and msg.get_attr("IFLA_IFALIAS") == "testbed:mv"
    msg = decode(ifinfmsg, rtnlmsg.RTM_GETLINK, rtnlmsg.getlink("lo"))
    assert msg.get_attr("IFLA_IFNAME") == "lo" and msg.get_attr("IFLA_EXT_MASK") == rtnlmsg.RTEXT_FILTER_SKIP_STATS


def test_address_neighbour_and_clsact():
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ndmsg import ndmsg
    from pyroute2.netlink.rtnl.tcmsg import tcmsg

    msg = decode(ifaddrmsg, rtnlmsg.RTM_NEWADDR, rtnlmsg.addr(5, ipaddress.ip_interface("198.18.1.1/23")))
    assert (msg["family"], msg["prefixlen"], msg["index"]) == (2, 23, 5)
    assert msg.get_attr("IFA_LOCAL") == msg.get_attr("IFA_ADDRESS") == "198.18.1.1"
    body = rtnlmsg.addr(5, ipaddress.ip_interface("198.18.1.1/23"))
    assert rtnlmsg.ifaddr(rawnl.header(len(body), rtnlmsg.RTM_NEWADDR, 0, 1) + body) == "198.18.1.1/23"
    body = rtnlmsg.neigh(3, ipaddress.ip_address("198.18.0.9"), "02:00:00:00:00:09")
    msg = decode(ndmsg, rtnlmsg.RTM_NEWNEIGH, body)
    assert (msg["family"], msg["ifindex"], msg["state"]) == (2, 3, rtnlmsg.NUD_PERMANENT)
    assert msg.get_attr("NDA_DST") == "198.18.0.9" and msg.get_attr("NDA_LLADDR") == "02:00:00:00:00:09"
    body = rtnlmsg.addr(5, ipaddress.ip_interface("2001:2::7/64"))
    assert rtnlmsg.ifaddr(rawnl.header(len(body), rtnlmsg.RTM_NEWADDR, 0, 1) + body) == "2001:2::7/64"
    link_local = bytearray(rtnlmsg.addr(5, ipaddress.ip_interface("fe80::1/64")))
    link_local[3] = 253  # ifa_scope: RT_SCOPE_LINK, as the kernel reports a link-local address
    assert rtnlmsg.ifaddr(rawnl.header(len(link_local), rtnlmsg.RTM_NEWADDR, 0, 1) + bytes(link_local)) is None
    msg = decode(ifaddrmsg, rtnlmsg.RTM_NEWADDR, rtnlmsg.addr(5, ipaddress.ip_interface("2001:2::7/64")))
    assert (msg["family"], msg["prefixlen"], msg["index"], msg["flags"]) == (10, 64, 5, rtnlmsg.IFA_F_NODAD)
    assert msg.get_attr("IFA_ADDRESS") == "2001:2::7"
    msg = decode(ndmsg, rtnlmsg.RTM_NEWNEIGH, rtnlmsg.neigh(3, ipaddress.ip_address("2001:2::9"), "02:00:00:00:00:09"))
    assert (msg["family"], msg["ifindex"], msg["state"]) == (10, 3, rtnlmsg.NUD_PERMANENT)
    assert msg.get_attr("NDA_DST") == "2001:2::9" and msg.get_attr("NDA_LLADDR") == "02:00:00:00:00:09"
    msg = decode(tcmsg, rtnlmsg.RTM_NEWQDISC, rtnlmsg.clsact(9))
    assert (msg["index"], msg["handle"], msg["parent"]) == (9, 0xFFFF0000, 0xFFFFFFF1)
    assert msg.get_attr("TCA_KIND") == "clsact"


def test_veths_are_one_batch_per_chunk_of_namespaces_and_a_refusal_names_the_function(monkeypatch, tmp_path):
    topo = loader.load("topologies/many-vfs.yaml")
    nic = topo.nic_host().nic
    for fn in nic.functions:
        (tmp_path / fn.netns).touch()
    monkeypatch.setattr(fnbuild, "NETNS_DIR", str(tmp_path))
    batches = []

    def transact(conn, requests):
        batches.append(list(requests))
        return [nlpipe.Reply(17 if conn == "refuse" and i == 3 else 0) for i in range(len(batches[-1]))]

    monkeypatch.setattr(nlpipe, "transact", transact)
    fnbuild.veths("ok", "mv-server", nic, nic.functions, "testbed:mv")
    assert [len(b) for b in batches] == [128, 128, 128, 128, 2]  # 257 functions: a veth and a mark each
    first = batches[0]
    assert [t for t, _f, _b in first] == [rtnlmsg.RTM_NEWLINK] * 128
    assert all(f == rtnlmsg.CREATE for _t, f, _b in first[:64]) and all(f == 0 for _t, f, _b in first[64:])
    with pytest.raises(Exception) as info:
        fnbuild.veths("refuse", "mv-server", nic, nic.functions[:8], "testbed:mv")
    assert str(info.value).startswith("mv-server: veth vf3-rep <-> mv-server-vf3: vf3: EEXIST")
