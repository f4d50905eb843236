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
