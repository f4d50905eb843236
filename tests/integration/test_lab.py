"""Every shipped topology, brought up on a real kernel (bonding, veth, clsact), checked through netlink.

::

    client ── eth0 ═ client-eth0 ─┐
                                  br0 (switch ns) ─┬─ server-pf0 ═ pf0 ─┐
                                                   └─ server-pf1 ═ pf1 ─┴─ bond0 (server ns)
    vfN ═ vfN-rep, rdma0 ═ rdma0-rep (server ns)

Each lab is built in-process with ``bringup.up(agent=False)`` (the agent has its
own tests) and always torn down by the fixture, even when a test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pyroute2 import netns

from testbed import bringup, labstore, loader, naming, pids, teardown, wire
from testbed.bond.options import MODE, XMIT_HASH
from testbed.errors import ConflictError
from testbed.nl import open_ns, wait_until
from testbed.status import lab_status, read_bond

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPOS = ["active-backup", "active-active-hash", "vf-active-active", "lacp"]


def topo_path(name: str) -> str:
    return os.path.join(ROOT, "topologies", f"{name}.yaml")


def host_snapshot():
    with open_ns(None) as ipr:
        links = sorted((ln.get_attr("IFLA_IFNAME"), ln["index"]) for ln in ipr.get_links())
    return sorted(netns.listnetns()), links


def ping(ns: str, addr: str, count: int = 1) -> bool:
    res = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", str(count), "-W", "2", "-i", "0.2", addr],
                         capture_output=True, text=True, check=False)
    return res.returncode == 0


@pytest.fixture(params=TOPOS, scope="module")
def lab(request):
    before = host_snapshot()
    topo = loader.load(topo_path(request.param), lab_name=f"it{request.param.replace('-', '')[:6]}")
    bringup.up(topo, agent=False)
    try:
        yield topo
    finally:
        teardown.down(topo.name)
        assert host_snapshot() == before, "down must leave the host's namespaces and links as they were"


def test_bond_has_requested_mode_options_and_slaves(lab):
    for host in [h for h in lab.hosts if h.nic]:
        nic = host.nic
        with open_ns(host.netns) as ipr:
            bond = ipr.get_links(ipr.link_lookup(ifname="bond0")[0])[0]
            data = bond.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
            assert data.get_attr("IFLA_BOND_MODE") == MODE[nic.bond.mode]
            assert data.get_attr("IFLA_BOND_MIIMON") == nic.bond.miimon
            if nic.bond.xmit_hash_policy:
                assert data.get_attr("IFLA_BOND_XMIT_HASH_POLICY") == XMIT_HASH[nic.bond.xmit_hash_policy]
            if nic.bond.primary:
                assert data.get_attr("IFLA_BOND_PRIMARY") == ipr.link_lookup(ifname=nic.bond.primary)[0]
            if nic.bond.lacp_rate:
                assert data.get_attr("IFLA_BOND_AD_LACP_RATE") == 1
            assert bond.get_attr("IFLA_ADDRESS") == nic.mac
            master = bond["index"]
            for port in nic.ports:
                link = ipr.get_links(ipr.link_lookup(ifname=port)[0])[0]
                assert link.get_attr("IFLA_MASTER") == master, f"{port} enslaved to bond0"
            addrs = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=master, family=2)]
            assert str(nic.address.ip) in addrs
            # clsact on every port and representor
            for dev in list(nic.ports) + [f.rep for f in nic.functions]:
                kinds = [q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=ipr.link_lookup(ifname=dev)[0])]
                assert "clsact" in kinds, f"clsact on {dev}"
        with open_ns(host.netns) as ipr:  # a socket left open would keep the namespace alive after `down`
            b = read_bond(ipr, nic)
        if nic.bond.mode == "802.3ad":
            for p in b["ports"]:
                assert {"collecting", "distributing"} <= set(p["lacp_actor"]), p
        elif nic.bond.mode == "active-backup":
            assert b["active_port"] == nic.primary


def test_functions_exist_in_their_namespaces(lab):
    for host in [h for h in lab.hosts if h.nic]:
        for fn in host.nic.functions:
            with open_ns(fn.netns) as ipr:
                idx = ipr.link_lookup(ifname=fn.name)
                assert idx, f"{fn.name} in {fn.netns}"
                link = ipr.get_links(idx[0])[0]
                assert link.get_attr("IFLA_ADDRESS") == fn.mac
                assert link.get_attr("IFLA_IFALIAS") == naming.mark(lab.name)
                addrs = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx[0], family=2)]
                assert str(fn.address.ip) in addrs
            with open_ns(host.netns) as ipr:
                assert ipr.link_lookup(ifname=fn.rep), f"representor {fn.rep} in {host.netns}"
                assert not ipr.link_lookup(ifname=fn.name), "the VF itself is not in the host namespace"


def test_rps_enabled_on_ports_and_representors(lab):
    host = next(h for h in lab.hosts if h.nic)
    for dev in list(host.nic.ports) + [f.rep for f in host.nic.functions]:
        res = subprocess.run(["ip", "netns", "exec", host.netns, "cat",
                              f"/sys/class/net/{dev}/queues/rx-0/rps_cpus"], capture_output=True, text=True)
        assert int(res.stdout.strip().replace(",", ""), 16) != 0, dev


def test_client_reaches_bond_across_switch(lab):
    server = next(h for h in lab.hosts if h.nic)
    client = next(h for h in lab.hosts if not h.nic)
    assert ping(client.netns, str(server.address.ip), count=2)


def test_status_reports_the_lab(lab):
    data = lab_status(lab.name)
    assert data["state"] == "up"
    server = next(h for h in data["hosts"] if "bond" in h)
    assert server["bond"]["mode"] == next(h for h in lab.hosts if h.nic).nic.bond.mode
    assert len(server["vfs"]) == len(next(h for h in lab.hosts if h.nic).nic.vfs)


def test_fail_and_restore_move_the_bond(lab):
    host = next(h for h in lab.hosts if h.nic)
    nic = host.nic
    ipr = open_ns(host.netns)
    try:
        def bond():
            return read_bond(ipr, nic)

        victim = bond().get("active_port") or nic.ports[0]
        other = next(p for p in nic.ports if p != victim)
        wire.set_wire(lab.name, host.name, victim, up=False)
        if nic.bond.mode == "active-backup":
            wait_until(lambda: bond()["active_port"] == other, 10, f"bond0 to move to {other}")
        elif nic.bond.mode == "802.3ad":
            wait_until(lambda: "distributing" not in next(p for p in bond()["ports"] if p["name"] == victim)
                       .get("lacp_actor", []), 10, f"{victim} to stop distributing")
        else:
            wait_until(lambda: next(p for p in bond()["ports"] if p["name"] == victim)["mii_status"] == "down",
                       10, f"{victim} MII down")
        victim_state = next(p for p in bond()["ports"] if p["name"] == victim)
        assert victim_state["carrier"] is False
        client = next(h for h in lab.hosts if not h.nic)
        assert ping(client.netns, str(nic.address.ip), count=2), "bond reachable over the surviving port"
        wire.set_wire(lab.name, host.name, victim, up=True)
        if nic.bond.mode == "active-backup" and nic.bond.primary == victim:
            wait_until(lambda: bond()["active_port"] == victim, 10, f"bond0 back to primary {victim}")
        elif nic.bond.mode == "802.3ad":
            wait_until(lambda: {"collecting", "distributing"} <= set(
                next(p for p in bond()["ports"] if p["name"] == victim).get("lacp_actor", [])),
                15, f"{victim} to distribute again")
        else:
            wait_until(lambda: next(p for p in bond()["ports"] if p["name"] == victim)["mii_status"] == "up",
                       10, f"{victim} MII up")
    finally:
        ipr.close()


def test_conflicting_namespace_is_refused_and_left_alone():
    topo = loader.load(topo_path("active-backup"), lab_name="itclash")
    netns.create("itclash-server")  # someone else's namespace with the name the lab wants
    try:
        before = host_snapshot()
        with pytest.raises(ConflictError) as info:
            bringup.up(topo, agent=False)
        assert "itclash-server" in str(info.value)
        assert host_snapshot() == before, "a refused up changes nothing"
        assert labstore.try_read("itclash") is None
        teardown.clean()
        assert "itclash-server" in netns.listnetns(), "clean never touches an unmarked namespace"
    finally:
        netns.remove("itclash-server")


KILL_POINTS = {  # progress line of `testbed up` -> where the build is when it appears
    "before-build": "create namespace",  # the record is written, nothing exists in the kernel yet
    "mid-build": "host server",  # namespaces exist, wires are being made
    "agent-starting": "starting the offload agent",  # everything built, the agent being started
}


def _up_until(lab: str, line: str) -> subprocess.Popen:
    """`testbed up` as a user runs it, read until it prints ``line`` (or ends)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "up", topo_path("active-backup"), "--name", lab],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for text in proc.stderr:  # ends at the latest when `up` does
        if line in text:
            break
    return proc


