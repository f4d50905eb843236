"""The pure parts of the Mininet CLI: names, argument parsing, lagstatus rendering, reaction reports."""

from __future__ import annotations

import os

import pytest
import yaml

from testbed import loader
from testbed.agent.status import ReactionStatus
from testbed.bond.state import BondState, PortState
from testbed.errors import UsageError
from testbed.mininet import lagstatus, traffic
from testbed.mininet.cli import function_names, split_end, two_args
from testbed.mininet.react import Followed, bond_settled

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def topo(name: str = "active-backup"):
    return loader.load(os.path.join(ROOT, "topologies", f"{name}.yaml"))


def test_function_names_bare_when_unique_prefixed_always(tmp_path):
    names = function_names(topo())
    assert {"vf0", "vf1", "rdma0", "server-vf0", "server-vf1", "server-rdma0"} == set(names)
    host, fn = names["vf0"]
    assert host.name == "server" and fn.netns.endswith("-server-vf0")
    raw = yaml.safe_load(open(os.path.join(ROOT, "topologies", "active-backup.yaml")))
    raw["hosts"]["other"] = {"nic": {"ports": 2, "bond": {"mode": "active-backup"},
                                     "offload": {"mode": "active-backup"}, "vfs": 1}}
    f = tmp_path / "two.yaml"
    f.write_text(yaml.safe_dump(raw))
    two = function_names(loader.load(str(f)))
    assert "vf0" not in two, "ambiguous: two hosts have a vf0"
    assert two["server-vf0"][0].name == "server" and two["other-vf0"][0].name == "other"
    assert "vf1" in two and "rdma0" in two


def test_split_end_and_two_args():
    assert split_end("sw") == ("sw", None)
    assert split_end("server:pf0") == ("server", "pf0")
    with pytest.raises(UsageError, match="NODE:INTERFACE"):
        split_end("server:")
    assert two_args(" server  pf0 ", "fail HOST PORT") == ("server", "pf0")
    with pytest.raises(UsageError, match="usage: fail HOST PORT"):
        two_args("server", "fail HOST PORT")


def test_ranges_compress_runs():
    assert lagstatus.ranges(["pf0"]) == "0:pf0"
    assert lagstatus.ranges(["pf0"] * 16 + ["pf1"] * 16) == "0-15:pf0 16-31:pf1"
    assert lagstatus.ranges(["pf0", "pf1", "pf1", None]) == "0:pf0 1-2:pf1 3:drop"
    assert lagstatus.ranges([]) == ""


def status_data(agent=True):
    host = {
        "name": "server", "netns": "ab-server",
        "bond": {"name": "bond0", "present": True, "mode": "active-backup", "active_port": "pf1",
                 "address": "198.18.0.1/24",
                 "ports": [{"name": "pf0", "present": True, "carrier": False, "bond_state": "backup",
                            "mii_status": "down"},
                           {"name": "pf1", "present": True, "carrier": True, "bond_state": "active",
                            "mii_status": "up"}]},
        "offload": {"mode": "active-backup", "buckets": 16},
        "vfs": [{"kind": "vf", "name": "vf0", "netns": "ab-server-vf0", "addresses": ["198.18.0.11/24"],
                 "representor": "vf0-rep"}],
        "rdma": None,
        "rules": [{"dev": "", "hook": "ingress", "where": "block 2 chain 2", "prio": 3, "packets": 7,
                   "label": "rx:vf0"}],
    }
    ag = {"running": True, "nics": {"server": {"usable": ["pf1"], "mapping": ["pf1"],
                                                "reactions": [{"time": "T", "text": "server: event (pf0)"}]}}}
    return {"lab": "ab", "hosts": [host], "agent": ag if agent else None}


def test_render_shows_active_port_first_and_the_agent_table():
    text = lagstatus.render(status_data())
    lines = text.splitlines()
    assert lines[0] == "server [ab-server]: bond0 active-backup 198.18.0.1/24 active=pf1 offload=active-backup"
    assert lines[1].startswith("  * pf1 ") and "bond=active" in lines[1]
    assert lines[2].startswith("    pf0 ") and "carrier=DOWN" in lines[2]
    assert "  agent: offload uses pf1; table (entry:port) 0:pf1" in lines
    assert "  agent: last reaction T server: event (pf0)" in lines
    assert "rx:vf0" not in text
    assert "rx:vf0" in lagstatus.render(status_data(), rules=True)
    assert "agent: not running" in lagstatus.render(status_data(agent=False))


def test_collect_refuses_a_host_without_nic():
    with pytest.raises(UsageError, match="'client' is not a host with a NIC; NIC hosts: server"):
        lagstatus.collect(topo(), "client")


class Recorder:
    def failover(self, **kw):
        return ("failover", kw)

    def rdma(self, **kw):
        return ("rdma", kw)

    def hash(self, **kw):
        return ("hash", kw)


