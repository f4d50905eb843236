"""LagTopo: a topology file as a Mininet Topo (pure data) with the names `testbed up` uses; the mn custom file."""

from __future__ import annotations

import os

import pytest
import yaml
from mininet.node import Host
from mininet.nodelib import LinuxBridge
from mininet.util import buildTopo

from testbed import loader, naming
from testbed.errors import TopologyError
from testbed.mininet.topo import SWITCH, LagTopo, NicHost

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPOS = ["active-backup", "active-active-hash", "vf-active-active", "lacp"]


def path(name: str) -> str:
    return os.path.join(ROOT, "topologies", f"{name}.yaml")


@pytest.mark.parametrize("name", TOPOS)
def test_nodes_and_links_carry_testbed_names(name):
    t = LagTopo(path(name))
    model = t.model
    assert t.switches() == [SWITCH]
    sw = t.nodeInfo(SWITCH)
    assert sw["cls"] is LinuxBridge and sw["inNamespace"] is True, "Linux bridge in a namespace of its own"
    assert sorted(t.hosts()) == sorted(h.name for h in model.hosts)
    links = {(i["node1"], i["intfName1"]): i for _, _, i in t.links(withInfo=True)}
    for h in model.hosts:
        info = t.nodeInfo(h.name)
        if h.nic:
            assert info["cls"] is NicHost and info["ip"] is None, "the NIC host's address is the bond's"
            for i, port in enumerate(h.nic.ports):
                link = links[(h.name, port)]
                assert link["node2"] == SWITCH and link["intfName2"] == naming.switch_port(h.name, port)
                assert link["port1"] == i
        else:
            assert info["cls"] is Host and info["ip"] == str(h.address)
            link = links[(h.name, naming.HOST_IF)]
            assert link["intfName2"] == naming.switch_port(h.name, naming.HOST_IF)
            assert link["addr1"] == h.mac, "the host's MAC from the file, set when the veth is made"
    assert len(links) == sum(len(h.uplinks) for h in model.hosts)


def test_name_override_renames_the_lab_and_its_namespaces():
    t = LagTopo(path("active-backup"), name="mnx")
    assert t.model.name == "mnx"
    assert t.model.switch_netns == "mnx-switch"
    same = LagTopo(loader.load(path("active-backup")), name="mny")
    assert same.model.name == "mny" and same.model.host("server").netns == "mny-server"


def test_a_host_named_like_the_switch_is_refused(tmp_path):
    raw = yaml.safe_load(open(path("active-backup")))
    raw["hosts"][SWITCH] = raw["hosts"].pop("client")
    f = tmp_path / "sw.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(TopologyError, match=r"hosts\.sw: the name 'sw' is the Mininet switch's"):
        LagTopo(str(f))


def test_custom_file_as_mn_loads_it():
    """mn exec()s the file into a fresh dict and copies every name it defines into its globals."""
    file = os.path.join(ROOT, "testbed", "mininet", "custom.py")
    customs: dict = {}
    exec(compile(open(file).read(), file, "exec"), customs, customs)  # noqa: S102 - what mn does
    from testbed.mininet.cli import LagCLI
    from testbed.mininet.net import LagNet

    assert customs["CLI"] is LagCLI and customs["Mininet"] is LagNet
    assert set(customs["topos"]) == {"lag"}
    assert {k for k in customs if not k.startswith("__")} == {"topos", "CLI", "Mininet"}, "nothing else leaks into mn"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        topo = buildTopo(customs["topos"], "lag,topologies/active-backup.yaml,name=mnz")  # mn's --topo parsing
    finally:
        os.chdir(cwd)
    assert topo.model.name == "mnz" and sorted(topo.hosts()) == ["client", "server"]


@pytest.mark.parametrize("name,where", [("dual-stack", r"ipv6: the Mininet CLI builds IPv4-only labs"),
                                        ("lacp-4port-resilient", r"partner_select: the Mininet CLI builds no")])
def test_what_the_mininet_cli_does_not_build_is_refused(name, where):
    with pytest.raises(TopologyError, match=where):
        LagTopo(path(name))
