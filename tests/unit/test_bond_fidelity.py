"""Bond fidelity without a kernel: which ports the agent uses (the LAG-offload drivers' rule), the new
bond options (validation per kernel, encoding on the wire, reading back) and what status shows.

The port rule is checked against every state the bonding driver can report for a port -- mode x
carrier x MII/ARP verdict x slave state x 802.3ad actor bits x aggregator match x active slave x
coupled_control -- with an oracle written from the drivers' side: ``link_up && tx_enabled``
(``bond_lower_state_changed``), DISTRIBUTING in the active aggregator for 802.3ad.
"""

from __future__ import annotations

import itertools
import struct

import pytest

from testbed import loader, rawnl, realize
from testbed.bond import kernel as bond_kernel
from testbed.bond import options, wire
from testbed.bond.ports import receiving_ports, usable_ports
from testbed.bond.state import BondState, PortState
from testbed.commands.render import port_line
from testbed.errors import CapabilityError, TopologyError

SYNC, COLL, DIST, ACTIVITY = 0x08, 0x10, 0x20, 0x01
ACTOR_STATES = (None, 0x0D, 0x0D | COLL, 0x0D | DIST, 0x0D | COLL | DIST)  # sync; +collecting; +distributing
AGGREGATOR = ("same", "other", "port-none", "bond-none")


def nic(mode: str):
    off = "" if mode == "active-backup" else ", offload: {mode: hash}"
    return loader.loads(f"name: t\nhosts:\n  server:\n    nic: {{bond: {{mode: {mode}}}{off}}}\n").host("server").nic


NICS = {m: nic(m) for m in ("active-backup", "balance-xor", "802.3ad")}


def state(mode, carrier, mii, slave, actor, agg, active, coupled):
    """pf0 in the given state; pf1 enslaved but down (the bond's verdict), so only pf0 can be usable."""
    port_agg = {"same": 1, "other": 2, "port-none": None, "bond-none": 1}[agg]
    pf0 = PortState("pf0", carrier=carrier, operstate="UP" if carrier else "LOWERLAYERDOWN", slave_state=slave,
                    mii=mii, ad_actor=actor if mode == "802.3ad" else None,
                    ad_aggregator=port_agg if mode == "802.3ad" else None)
    pf1 = PortState("pf1", carrier=True, slave_state="backup", mii="down", ad_actor=0x0D, ad_aggregator=3)
    opts = (("coupled_control", coupled),) if coupled is not None else ()
    return BondState("bond0", mode=mode, active=active, ports=(pf0, pf1), options=opts,
                     ad_aggregator=None if agg == "bond-none" or mode != "802.3ad" else 1)


def oracle(mode, mii, slave, actor, agg, active, coupled):
    """(usable, receiving) for pf0, from the drivers' side."""
    link_up = mii in ("up", "fail")  # BOND_LINK_UP or BOND_LINK_FAIL (downdelay)
    tx_enabled = slave != "backup"
    if mode == "active-backup":
        use = active == "pf0" and link_up
        return use, use
    if mode == "balance-xor":
        return link_up and tx_enabled, True  # balance-xor never marks a slave inactive
    in_agg = agg == "same"
    use = link_up and tx_enabled and bool(actor and actor & DIST) and in_agg
    collecting_only = coupled is False and link_up and bool(actor and actor & COLL) and in_agg
    return use, use or collecting_only


CASES = [c for c in itertools.product(("active-backup", "balance-xor", "802.3ad"), (True, False),
                                      ("up", "fail", "down", "back"), ("active", "backup"), ACTOR_STATES,
                                      AGGREGATOR, ("pf0", "pf1", None), (None, True, False))
         # the actor bits, aggregators and coupled_control exist only in 802.3ad; the active slave only in
         # active-backup: other modes get one value of each
         if (c[0] == "802.3ad" or (c[4] is None and c[5] == "same" and c[7] is None))
         and (c[0] == "active-backup" or c[6] is None)]


@pytest.mark.parametrize("mode,carrier,mii,slave,actor,agg,active,coupled", CASES)
def test_every_port_state_the_bond_reports(mode, carrier, mii, slave, actor, agg, active, coupled):
    st = state(mode, carrier, mii, slave, actor, agg, active, coupled)
    use, rx = oracle(mode, mii, slave, actor, agg, active, coupled)
    assert usable_ports(NICS[mode], st) == (("pf0",) if use else ())
    got_rx = receiving_ports(NICS[mode], st)
    assert ("pf0" in got_rx) == rx
    assert set(usable_ports(NICS[mode], st)) <= set(got_rx)


