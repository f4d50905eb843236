"""Topology files: the shipped ones load; every malformed one fails with a path-qualified message."""

from __future__ import annotations

import glob
import ipaddress
import os
import re

import pytest

from testbed import loader, naming
from testbed.errors import TopologyError

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
BAD = sorted(glob.glob(os.path.join(HERE, "bad_topologies", "*.yaml")))
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "topologies", "*.yaml")))


def _expect(path: str):
    with open(path) as fh:
        head = fh.read().splitlines()[:2]
    exp_path = re.match(r"# expect-path: ?(.*)$", head[0]).group(1)
    exp_msg = re.match(r"# expect: (.*)$", head[1]).group(1)
    return exp_path, exp_msg


def test_there_are_at_least_30_malformed_files():
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", BAD, ids=[os.path.basename(p)[:-5] for p in BAD])
def test_malformed_topology_is_rejected_with_its_path(path):
    exp_path, exp_msg = _expect(path)
    with pytest.raises(TopologyError) as info:
        loader.load(path)
    err = info.value
    text = str(err)
    assert text.startswith(path), text  # names the file
    assert err.path == exp_path, text  # names the place inside it
    assert exp_msg in text, text  # says what is wrong / allowed


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.basename(p) for p in SHIPPED])
def test_shipped_topologies_load(path):
    topo = loader.load(path)
    assert topo.hosts
    nic_hosts = [h for h in topo.hosts if h.nic]
    assert nic_hosts, "every shipped topology has a NIC host"
    for h in topo.hosts:
        assert ipaddress.ip_network("198.18.0.0/15").supernet_of(h.address.network)
    with open(path) as fh:
        first = fh.readline()
    assert first.startswith("#"), "each shipped topology opens with a diagram comment"


def test_required_shipped_files_exist():
    names = {os.path.basename(p) for p in SHIPPED}
    assert {"active-backup.yaml", "active-active-hash.yaml", "vf-active-active.yaml", "lacp.yaml"} <= names


def test_active_backup_model():
    topo = loader.load(os.path.join(ROOT, "topologies", "active-backup.yaml"))
    server = topo.host("server")
    nic = server.nic
    assert nic.ports == ("pf0", "pf1")
    assert nic.bond.mode == "active-backup" and nic.bond.primary == "pf0"
    assert [v.name for v in nic.vfs] == ["vf0", "vf1"]
    assert nic.rdma is not None and nic.rdma.mac == nic.mac and nic.rdma.address == nic.address
    assert nic.offload.mode == "active-backup"
    assert server.netns == "ab-server"
    assert nic.vfs[0].netns == "ab-server-vf0" and nic.vfs[0].rep == "vf0-rep"
    assert topo.netns_names[0] == "ab-switch"
    assert len(set(topo.netns_names)) == len(topo.netns_names)


def test_generated_macs_are_stable_unicast_and_distinct():
    text = "name: x\nhosts:\n  s:\n    nic: {bond: {mode: balance-xor}, vfs: 8}\n  c: {}\n"
    a = loader.loads(text)
    b = loader.loads(text)
    macs = [f.mac for f in a.host("s").nic.vfs] + [a.host("s").nic.mac, a.host("c").mac]
    assert macs == [f.mac for f in b.host("s").nic.vfs] + [b.host("s").nic.mac, b.host("c").mac]
    assert len(set(macs)) == len(macs)
    assert all(int(m[:2], 16) & 1 == 0 and int(m[:2], 16) & 2 for m in macs)  # unicast, locally administered


def test_auto_addresses_avoid_explicit_ones():
    text = ("name: x\nhosts:\n  s:\n    nic: {bond: {mode: active-backup}, vfs: 2}\n"
            "  c: {address: 198.18.0.1/24}\n")
    topo = loader.loads(text)
    addrs = [h.address.ip for h in topo.hosts] + [f.address.ip for f in topo.host("s").nic.vfs]
    assert len(set(addrs)) == len(addrs)
    assert topo.host("c").address.ip == ipaddress.ip_address("198.18.0.1")


def test_lab_rename_changes_every_namespace():
    topo = loader.load(os.path.join(ROOT, "topologies", "active-backup.yaml"))
    other = topo.with_name("ab2")
    assert not set(topo.netns_names) & set(other.netns_names)
    assert all(n.startswith("ab2-") for n in other.netns_names)


