"""Bond state from netlink bytes: RTM_NEWLINK messages built byte by byte, parsed by pyroute2 + bondnl.

The messages carry what the 6.1 kernel sends (checked in the VM lane): the
bond's IFLA_INFO_DATA (mode, active slave, AD info) and each port's
IFLA_INFO_SLAVE_DATA including the 802.3ad actor/partner oper port state,
which pyroute2 0.9.7 does not decode by itself.
"""

from __future__ import annotations

import struct
from typing import List, Optional

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from testbed import loader
from testbed.agent import events
from testbed.bond import wire as bondnl
from testbed.bond.state import parse_links, parse_raw

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_CARRIER = 1, 3, 10, 16, 18, 33
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
IFLA_BOND_MODE, IFLA_BOND_ACTIVE_SLAVE, IFLA_BOND_AD_INFO = 1, 2, 23
IFLA_BOND_AD_INFO_AGGREGATOR = 1
IF_OPER_DOWN, IF_OPER_LOWERLAYERDOWN, IF_OPER_UP = 2, 5, 6
IFF_UP = 0x1
NESTED = 0x8000


def nla(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def u8(v: int) -> bytes:
    return struct.pack("=B", v)


def u16(v: int) -> bytes:
    return struct.pack("=H", v)


def u32(v: int) -> bytes:
    return struct.pack("=I", v)


def link_msg(index: int, name: str, *, flags: int = IFF_UP, carrier: bool = True, master: Optional[int] = None,
             linkinfo: bytes = b"", msg_type: int = 16) -> bytes:
    attrs = nla(IFLA_IFNAME, name.encode() + b"\0") + nla(IFLA_ADDRESS, bytes(6))
    attrs += nla(IFLA_OPERSTATE, u8(IF_OPER_UP if carrier else IF_OPER_LOWERLAYERDOWN))
    attrs += nla(IFLA_CARRIER, u8(int(carrier)))
    if master is not None:
        attrs += nla(IFLA_MASTER, u32(master))
    if linkinfo:
        attrs += nla(IFLA_LINKINFO | NESTED, linkinfo)
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), msg_type, 0, 0, 0) + body


def bond_info(mode: int, active: Optional[int] = None, aggregator: Optional[int] = None) -> bytes:
    data = nla(IFLA_BOND_MODE, u8(mode))
    if active is not None:
        data += nla(IFLA_BOND_ACTIVE_SLAVE, u32(active))
    if aggregator is not None:
        data += nla(IFLA_BOND_AD_INFO | NESTED, nla(IFLA_BOND_AD_INFO_AGGREGATOR, u16(aggregator)))
    return nla(IFLA_INFO_KIND, b"bond\0") + nla(IFLA_INFO_DATA | NESTED, data)


def slave_info(state: int, mii: int, actor: Optional[int] = None, partner: Optional[int] = None,
               aggregator: Optional[int] = None) -> bytes:
    data = nla(1, u8(state)) + nla(2, u8(mii)) + nla(3, u32(7)) + nla(4, bytes(6)) + nla(5, u16(0))
    if aggregator is not None:
        data += nla(6, u16(aggregator))
    if actor is not None:
        data += nla(7, u8(actor)) + nla(8, u16(partner or 0))
    return nla(IFLA_INFO_KIND, b"veth\0") + nla(IFLA_INFO_SLAVE_KIND, b"bond\0") + nla(IFLA_INFO_SLAVE_DATA | NESTED,
                                                                                          data)


def decoded(raw: List[bytes]):
    out = []
    for data in raw:
        msg = ifinfmsg(data)
        msg.decode()
        out.append(msg)
    return out


def nic(mode: str = "active-backup"):
    offload = "" if mode == "active-backup" else "offload: {mode: hash}"
    text = f"""
name: t
hosts:
  server:
    nic: {{bond: {{mode: {mode}}}, vfs: 1, {offload}}}
"""
    return loader.loads(text).host("server").nic