def test_the_case_table_covers_every_dimension():
    assert len(CASES) == 3 * 2 * 4 * 2 + 2 * 4 * 2 + 2 * 4 * 2 * 5 * 4 * 3


@pytest.mark.parametrize("what,port,bond_agg,usable", [
    ("carrier and LACP up, but outside the selected aggregator", dict(ad_aggregator=2), 1, ()),
    ("in the aggregator, synchronized, not yet distributing", dict(ad_actor=0x0D | COLL), 1, ()),
    ("distributing in the active aggregator", dict(), 1, ("pf0",)),
    ("no active aggregator at all", dict(), None, ()),
    ("the ARP/MII verdict says down although carrier is up", dict(mii="down"), 1, ()),
    ("in downdelay (fail): the drivers still call it link up", dict(mii="fail"), 1, ("pf0",)),
    ("carrier lost but the bond has not decided yet", dict(carrier=False), 1, ("pf0",)),
])
def test_named_802_3ad_cases(what, port, bond_agg, usable):
    base = dict(name="pf0", slave_state="active", mii="up", ad_actor=0x3D, ad_aggregator=1)
    st = BondState("bond0", mode="802.3ad", ad_aggregator=bond_agg,
                   ports=(PortState(**{**base, **port}), PortState("pf1", present=False, enslaved=False)))
    assert usable_ports(NICS["802.3ad"], st) == usable, what


def test_active_backup_follows_the_active_slave_only_while_its_link_is_up():
    ab = NICS["active-backup"]
    up = BondState("bond0", mode="active-backup", active="pf1",
                   ports=(PortState("pf0", mii="up", slave_state="backup"), PortState("pf1", mii="up")))
    assert usable_ports(ab, up) == ("pf1",), "prio/primary: the bond's choice, never re-derived"
    arp_down = BondState("bond0", mode="active-backup", active="pf1",
                         ports=(PortState("pf0", mii="up"), PortState("pf1", carrier=True, mii="down")))
    assert usable_ports(ab, arp_down) == ()


# --- options: the table, the file, the kernel ------------------------------------------------------

ARP_AB = """
name: t
hosts:
  server:
    nic:
      bond:
        mode: active-backup
        arp_interval: 100
        arp_ip_target: [198.18.0.100, 198.18.0.101]
        arp_validate: all
        arp_all_targets: all
        num_grat_arp: 3
        fail_over_mac: follow
        all_slaves_active: false
        ports: {pf0: {prio: -5}, pf1: {prio: 7}}
  client: {}
"""
LACP = """
name: t
hosts:
  server:
    nic:
      bond: {mode: 802.3ad, ad_select: prio, lacp_active: off, lacp_strict: on, coupled_control: false,
             peer_notify_delay: 200, ports: {pf1: {ad_actor_port_prio: 300}}}
      offload: {mode: hash}
  client: {}
"""


def test_arp_monitor_accepts_miimon_0_and_sends_every_option():
    bond = loader.loads(ARP_AB).host("server").nic.bond
    assert bond.miimon == 0 and bond.arp_monitor
    assert realize.bond_options(bond) == {"bond_mode": 1, "bond_miimon": 0, "bond_arp_interval": 100,
                                          "bond_arp_validate": 3, "bond_arp_all_targets": 1,
                                          "bond_num_peer_notif": 3, "bond_all_slaves_active": 0,
                                          "bond_fail_over_mac": 2}, "no updelay/downdelay with miimon 0 (EPERM)"
    assert realize.bond_extra(bond) == [("IFLA_BOND_ARP_IP_TARGET", ("198.18.0.100", "198.18.0.101"))]
    assert options.port_attrs(bond.port_values("pf0")) == [("IFLA_BOND_SLAVE_PRIO", -5)]


def test_lacp_options_go_on_the_wire_after_pyroute2s_table():
    bond = loader.loads(LACP).host("server").nic.bond
    assert realize.bond_options(bond)["bond_ad_select"] == 3
    assert realize.bond_extra(bond) == [("IFLA_BOND_AD_LACP_ACTIVE", 0), ("IFLA_BOND_LACP_STRICT", 1),
                                        ("IFLA_BOND_COUPLED_CONTROL", 0), ("IFLA_BOND_PEER_NOTIF_DELAY", 200)]
    assert options.port_attrs(bond.port_values("pf1")) == [("IFLA_BOND_SLAVE_ACTOR_PORT_PRIO", 300)]