def test_bad_lab_name_override():
    with pytest.raises(TopologyError) as info:
        loader.load(os.path.join(ROOT, "topologies", "active-backup.yaml"), lab_name="Bad!")
    assert info.value.path == "name"


def test_interface_names_fit_ifnamsiz():
    text = "name: x\nhosts:\n  abcdefghij:\n    nic: {bond: {mode: 802.3ad}, vfs: [{name: abcdefghijk}]}\n"
    topo = loader.loads(text)
    h = topo.host("abcdefghij")
    names = [naming.switch_port(h.name, p) for p in h.nic.ports] + [naming.partner_bond(h.name)]
    names += [f.rep for f in h.nic.functions]
    assert all(len(n) <= naming.IFNAMSIZ_MAX for n in names)


def test_schema_is_shipped_and_valid_json_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(loader.schema())


# -- NIC scale: 256 VFs per host ----------------------------------------------------------------------


def _two_big_hosts(vfs: int = loader.MAX_VFS) -> str:
    nic = f"{{bond: {{mode: active-backup}}, vfs: {vfs}, rdma: true}}"
    return f"name: big\nhosts:\n  a:\n    nic: {nic}\n  b:\n    nic: {nic}\n  c: {{}}\n"


def test_a_host_takes_256_vfs_and_not_257():
    assert loader.MAX_VFS == 256
    nic = "{bond: {mode: active-backup}, vfs: %d}"
    topo = loader.loads(f"name: x\nhosts:\n  s:\n    nic: {nic % 256}\n  c: {{}}\n")
    assert [f.name for f in topo.host("s").nic.vfs][-1] == "vf255"
    with pytest.raises(TopologyError) as info:
        loader.loads(f"name: x\nhosts:\n  s:\n    nic: {nic % 257}\n")
    assert info.value.path == "hosts.s.nic.vfs" and "give at most 256" in str(info.value)
    assert "\n" not in str(info.value)


def test_the_schema_vf_limit_is_max_vfs():
    count, listed = loader.schema()["$defs"]["nic"]["properties"]["vfs"]["oneOf"]
    assert count["maximum"] == listed["maxItems"] == loader.MAX_VFS


@pytest.mark.parametrize("needed, prefix", [(1, 24), (254, 24), (255, 23), (510, 23), (511, 22), (1022, 22),
                                            (131070, 15)])
def test_default_subnet_is_the_smallest_that_holds_the_lab(needed, prefix):
    net = loader.default_subnet(needed)
    assert net == ipaddress.ip_network(f"198.18.0.0/{prefix}")
    assert ipaddress.ip_network(loader.DEFAULT_RANGE).supernet_of(net)


def test_default_subnet_beyond_the_benchmarking_range_is_refused():
    assert loader.default_subnet(131071) is None
    host = {"nic": {"bond": {"mode": "active-backup"}, "vfs": 256}}
    data = {"name": "x", "hosts": {f"h{i}": host for i in range(512)}}  # 512 x 257 = 131,584 addresses
    with pytest.raises(TopologyError) as info:
        loader.build_model(data, "<big>")
    assert info.value.path == "hosts" and "131,584 addresses" in str(info.value) and "'subnet'" in str(info.value)


def test_small_labs_keep_the_default_24():
    for path in SHIPPED:
        topo = loader.load(path)
        if "subnet" not in topo.raw and sum(len(h.nic.vfs) + 1 if h.nic else 1 for h in topo.hosts) <= 254:
            assert str(topo.subnet) == loader.DEFAULT_SUBNET, path


def test_two_hosts_of_256_vfs_get_distinct_addresses_and_macs():
    """256 VFs + bond + RDMA on two NIC hosts and a client: 515 addresses, more than a /23 holds."""
    topo = loader.loads(_two_big_hosts())
    assert topo.subnet == ipaddress.ip_network("198.18.0.0/22")
    addrs, macs = [], []
    for h in topo.hosts:
        addrs.append(h.address)
        macs.append(h.mac)
        if h.nic:
            assert len(h.nic.vfs) == 256 and h.nic.rdma.address == h.address
            addrs += [f.address for f in h.nic.vfs]
            macs += [f.mac for f in h.nic.vfs]
    assert len(addrs) == len(set(a.ip for a in addrs)) == 515
    assert all(a.network == topo.subnet for a in addrs)
    assert all(a.ip not in (topo.subnet.network_address, topo.subnet.broadcast_address) for a in addrs)
    assert len(set(macs)) == len(macs)


