"""Targets, peers and wires resolved from the shipped topologies (pure)."""

from __future__ import annotations

import os

import pytest

from testbed import loader
from testbed.errors import UsageError
from testbed.verify import stations

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def topo(name: str, lab: str = "t1"):
    return loader.load(os.path.join(ROOT, "topologies", f"{name}.yaml"), lab_name=lab)


def test_vf_rdma_and_bond_targets():
    t = topo("active-backup")
    nic = t.host("server").nic
    vf = stations.resolve_target(t, "server:vf0")
    st = vf.station
    assert (vf.kind, st.netns, st.ifname, st.ip) == ("vf", "t1-server-vf0", "vf0", "198.18.0.11")
    assert vf.station.mac == nic.vfs[0].mac and vf.function is nic.vfs[0]
    rd = stations.resolve_target(t, "server:rdma0")
    assert (rd.kind, rd.station.netns, rd.station.mac, rd.station.ip) == ("rdma", "t1-server-rdma0", nic.mac,
                                                                          "198.18.0.1")
    for spec in ("server:bond", "server:bond0"):
        b = stations.resolve_target(t, spec)
        assert (b.spec, b.kind, b.station.netns, b.station.ifname) == ("server:bond", "bond", "t1-server", "bond0")


def test_bad_targets_name_the_choices():
    t = topo("active-backup")
    with pytest.raises(UsageError, match="no VF or RDMA function 'vf9'") as info:
        stations.resolve_target(t, "server:vf9")
    assert "server:vf0" in info.value.fix and "server:bond" in info.value.fix
    with pytest.raises(UsageError, match="has no NIC"):
        stations.resolve_target(t, "client:vf0")
    with pytest.raises(UsageError, match="no host 'nope'"):
        stations.resolve_target(t, "nope:vf0")
    with pytest.raises(UsageError, match="expected HOST:NAME"):
        stations.resolve_target(t, "vf0")


def test_peer_wires_and_ports():
    t = topo("lacp")
    peer = stations.peer_station(t)
    assert (peer.label, peer.netns, peer.ifname, peer.ip) == ("client", "t1-client", "eth0", "198.18.0.100")
    assert stations.wires(t, t.host("server")) == {"server-pf0": "pf0", "server-pf1": "pf1"}
    host, port = stations.port_endpoint(t, "server:pf1")
    assert (host.name, port) == ("server", "pf1")
    with pytest.raises(UsageError, match="no port 'pf7'"):
        stations.port_endpoint(t, "server:pf7")
    with pytest.raises(UsageError, match="no plain host named 'other' to exchange"):
        stations.peer_station(t, "other")


def test_dual_stack_stations_pick_the_family():
    """``family`` None: IPv4 where the endpoint has it, else IPv6 (the IPv6-only VF); 4 or 6 as asked, with a
    one-line error naming the endpoint that lacks it."""
    t = topo("dual-stack")
    assert stations.resolve_target(t, "server:vf0").station.ip == "198.18.0.11"
    assert stations.resolve_target(t, "server:vf0", 6).station.ip == "2001:2::11"
    assert stations.resolve_target(t, "server:vf1").station.ip == "2001:2::12"  # IPv6 only
    assert stations.resolve_target(t, "server:rdma0", 6).station.ip == "2001:2::1"  # the bond's
    assert stations.resolve_target(t, "server:bond", 6).station.ip == "2001:2::1"
    assert stations.peer_station(t, family=6).ip == "2001:2::100"
    assert stations.peer_station(t).ip == "198.18.0.100"
    with pytest.raises(UsageError) as info:
        stations.resolve_target(t, "server:vf1", 4)
    assert "server:vf1 has no IPv4 address" in info.value.message and "IPv6" in info.value.fix
    with pytest.raises(UsageError) as info:
        stations.resolve_target(topo("active-backup"), "server:vf0", 6)
    assert "has no IPv6 address" in info.value.message and "ipv6: true" in info.value.fix


def test_failover_streams_pair_each_target_with_the_peer_of_its_family():
    from testbed.verify import failover_run

    t = topo("dual-stack")
    tgts = failover_run.targets(t, ["server:vf0", "server:vf1"], True)
    assert [x.station.ip for x in tgts] == ["198.18.0.11", "2001:2::12", "198.18.0.1"]
    clients = {v: stations.peer_station(t, family=v) for v in (4, 6)}
    specs, _ = failover_run.stream_specs(tgts, clients, ("rx", "tx"), 1)
    for s in specs:
        assert (":" in s.tx.ip) == (":" in s.rx.ip), s.name
    assert [x.station.ip for x in failover_run.targets(t, ["server:vf0"], True, 6)] == ["2001:2::11", "2001:2::1"]