def test_change_bond_and_change_slave_bytes():
    body = wire.change_bond(7, [("IFLA_BOND_ARP_IP_TARGET", ("198.18.0.100",)), ("IFLA_BOND_AD_LACP_ACTIVE", 0)])
    family, _type, index, flags, change = rawnl.IFINFO.unpack_from(body, 0)
    assert (family, index, flags, change) == (0, 7, 0, 0)
    target = struct.pack("=HH", 8, 0) + bytes([198, 18, 0, 100])
    data = (struct.pack("=HH", 4 + len(target), 8 | 0x8000) + target
            + struct.pack("=HHB3x", 5, 29, 0))
    info = struct.pack("=HH", 9, 1) + b"bond\0\0\0\0" + struct.pack("=HH", 4 + len(data), 2 | 0x8000) + data
    assert body[rawnl.IFINFO.size:] == struct.pack("=HH", 4 + len(info), 18 | 0x8000) + info
    slave = wire.change_slave(3, [("IFLA_BOND_SLAVE_PRIO", -1)])
    assert slave.endswith(struct.pack("=HH", 8, 9) + struct.pack("=i", -1))
    assert b"bond\0" in slave and struct.pack("=HH", 9, 4) in slave  # IFLA_INFO_SLAVE_KIND "bond"


def test_what_is_encoded_decodes_back_by_user_name():
    values = [("IFLA_BOND_MODE", 1), ("IFLA_BOND_MIIMON", 0), ("IFLA_BOND_ARP_INTERVAL", 100),
              ("IFLA_BOND_ARP_IP_TARGET", ("198.18.0.100", "198.18.0.101")),
              ("IFLA_BOND_NS_IP6_TARGET", ("2001:db8::1",)), ("IFLA_BOND_ARP_VALIDATE", 3),
              ("IFLA_BOND_AD_LACP_ACTIVE", 0), ("IFLA_BOND_LACP_STRICT", 1), ("IFLA_BOND_NUM_PEER_NOTIF", 2)]
    got = options.decode(wire.decode(wire.encode(values, wire.BOND), wire.BOND))
    assert got["arp_ip_target"] == ("198.18.0.100", "198.18.0.101") and got["ns_ip6_target"] == ("2001:db8::1",)
    assert got["arp_validate"] == "all" and got["lacp_active"] is False and got["lacp_strict"] is True
    assert got["num_grat_arp"] == got["num_unsol_na"] == 2 and got["coupled_control"] is None
    slave = wire.decode(wire.encode([("IFLA_BOND_SLAVE_PRIO", -3), ("IFLA_BOND_SLAVE_ACTOR_PORT_PRIO", 9)],
                                    wire.SLAVE), wire.SLAVE)
    assert options.decode_port(slave) == {"prio": -3, "ad_actor_port_prio": 9}
    nested = wire.encode([], wire.BOND) + wire.nla(23 | 0x8000, wire.nla(1, struct.pack("=H", 5)) +
                                                   wire.nla(5, bytes.fromhex("020000000001")))
    assert wire.decode(nested, wire.BOND)["IFLA_BOND_AD_INFO"] == {
        "IFLA_BOND_AD_INFO_AGGREGATOR": 5, "IFLA_BOND_AD_INFO_PARTNER_MAC": "02:00:00:00:00:01"}


# as read from Debian's modules: 6.1 and 6.12 have every option name but lacp_strict (actor_port_prio and
# coupled_control backported), and their ad_select takes no prio; 7.3 has everything
EVERY = frozenset(bond_kernel.kfeatures.BOND_OPTION_NAMES) | {bond_kernel.kfeatures.AD_SELECT_PRIO}
ALL_BUT = EVERY - {"lacp_strict", bond_kernel.kfeatures.AD_SELECT_PRIO}
KERNELS = {"6.12.117+deb12-amd64": ALL_BUT, "7.3.4+deb13-amd64": EVERY,
           "6.1.0-56-amd64": ALL_BUT - {"coupled_control"}}  # a 6.1 without the coupled_control backport


@pytest.fixture
def modules(tmp_path):
    for release in KERNELS:
        (tmp_path / "lib" / "modules" / release).mkdir(parents=True)
    return str(tmp_path)