def test_active_backup_state():
    msgs = decoded([
        link_msg(1, "lo"),
        link_msg(2, "pf0", carrier=False, master=4, linkinfo=slave_info(1, 2)),
        link_msg(3, "pf1", master=4, linkinfo=slave_info(0, 0)),
        link_msg(4, "bond0", linkinfo=bond_info(1, active=3)),
        link_msg(5, "vf0-rep"),
    ])
    st = parse_links(msgs, nic())
    assert st.present and st.admin_up and st.mode == "active-backup" and st.active == "pf1"
    pf0, pf1 = st.ports
    assert (pf0.carrier, pf0.slave_state, pf0.mii, pf0.enslaved) == (False, "backup", "down", True)
    assert (pf1.carrier, pf1.slave_state, pf1.mii, pf1.operstate) == (True, "active", "up", "UP")
    assert pf0.link_failures == 7
    assert st.devices == {"lo", "pf0", "pf1", "bond0", "vf0-rep"}
    assert "active=pf1" in st.describe() and "pf0 carrier=down bond=backup mii=down" in st.describe()


def test_lacp_actor_state_is_decoded_beyond_pyroute2():
    msgs = decoded([
        link_msg(2, "pf0", master=4, linkinfo=slave_info(0, 0, actor=0x3F, partner=0x3F, aggregator=1)),
        link_msg(3, "pf1", master=4, linkinfo=slave_info(1, 0, actor=0x0F, partner=0x07, aggregator=2)),
        link_msg(4, "bond0", linkinfo=bond_info(4, aggregator=1)),
    ])
    # pyroute2 alone does not see it
    sd = msgs[0].get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_SLAVE_DATA")
    assert sd.get_attr("IFLA_BOND_SLAVE_AD_ACTOR_OPER_PORT_STATE") is None
    assert bondnl.slave_data(sd)["actor"] == 0x3F
    st = parse_links(msgs, nic("802.3ad"))
    assert st.mode == "802.3ad" and st.ad_aggregator == 1 and st.active is None
    pf0, pf1 = st.ports
    assert pf0.collecting_distributing and pf0.ad_partner == 0x3F and pf0.ad_aggregator == 1
    assert not pf1.collecting_distributing and pf1.ad_actor == 0x0F and pf1.ad_aggregator == 2
    assert bondnl.ad_state_names(0x3F) == ["activity", "timeout", "aggregation", "synchronization",
                                           "collecting", "distributing"]
    assert "lacp=collecting,distributing" in pf0.describe()


def test_missing_bond_missing_port_and_a_port_enslaved_elsewhere():
    msgs = decoded([
        link_msg(2, "pf0", master=9, linkinfo=slave_info(0, 0)),
        link_msg(4, "bond0", flags=0, linkinfo=bond_info(1)),
    ])
    st = parse_links(msgs, nic())
    assert st.present and not st.admin_up and st.active is None
    pf0, pf1 = st.ports
    assert pf0.present and not pf0.enslaved and pf0.slave_state is None
    assert not pf1.present and "pf1 missing" in st.describe()
    st = parse_links(decoded([link_msg(2, "pf0")]), nic())
    assert not st.present and st.describe() == "bond0 missing"


def test_link_event_batch_parsing():
    batch = events.Batch()
    datagram = link_msg(2, "pf0", carrier=False) + link_msg(4, "bond0") + link_msg(7, "vf3-rep", msg_type=17)
    datagram += struct.pack("=IHHII", 20, 20, 0, 0, 0) + b"\0" * 4  # an RTM_NEWADDR: not counted
    events.parse(datagram, batch)
    assert batch.messages == 3
    assert batch.names == {"pf0", "bond0", "vf3-rep"}
    assert batch.deleted == {"vf3-rep"}
    assert not batch.lost
    events.parse(b"\x03\0\0\0", batch)  # truncated garbage is ignored, not an exception
    assert batch.messages == 3


def test_raw_dump_decodes_only_the_bond_and_its_ports():
    raw = [link_msg(1, "lo"), link_msg(2, "pf0", master=4, linkinfo=slave_info(0, 0)),
           link_msg(3, "pf1", carrier=False, master=4, linkinfo=slave_info(1, 2)),
           link_msg(4, "bond0", linkinfo=bond_info(1, active=2))]
    raw += [link_msg(10 + i, f"vf{i}-rep") for i in range(64)]
    st = parse_raw(raw, nic())
    assert st == parse_links(decoded(raw), nic())
    assert st.active == "pf0" and len(st.devices) == 68 and "vf63-rep" in st.devices