def test_given_subnet_too_small_for_256_vfs_names_the_fix():
    with pytest.raises(TopologyError) as info:
        loader.loads("name: x\nsubnet: 198.18.0.0/24\nhosts:\n  s:\n    nic: {bond: {mode: active-backup}, vfs: 256}\n")
    assert info.value.path == "hosts.s.nic.vfs[253].address"
    assert "no free address left in subnet 198.18.0.0/24; give a larger 'subnet'" in str(info.value)


def test_256_vfs_fit_every_kernel_name_limit():
    topo = loader.loads(_two_big_hosts())
    for h in topo.hosts:
        for fn in h.nic.functions if h.nic else ():
            assert len(fn.name) <= naming.IFNAMSIZ_MAX and len(fn.rep) <= naming.IFNAMSIZ_MAX
            assert len(fn.netns) <= 255 and "/" not in fn.netns  # a file under /run/netns
    assert topo.host("a").nic.vfs[255].rep == "vf255-rep"
    assert len(set(topo.netns_names)) == len(topo.netns_names) == 1 + 3 + 2 * 257


def test_many_vfs_topology():
    topo = loader.load(os.path.join(ROOT, "topologies", "many-vfs.yaml"))
    server = topo.nic_host()
    assert topo.name == "mv" and len(server.nic.vfs) == loader.MAX_VFS and server.nic.rdma is not None
    assert topo.subnet == ipaddress.ip_network("198.18.0.0/23")
    assert topo.plain_host().address.ip == ipaddress.ip_address("198.18.1.2")


def test_dual_stack_addresses():
    """``ipv6: true``: every host, bond (shared by the RDMA function) and VF gets an IPv6 address, given ones
    first and the rest the next free of subnet6 (default 2001:2::/64); ``address: none`` makes a VF IPv6-only;
    without ``ipv6`` nothing has one."""
    t = loader.loads("""
name: t
ipv6: true
hosts:
  client: {}
  server:
    nic:
      bond: {mode: active-backup}
      vfs: [{name: vf0}, {name: vf1, address: none}, {name: vf2, address6: "2001:2::1/64"}]
      rdma: true
""")
    nic = t.host("server").nic
    assert t.subnet6 == ipaddress.IPv6Network(loader.DEFAULT_SUBNET6)
    assert str(t.host("client").address6) == "2001:2::2/64"  # ::1 is vf2's, given
    assert str(nic.address6) == str(t.host("server").address6) == "2001:2::3/64"
    assert [str(f.address6) for f in nic.functions] == ["2001:2::4/64", "2001:2::5/64", "2001:2::1/64",
                                                         "2001:2::3/64"]
    assert nic.vfs[1].address is None and nic.vfs[1].ip() == nic.vfs[1].address6
    assert nic.vfs[0].ip() == nic.vfs[0].address and nic.vfs[0].ip(6) == nic.vfs[0].address6
    plain = loader.loads("name: t\nhosts:\n  client: {}\n")
    assert plain.subnet6 is None and plain.host("client").address6 is None
    other = loader.loads("name: t\nipv6: true\nsubnet6: 'fd00:1::/120'\nhosts:\n  client: {}\n")
    assert str(other.host("client").address6) == "fd00:1::1/120"


def test_two_partner_switches_split_the_ports():
    """``partners: 2`` (802.3ad): the first half of the ports (rounded up) to one partner bond, the rest to the
    other (``server-lag``, ``server-lag1``); the verifications read both partner bonds."""
    from testbed.verify.labview import LabView

    def nic(ports: int, partners: int = 2):
        return loader.loads(f"name: t\nhosts:\n  server:\n    nic: {{ports: {ports}, partners: {partners}, "
                            "bond: {mode: 802.3ad}}\n").host("server")

    assert nic(4).nic.partner_groups == (("pf0", "pf1"), ("pf2", "pf3"))
    assert nic(3).nic.partner_groups == (("pf0", "pf1"), ("pf2",))
    assert nic(2, 1).nic.partner_groups == (("pf0", "pf1"),)
    host = nic(4)

    class FakeLab:
        topo = loader.loads("name: t\nhosts:\n  client: {}\n")

    pns = LabView(FakeLab()).partner_nics(host)
    assert [(p.bond.name, p.ports) for p in pns] == [("server-lag", ("server-pf0", "server-pf1")),
                                                     ("server-lag1", ("server-pf2", "server-pf3"))]
    assert naming.partner_bond("server") == "server-lag"