def test_an_option_the_kernel_lacks_is_refused_with_one_line_naming_it_the_kernel_and_the_fix(modules):
    topo = loader.loads(LACP, "lacp.yaml")
    with pytest.raises(CapabilityError) as exc:
        bond_kernel.require(topo, "6.12.117+deb12-amd64", KERNELS.__getitem__, modules)
    msg = str(exc.value)
    assert "\n" not in msg and exc.value.exit_code == 4
    assert msg.startswith("lacp.yaml: hosts.server.nic.bond.ad_select: prio: the running kernel "
                          "(6.12.117+deb12-amd64) has no bonding option ad_select prio (and 1 more)"), msg
    assert "`testbed vm --kernel 7.3`" in msg
    assert [p for p, _ in bond_kernel.missing(topo, KERNELS["6.1.0-56-amd64"])] == [
        "hosts.server.nic.bond.ad_select: prio", "hosts.server.nic.bond.lacp_strict",
        "hosts.server.nic.bond.coupled_control"]
    bond_kernel.require(topo, "7.3.4+deb13-amd64", KERNELS.__getitem__, modules)  # 7.3 has them all
    bond_kernel.require(topo, "6.1.0-56-amd64", lambda r: frozenset(), modules)  # unreadable: the kernel decides


def test_a_lab_with_only_old_options_passes_on_every_kernel(modules):
    topo = loader.loads(ARP_AB)
    for release in KERNELS:
        bond_kernel.require(topo, release, KERNELS.__getitem__, modules)


@pytest.mark.parametrize("bond,path,message", [
    ("{mode: active-backup, miimon: 0}", "miimon", "no ARP/NS monitor"),
    ("{mode: active-backup, arp_interval: 50, ns_ip6_target: ['ff02::1']}", "ns_ip6_target", "not a unicast IPv6"),
    ("{mode: active-backup, arp_interval: 50, arp_ip_target: [198.18.0.9], peer_notify_delay: 100}",
     "peer_notify_delay", "needs miimon"),
    ("{mode: active-backup, miimon: 100, peer_notify_delay: 150}", "peer_notify_delay", "not a multiple of miimon"),
    ("{mode: balance-xor, arp_validate: all}", "arp_validate", "only applies with the ARP/NS monitor"),
    ("{mode: 802.3ad, fail_over_mac: active}", "fail_over_mac", "only applies to mode active-backup"),
])
def test_loader_refusals(bond, path, message):
    text = f"name: t\nhosts:\n  server:\n    nic: {{bond: {bond}, offload: {{}}}}\n"
    if "802.3ad" in bond or "xor" in bond:
        text = text.replace("offload: {}", "offload: {mode: hash}")
    with pytest.raises(TopologyError) as exc:
        loader.loads(text)
    assert f"hosts.server.nic.bond.{path}: " in str(exc.value) and message in str(exc.value)


def test_ns_monitor_and_balance_xor_arp_are_accepted():
    text = ("name: t\nhosts:\n  server:\n    nic: {bond: {mode: balance-xor, arp_interval: 50, "
            "ns_ip6_target: ['2001:db8::1']}, offload: {mode: hash}}\n")
    bond = loader.loads(text).host("server").nic.bond
    assert bond.miimon == 0 and bond.value("ns_ip6_target") == ("2001:db8::1",)
    assert realize.bond_extra(bond) == [("IFLA_BOND_NS_IP6_TARGET", ("2001:db8::1",))]


def test_status_line_shows_aggregator_actor_partner_and_port_options():
    p = {"name": "pf0", "present": True, "carrier": True, "bond_state": "active", "mii_status": "up",
         "aggregator": 2, "lacp_actor": wire.ad_state_names(0x3C), "lacp_partner": wire.ad_state_names(0x3F),
         "options": {"ad_actor_port_prio": 300}}
    line = port_line(p, None)
    assert ("agg=2 actor=aggregation,synchronization,collecting,distributing "
            "partner=activity,timeout,aggregation,synchronization,collecting,distributing "
            "ad_actor_port_prio=300") in line
    assert wire.ad_state_names(0xC0) == ["defaulted", "expired"]


class FakeIPRoute:
    """Records pyroute2 link() calls; ``link_lookup`` numbers interfaces by name."""

    def __init__(self) -> None:
        self.calls: list = []
        self.index = {"bond0": 4, "pf0": 2, "pf1": 3}

    def link(self, command: str, **kwargs) -> None:
        self.calls.append(command)

    def link_lookup(self, ifname: str):
        return [self.index[ifname]]