def _agent_pid(lab: str) -> int:
    try:
        with open(labstore.lab_file(lab, "agent.pid")) as fh:
            return int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return 0


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_plain_clean_removes_what_a_killed_up_left(point):
    """SIGKILL of `testbed up` at any point leaves a crashed build: `list` says so, plain `clean` removes
    it all (namespaces, record, agent process)."""
    before = host_snapshot()
    lab = f"itk{list(KILL_POINTS).index(point)}"
    proc = _up_until(lab, KILL_POINTS[point])
    agent = 0
    try:
        assert proc.poll() is None, f"`testbed up` ended before {KILL_POINTS[point]!r}"
        if point == "agent-starting":
            wait_until(lambda: pids.alive(_agent_pid(lab)), 120, "the agent process to be recorded")
            agent = _agent_pid(lab)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    listed = subprocess.run([sys.executable, "-m", "testbed", "list", "--json"], env=dict(os.environ, PYTHONPATH=ROOT),
                            capture_output=True, text=True, check=True)
    states = {x["lab"]: x["state"] for x in json.loads(listed.stdout)}
    assert states.get(lab) == "crashed", f"a dead `up` is a crashed build, `list` said {states}"
    res = subprocess.run([sys.executable, "-m", "testbed", "clean", "-q"], env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert labstore.try_read(lab) is None
    assert not [n for n in netns.listnetns() if n.startswith(f"{lab}-")]
    assert not agent or not pids.alive(agent), f"clean left the agent (pid {agent}) running"
    assert host_snapshot() == before


def test_down_is_idempotent():
    assert teardown.down("itnotthere") == []