def test_traffic_defaults_come_from_the_topology():
    t = topo()
    assert traffic.plan(t, ["failover"])(Recorder()) == (
        "failover", {"targets": ["server:vf0"], "fail": "server:active", "restore_after_s": None,
                     "duration_s": 3.0, "rate_pps": 100.0})  # the same default as `testbed traffic`
    kind, kw = traffic.plan(t, ["failover", "server:vf1", "server:rdma0", "--fail", "server:pf1",
                                "--restore-after", "1.5"])(Recorder())
    assert kw["targets"] == ["server:vf1", "server:rdma0"] and kw["fail"] == "server:pf1"
    assert kw["restore_after_s"] == 1.5
    assert traffic.plan(t, ["rdma"])(Recorder()) == ("rdma", {"target": "server:rdma0", "fail": "server:active",
                                                              "qps": 4})
    assert traffic.plan(topo("active-active-hash"), ["hash", "--flows", "64"])(Recorder())[1]["flows"] == 64


def test_traffic_usage_errors_do_not_exit():
    with pytest.raises(UsageError, match="invalid choice: 'bogus'"):
        traffic.plan(topo(), ["bogus"])
    with pytest.raises(UsageError, match="--rate: expected one argument"):
        traffic.plan(topo(), ["failover", "--rate"])
    with pytest.raises(traffic._HelpShown):
        traffic.plan(topo(), ["hash", "--help"])


def ab_state(active, pf0_mii, pf1_mii="up", pf0_carrier=True):
    return BondState(bond="bond0", mode="active-backup", active=active, ports=(
        PortState("pf0", carrier=pf0_carrier, mii=pf0_mii, slave_state="active" if active == "pf0" else "backup"),
        PortState("pf1", mii=pf1_mii, slave_state="active" if active == "pf1" else "backup")))


def test_bond_settled_for_fail_and_restore():
    server = topo().host("server")
    assert not bond_settled(server, ab_state("pf0", "up", pf0_carrier=False), ["pf0"], up=False), "not noticed yet"
    assert not bond_settled(server, ab_state("pf0", "fail"), ["pf0"], up=False), "downdelay: still the active port"
    assert bond_settled(server, ab_state("pf1", "down", pf0_carrier=False), ["pf0"], up=False)
    assert not bond_settled(server, ab_state("pf1", "back"), ["pf0"], up=True), "updelay running"
    assert bond_settled(server, ab_state("pf1", "up"), ["pf0"], up=True), "a backup port in use as backup"
    assert bond_settled(server, ab_state(None, "down", "down"), ["pf0", "pf1"], up=False)
    xor = topo("active-active-hash").host("server")
    st = BondState(bond="bond0", mode="balance-xor", ports=(PortState("pf0", mii="up"), PortState("pf1", mii="up")))
    assert bond_settled(xor, st, ["pf0"], up=True)
    st = BondState(bond="bond0", mode="balance-xor", ports=(PortState("pf0", mii="down", carrier=False),
                                                          PortState("pf1", mii="up")))
    assert bond_settled(xor, st, ["pf0"], up=False) and not bond_settled(xor, st, ["pf0"], up=True)


def test_followed_lines_tell_what_moved():
    f = Followed(host="server", ports=("pf0",), up=False, mode="active-backup", active_before="pf0",
                 active_after="pf1", usable_before=("pf0",), usable_after=("pf1",), bond_ms=23.4, agent_ms=61.0,
                 agent_reaction=ReactionStatus(host="server", trigger="pf0", done_ns=1, latency_ms=12.25, added=2,
                                               replaced=11, deleted=2))
    assert f.lines() == ["  bond0: active pf0 -> pf1; pf0 down after 23 ms",
                         "  agent: offload uses pf1 after 61 ms; rules +2 ~11 -2 applied 12.2 ms after the "
                         "bond's event"]
    f.agent_ms, f.agent_usable = None, ("pf0",)
    assert f.lines()[1] == "  agent: still programs pf0, the bond uses pf1"
    f.agent_running = False
    assert "not running" in f.lines()[1]
    g = Followed(host="server", ports=("pf0",), up=True, mode="balance-xor", usable_before=("pf1",),
                 usable_after=("pf0", "pf1"), bond_ms=5.0, agent_ms=9.0)
    assert g.lines()[0] == "  bond0: uses pf0,pf1 (was pf1); pf0 up after 5 ms"
    assert g.lines()[1] == "  agent: offload uses pf0,pf1 (nothing to move)"


SERVER_OUT = """Server listening on TCP port 5001
read tcp flags (peer close) failed
(null)local 10.0.0.2 port 5001 connected with 10.0.0.1 port 57580 (icwnd/mss/irtt=14/1448/40)
[  1] local 10.0.0.2 port 5001 connected with 10.0.0.1 port 57588 (icwnd/mss/irtt=14/1448/22)
[ ID] Interval       Transfer     Bandwidth
[  1] 0.0000-2.0014 sec  3.66 GBytes  15.7 Gbits/sec
"""


def test_iperf_waits_for_the_report_of_the_clients_own_connection():
    """iperf 2.1 prints no report for Mininet's telnet probe (port 57580): only the test's counts."""
    from testbed.mininet.iperf import report_after

    report = report_after(SERVER_OUT, "57588")
    assert report is not None and report.rstrip().endswith("15.7 Gbits/sec")
    assert report_after(SERVER_OUT.split("[ ID]")[0], "57588") is None, "connected, no report yet"
    assert report_after(SERVER_OUT, "5758") is None, "whole port numbers only"