def test_builder_creates_then_sets_the_rest_before_enslaving_then_the_ports(monkeypatch):
    from testbed import nlpipe

    topo = loader.loads(ARP_AB)
    builder = realize.Builder(topo)
    ipr = FakeIPRoute()
    builder.handles["t-server"] = ipr
    sent = []

    def transact(handle, requests):
        assert handle is ipr
        sent.extend(requests)
        ipr.calls.append("raw")
        return [nlpipe.OK]

    monkeypatch.setattr(nlpipe, "transact", transact)
    bond = topo.host("server").nic.bond
    builder.bond("t-server", "bond0", realize.bond_options(bond), "02:00:00:00:00:01", ["pf0", "pf1"],
                 realize.bond_extra(bond))
    builder.port_options("t-server", bond, ("pf0", "pf1"))
    assert ipr.calls == ["add", "raw", "set", "set", "raw", "raw"], "create, the rest, enslave, the ports"
    assert [t for t, _f, _b in sent] == [rawnl.RTM_NEWLINK] * 3
    assert sent[0][2] == wire.change_bond(4, [("IFLA_BOND_ARP_IP_TARGET", ("198.18.0.100", "198.18.0.101"))])
    assert sent[1][2] == wire.change_slave(2, [("IFLA_BOND_SLAVE_PRIO", -5)])
    assert sent[2][2] == wire.change_slave(3, [("IFLA_BOND_SLAVE_PRIO", 7)])


def test_a_refused_raw_change_names_the_step_and_the_kernels_words(monkeypatch):
    from testbed import nlpipe
    from testbed.errors import NetlinkOpError

    builder = realize.Builder(loader.loads(LACP))
    builder.handles["ns"] = FakeIPRoute()
    monkeypatch.setattr(nlpipe, "transact", lambda h, r: [nlpipe.Reply(95, "lacp_strict: unknown")])
    with pytest.raises(NetlinkOpError) as exc:
        builder.raw_link("ns", "bond0: set IFLA_BOND_LACP_STRICT=1", b"")
    assert str(exc.value) == f"ns: bond0: set IFLA_BOND_LACP_STRICT=1: {nlpipe.errno_name(95)} (lacp_strict: unknown)"


def test_pyroute2_reads_our_change_bond_as_what_it_would_have_sent():
    """An independent decoder: pyroute2's own ifinfmsg parses the body back (NLA_F_NESTED is the only
    difference from its encoder, and the kernel takes both)."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    body = wire.change_bond(7, [("IFLA_BOND_MIIMON", 0), ("IFLA_BOND_ARP_IP_TARGET", ("198.18.0.100",))])
    msg = ifinfmsg(rawnl.header(len(body), rawnl.RTM_NEWLINK, 0, 1) + body)
    msg.decode()
    info = msg.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA")
    assert msg["index"] == 7 and info.get_attr("IFLA_INFO_KIND") == "bond"
    assert data.get_attr("IFLA_BOND_MIIMON") == 0
    assert data.get_attr("IFLA_BOND_ARP_IP_TARGET") == ["198.18.0.100"]


def test_status_says_whether_the_agent_is_in_step_with_the_bond():
    """``status``: per NIC host, whether the agent programs the ports the bond uses now (``offload_in_step``),
    shown in the text too; None (not shown) without an agent's entry for the host."""
    from testbed.commands.render import render_status
    from testbed.status import mark_in_step

    def status(agent_usable):
        host = {"name": "server", "netns": "ab-server", "offload": {"mode": "active-backup", "buckets": 16},
                "bond": {"name": "bond0", "mode": "active-backup", "address": "198.18.0.1/24", "active_port": "pf1",
                         "usable_ports": ["pf1"], "ports": []}, "vfs": [], "rdma": None, "rules": []}
        agent = None if agent_usable is None else {"nics": {"server": {"usable": agent_usable}}}
        st = {"lab": "ab", "state": "up", "file": "ab.yaml",
              "hosts": [host, {"name": "client", "netns": "ab-client", "interface": {"name": "eth0"}}],
              "agent": agent}
        mark_in_step(st)
        return st

    assert status(["pf1"])["hosts"][0]["offload_in_step"] is True
    assert "(agent in step)" in render_status(status(["pf1"]))
    lagging = status(["pf0"])
    assert lagging["hosts"][0]["offload_in_step"] is False and "offload_in_step" not in lagging["hosts"][1]
    assert "(agent NOT in step with the bond)" in render_status(lagging)
    assert status(None)["hosts"][0]["offload_in_step"] is None
    assert "in step" not in render_status(status(None))
    resilient = status(["pf1"])
    resilient["agent"]["switches"] = {"server": {"partner_select": "resilient", "partners": {
        "server-lag": {"usable": ["server-pf1"], "table": ["server-pf1", "server-pf1"]}}}}
    assert "    switch server-lag (resilient) bucket -> port: 0:server-pf1 1:server-pf1" in \
        render_status(resilient).splitlines()
