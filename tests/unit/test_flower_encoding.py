"""Flower netlink encoding and decoding (testbed/tc/{flower,codec,nlpipe}.py), no kernel.

Golden encodings are written out attribute by attribute from the kernel's
uapi (pkt_cls.h, tc_mirred.h, tc_gact.h); the same bytes were accepted by
the 6.1 kernel and displayed by ``tc`` (tests/integration/test_tc_ops.py).
The KERNEL_* messages are RTM_NEWTFILTER dumps recorded from Debian's 6.1
kernel (b0 = ifindex 2, r0 = ifindex 4), counters included.
"""

from __future__ import annotations

import errno
import struct

import pytest

from testbed import nlpipe
from testbed.errors import ConflictError, NetlinkOpError
from testbed.tc import canonical, codec, flower, ops, readback
from testbed.tc.rule import (
    ETH_P_ALL,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    FOREIGN,
    ROCEV2_PORT,
    Action,
    InstalledRule,
    Match,
    Rule,
)

IFINDEX = {"pf0": 5, "vf0-rep": 7, "vf1-rep": 8, "bond0": 9}
NAMES = {index: name for name, index in IFINDEX.items()}


def body(rule: Rule) -> bytes:
    """What the pyroute2-class encoder makes of ``rule`` (after the nlmsghdr)."""
    msg = codec.encode(rule, IFINDEX.get(rule.dev, 0), IFINDEX.__getitem__)
    msg.encode()
    return bytes(msg.data[16:])


def whole(rule: Rule) -> bytes:
    """The full message, nlmsghdr included, as a dump would carry it."""
    msg = codec.encode(rule, IFINDEX.get(rule.dev, 0), IFINDEX.__getitem__)
    msg["header"]["type"] = ops.RTM_NEWTFILTER
    msg.encode()
    return bytes(msg.data)


def h(*parts: str) -> bytes:
    return bytes.fromhex("".join(p.replace(" ", "") for p in parts))


# --- golden encodings ---------------------------------------------------------

ROCE_BUCKET = Rule(
    dev="pf0",
    prio=10,
    handle=3,
    match=Match(eth_type=ETH_P_IP, ip_proto=17, dst_port=ROCEV2_PORT, hash=1, hash_mask=15),
    actions=(Action("redirect", "vf0-rep"),),
    label="vf0-rx",
)
ROCE_BUCKET_BYTES = h(
    # struct tcmsg: family, pad, ifindex 5, handle 3, parent ffff:fff2 (clsact ingress),
    # info = prio 10 << 16 | htons(ETH_P_ALL)
    "00 00 0000  05000000  03000000  f2ffffff  00030a00",
    "0b00 0100 666c6f776572 00 00",  # TCA_KIND "flower\0"
    "7800 0280",  # TCA_OPTIONS (nested), 120 bytes
    "0600 0800 0800 0000",  # TCA_FLOWER_KEY_ETH_TYPE be16 0x0800
    "0500 0900 11 000000",  # TCA_FLOWER_KEY_IP_PROTO u8 17
    "0600 1500 12b7 0000",  # TCA_FLOWER_KEY_UDP_DST be16 4791
    "0800 6400 01000000",  # TCA_FLOWER_KEY_HASH u32 1
    "0800 6500 0f000000",  # TCA_FLOWER_KEY_HASH_MASK u32 15
    "0800 1600 01000000",  # TCA_FLOWER_FLAGS skip_hw
    "4400 0380",  # TCA_FLOWER_ACT (nested)
    "4000 0180",  # action order 1 (nested)
    "0b00 0100 6d6972726564 00 00",  # TCA_ACT_KIND "mirred\0"
    "2400 0280",  # TCA_ACT_OPTIONS (nested)
    # TCA_MIRRED_PARMS struct tc_mirred: index 0, capab 0, action TC_ACT_STOLEN,
    # refcnt 0, bindcnt 0, eaction TCA_EGRESS_REDIR, ifindex 7
    "2000 0200 00000000 00000000 04000000 00000000 00000000 01000000 07000000",
    "0a00 0600 7666302d7278 0000",  # TCA_ACT_COOKIE "vf0-rx"
)

MCAST_DROP = Rule(
    dev="vf0-rep",
    prio=1,
    handle=1,
    chain=2,
    hook="egress",
    skip_hw=False,
    match=Match(dst_mac="01:00:5E:00:00:00", dst_mac_mask="ff:ff:ff:80:00:00"),
    actions=(Action("drop"),),
)
MCAST_DROP_BYTES = h(
    # ifindex 7, handle 1, parent ffff:fff3 (clsact egress), prio 1, protocol all
    "00 00 0000  07000000  01000000  f3ffffff  00030100",
    "0b00 0100 666c6f776572 00 00",  # TCA_KIND "flower\0"
    "0800 0b00 02000000",  # TCA_CHAIN 2
    "4c00 0280",  # TCA_OPTIONS (nested); no TCA_FLOWER_FLAGS: skip_hw off
    "0a00 0400 01005e000000 0000",  # TCA_FLOWER_KEY_ETH_DST (MAC lower-cased)
    "0a00 0500 ffffff800000 0000",  # TCA_FLOWER_KEY_ETH_DST_MASK
    "3000 0380",  # TCA_FLOWER_ACT
    "2c00 0180",  # order 1
    "0900 0100 67616374 00 000000",  # TCA_ACT_KIND "gact\0"; no cookie: no label
    "1c00 0280",  # TCA_ACT_OPTIONS
    # TCA_GACT_PARMS struct tc_gact: index, capab, action TC_ACT_SHOT, refcnt, bindcnt
    "1800 0200 00000000 00000000 02000000 00000000 00000000",
)


# A function's rule in the representors' shared block: ``tc filter add block 1 prio 100 handle 2
# protocol all flower indev vf0-rep skip_hw action goto chain 1``
BLOCK_GOTO = Rule(dev="", block=1, prio=100, handle=2, match=Match(indev="vf0-rep"),
                  actions=(Action("goto", chain=1),), label="tx:vf0")
BLOCK_GOTO_BYTES = h(
    # ifindex TCM_IFINDEX_MAGIC_BLOCK, handle 2, parent = block index 1, prio 100, protocol all
    "00 00 0000  ffffffff  02000000  01000000  00036400",
    "0b00 0100 666c6f776572 00 00",  # TCA_KIND "flower\0"
    "5400 0280",  # TCA_OPTIONS (nested), 84 bytes
    "0c00 0200 7666302d72657000",  # TCA_FLOWER_INDEV "vf0-rep\0"
    "0800 1600 01000000",  # TCA_FLOWER_FLAGS skip_hw
    "3c00 0380",  # TCA_FLOWER_ACT
    "3800 0180",  # order 1
    "0900 0100 67616374 00 000000",  # TCA_ACT_KIND "gact\0"
    "1c00 0280",  # TCA_ACT_OPTIONS
    # TCA_GACT_PARMS: action TC_ACT_GOTO_CHAIN (0x20000000) | chain 1
    "1800 0200 00000000 00000000 01000020 00000000 00000000",
    "0a00 0600 74783a766630 0000",  # TCA_ACT_COOKIE "tx:vf0"
)


@pytest.mark.parametrize(
    "rule, expected",
    [(ROCE_BUCKET, ROCE_BUCKET_BYTES), (MCAST_DROP, MCAST_DROP_BYTES), (BLOCK_GOTO, BLOCK_GOTO_BYTES)],
    ids=["roce-hash-redirect", "mcast-egress-drop", "block-indev-goto"],
)
def test_golden_encoding(rule: Rule, expected: bytes) -> None:
    assert body(rule) == expected
    assert codec.pack(rule, IFINDEX.get(rule.dev, 0), IFINDEX.__getitem__) == expected


def test_golden_delete_in_a_block() -> None:
    # tcm_ifindex TCM_IFINDEX_MAGIC_BLOCK, tcm_parent = block 2, chain 1
    expected = h("00 00 0000 ffffffff 03000000 02000000 00000300", "0800 0b00 01000000")
    rule = Rule("", 3, 3, Match(), (), block=2, chain=1)
    msg = codec.encode_delete(rule, 0)
    msg.encode()
    assert bytes(msg.data[16:]) == expected
    assert codec.pack_delete(rule, 0) == expected


def test_clsact_bound_to_shared_blocks() -> None:
    # ``tc qdisc add dev pf0 ingress_block 2 egress_block 3 clsact``: TCA_INGRESS_BLOCK (13), TCA_EGRESS_BLOCK (14)
    expected = h("00 000000 05000000 0000ffff f1ffffff 00000000", "0b00 0100 636c7361637400 00",
                 "0800 0d00 02000000", "0800 0e00 03000000")
    assert ops._clsact_body(5, (2, 3)) == expected
    assert ops._clsact_body(5, (0, 0)) == expected[:-16]  # unshared: no block attributes
    dumped = h("2c000000 24000000 0000 0000 00000000") + expected[:-8]  # as a dump: only the ingress block
    assert ops._blocks_of(dumped) == (2, 0)


@pytest.mark.parametrize("chain", [0, 2])
def test_golden_delete(chain: int) -> None:
    # identity only: no TCA_KIND, protocol 0 (any) so that foreign filters are found too
    expected = h("00 00 0000 05000000 03000000 f2ffffff 00000a00")
    if chain:
        expected += h("0800 0b00 02000000")  # TCA_CHAIN 2
    rule = Rule(ROCE_BUCKET.dev, ROCE_BUCKET.prio, ROCE_BUCKET.handle, Match(), (), chain=chain)
    msg = codec.encode_delete(rule, 5)
    msg.encode()
    assert bytes(msg.data[16:]) == expected
    assert codec.pack_delete(rule, 5) == expected


def test_flower_attribute_numbers_follow_pkt_cls_h() -> None:
    numbers = {name: num for num, name, _ in flower.options.nla_map}
    assert numbers["TCA_FLOWER_ACT"] == 3
    assert numbers["TCA_FLOWER_KEY_ETH_TYPE"] == 8
    assert numbers["TCA_FLOWER_KEY_UDP_DST"] == 21
    assert numbers["TCA_FLOWER_FLAGS"] == 22
    assert numbers["TCA_FLOWER_KEY_UDP_DST_MASK"] == 38
    assert numbers["TCA_FLOWER_IN_HW_COUNT"] == 86
    assert numbers["TCA_FLOWER_KEY_HASH"] == 100
    assert numbers["TCA_FLOWER_KEY_HASH_MASK"] == 101
    assert [n for n, _, _ in flower.options.nla_map] == list(range(106))  # no gaps
    assert {name: num for num, name, _ in flower.tca_act.nla_map}["TCA_ACT_COOKIE"] == 6
    assert {name: num for num, name, _ in flower.tcmsg.nla_map}["TCA_CHAIN"] == 11


# --- every key and action: fast packer == pyroute2 classes, and round trip --------

RULES = [
    ROCE_BUCKET,
    MCAST_DROP,
    Rule("pf0", 1, 1, Match(), ()),
    Rule("pf0", 2, 7, Match(eth_type=0x8809), (Action("pass"),), label="lacp"),
    Rule("pf0", 3, 1, Match(dst_mac="02:00:00:00:00:01"), (Action("redirect", "vf0-rep"),)),
    Rule(
        "pf0", 4, 2,
        Match(src_mac="02:aa:00:00:00:00", src_mac_mask="ff:ff:00:00:00:00",
              dst_mac="02:00:00:00:00:01", dst_mac_mask="ff:ff:ff:ff:ff:fe"),
        (Action("mirror", "vf0-rep"), Action("mirror", "vf1-rep"), Action("continue")),
        label="bcast:0",
    ),
    Rule(
        "pf0", 5, 1,
        Match(eth_type=ETH_P_IP, ip_proto=6, src_ip="198.18.0.0/15", dst_ip="198.18.1.2",
              src_port=1234, dst_port=80),
        (Action("redirect", "bond0", ingress=True),),
        label="tcp",
    ),
    Rule(
        "pf0", 6, 1,
        Match(eth_type=ETH_P_IPV6, ip_proto=17, src_ip="2001:db8::/64", dst_ip="2001:db8::1",
              dst_port=ROCEV2_PORT),
        (Action("mirror", "bond0", ingress=True), Action("drop")),
        label="v6",
    ),
    Rule("vf0-rep", 7, 3, Match(hash=0, hash_mask=1), (Action("redirect", "pf0"),), chain=9,
         hook="egress", skip_hw=False, label="tx:b0"),
    Rule("pf0", 0xFFFF, 0x7FFFFFFF, Match(eth_type=ETH_P_ARP), (Action("pass"),) * 32,
         label="x" * 16),
    BLOCK_GOTO,
    Rule("", 3, 1, Match(indev="pf1", eth_type=ETH_P_ARP), (Action("goto", chain=0xFFFFFFF),), block=0xFFFFFFFE,
         label="gate"),
    Rule("", 4, 9, Match(dst_mac="02:00:00:00:00:01"), (Action("mirror", "vf1-rep"), Action("goto", chain=3)),
         block=2, chain=1, label="rx:vf1"),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.dev}/{r.prio}/{r.label or '-'}")
def test_pack_equals_pyroute2_encoding(rule: Rule) -> None:
    assert codec.pack(rule, IFINDEX.get(rule.dev, 0), IFINDEX.__getitem__) == body(rule)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.dev}/{r.prio}/{r.label or '-'}")
def test_round_trip(rule: Rule) -> None:
    raw = whole(rule)
    msg = flower.tcmsg(raw)
    msg.decode()
    via_classes = readback.decode(msg, NAMES)
    assert via_classes == InstalledRule(canonical.canonical(rule))
    assert readback.unpack(raw, NAMES) == via_classes


def test_canonical_form_is_what_the_kernel_reports() -> None:
    raw = Rule(
        "pf0", 1, 1,
        Match(dst_mac="2:0:0:0:0:A", dst_mac_mask="FF:FF:FF:FF:FF:FF", src_ip="198.18.0.1/32",
              hash=5, hash_mask=0xFFFFFFFF, eth_type=ETH_P_ALL),
        (Action("pass"),),
    )
    assert canonical.canonical(raw).match == Match(
        dst_mac="02:00:00:00:00:0a", src_ip="198.18.0.1", hash=5
    )
    assert canonical.canonical_match(Match(dst_ip="198.18.0.0/0")) == Match()
    assert canonical.canonical_match(Match(hash_mask=3)) == Match(hash=0, hash_mask=3)
    assert canonical.canonical_match(Match(hash=3, hash_mask=0)) == Match()
    assert canonical.canonical_match(Match(src_mac_mask="ff:00:00:00:00:00")) == Match(
        src_mac="00:00:00:00:00:00", src_mac_mask="ff:00:00:00:00:00"
    )
    # host bits are kept: the kernel dumps the key it was given, not key & mask
    assert canonical.canonical_match(Match(src_ip="198.18.0.5/24")).src_ip == "198.18.0.5/24"
    # the kernel's default masks decode to the same canonical rule
    full = Rule("pf0", 1, 1, Match(dst_mac="02:00:00:00:00:0a", src_ip="198.18.0.1", hash=5),
                (Action("pass"),))
    assert readback.unpack(whole(raw), NAMES).rule == canonical.canonical(full)


# --- validation ---------------------------------------------------------------------

BAD = {
    "label too long": Rule("pf0", 1, 1, Match(), (Action("pass"),), label="x" * 17),
    "label reserved": Rule("pf0", 1, 1, Match(), (Action("pass"),), label=FOREIGN),
    "label without action": Rule("pf0", 1, 1, Match(), (), label="lonely"),
    "ip_proto without eth_type": Rule("pf0", 1, 1, Match(ip_proto=17), ()),
    "ip_proto with ARP": Rule("pf0", 1, 1, Match(eth_type=ETH_P_ARP, ip_proto=17), ()),
    "port without ip_proto": Rule("pf0", 1, 1, Match(eth_type=ETH_P_IP, dst_port=1), ()),
    "port with ICMP": Rule("pf0", 1, 1, Match(eth_type=ETH_P_IP, ip_proto=1, dst_port=1), ()),
    "v6 address, v4 eth_type": Rule("pf0", 1, 1, Match(eth_type=ETH_P_IP, src_ip="::1"), ()),
    "mixed families": Rule("pf0", 1, 1, Match(src_ip="198.18.0.1", dst_ip="::1"), ()),
    "prefix /0": Rule("pf0", 1, 1, Match(eth_type=ETH_P_IP, dst_ip="198.18.0.0/0"), ()),
    "ip_proto 256": Rule("pf0", 1, 1, Match(eth_type=ETH_P_IP, ip_proto=256), ()),
    "bad MAC": Rule("pf0", 1, 1, Match(dst_mac="02:00:00:00:01"), ()),
    "bad IP": Rule("pf0", 1, 1, Match(dst_ip="198.18.0.256"), ()),
    "VLAN ethertype": Rule("pf0", 1, 1, Match(eth_type=0x8100), ()),
    "redirect without dev": Rule("pf0", 1, 1, Match(), (Action("redirect"),)),
    "drop with dev": Rule("pf0", 1, 1, Match(), (Action("drop", "vf0-rep"),)),
    "unknown action": Rule("pf0", 1, 1, Match(), (Action("police"),)),
    "ingress gact": Rule("pf0", 1, 1, Match(), (Action("pass", ingress=True),)),
    "prio 0": Rule("pf0", 0, 1, Match(), ()),
    "handle 0": Rule("pf0", 1, 0, Match(), ()),
    "hook": Rule("pf0", 1, 1, Match(), (), hook="forward"),
    "33 actions": Rule("pf0", 1, 1, Match(), (Action("pass"),) * 33),
    "goto without chain": Rule("pf0", 1, 1, Match(), (Action("goto"),)),
    "chain without goto": Rule("pf0", 1, 1, Match(), (Action("pass", chain=1),)),
    "goto backwards": Rule("pf0", 1, 1, Match(), (Action("goto", chain=1),), chain=1),
    "goto past 2^28": Rule("pf0", 1, 1, Match(), (Action("goto", chain=1 << 28),)),
    "chain past 2^28": Rule("pf0", 1, 1, Match(), (), chain=1 << 28),
    "block with dev": Rule("pf0", 1, 1, Match(), (), block=1),
    "block egress": Rule("", 1, 1, Match(), (), block=1, hook="egress"),
    "block magic": Rule("", 1, 1, Match(), (), block=0xFFFFFFFF),
    "neither dev nor block": Rule("", 1, 1, Match(), ()),
    "indev too long": Rule("pf0", 1, 1, Match(indev="x" * 16), ()),
    "indev empty": Rule("pf0", 1, 1, Match(indev=""), ()),
}


@pytest.mark.parametrize("name", BAD)
def test_invalid_rules_are_refused_before_the_kernel(name: str) -> None:
    rule = BAD[name]
    for encoder in (codec.pack, codec.encode):
        with pytest.raises(NetlinkOpError) as info:
            encoder(rule, 5, IFINDEX.__getitem__)
        assert info.value.errno == errno.EINVAL
        assert str(info.value).startswith(canonical.where(rule) + ":")
        assert info.value.fix


# --- decoding what the kernel dumped -------------------------------------------------

KERNEL_NAMES = {2: "b0", 4: "r0"}
# dst_mac 02:00:00:00:00:01 -> mirred egress redirect r0, cookie "vf0-rx", after 3 frames
KERNEL_REDIRECT = (
    "240100002c00020008000040f9000000000000000200000001000000f2ffffff00030a000b000100666c6f77"
    "6572000008000b0000000000ec0002000a00040002000000000100000a000500ffffffffffff000008001600"
    "090000000800560000000000c0000300bc0001000b0001006d6972726564000044000400140001008a000000"
    "0000000003000000000000001400070000000000000000000000000000000000180003000000000000000000"
    "0000000000000000000000000a0006007666302d727800000c000700020000000200000008000a0000000000"
    "4800020020000200010000000000000004000000010000000100000001000000040000002400010067000000"
    "00000000000000000000000000000000000000000000000000000000"
)
# eth_type ipv4, ip_proto udp, dst_port 4791, hash 1/15 -> mirror r0 + pass, cookie "rocev2"
KERNEL_ROCE = (
    "f00100002c00020008000040f9000000000000000200000005000000f2ffffff000314000b000100666c6f77"
    "6572000008000b0000000000b8010200060008000800000005000900110000000600150012b7000006002600"
    "ffff00000800640001000000080065000f0000000800160009000000080056000000000074010300bc000100"
    "0b0001006d697272656400004400040014000100000000000000000000000000000000001400070000000000"
    "0000000000000000000000001800030000000000000000000000000000000000000000000a000600726f6365"
    "763200000c000700020000000200000008000a00000000004800020020000200020000000000000003000000"
    "0100000001000000020000000400000024000100640000000000000064000000000000000000000000000000"
    "0000000000000000b40002000900010067616374000000004400040014000100000000000000000000000000"
    "0000000014000700000000000000000000000000000000001800030000000000000000000000000000000000"
    "000000000a000600726f6365763200000c000700020000000200000008000a00000000004000020018000200"
    "0100000000000000000000000100000001000000240001006400000000000000640000000000000000000000"
    "000000000000000000000000"
)
# eth_type ipv6, ip_proto tcp, src_ip 2001:db8::/64, dst_port 80 -> mirred ingress redirect r0
KERNEL_V6 = (
    "440100002c00020008000040f9000000000000000200000001000000f2ffffff000328000b000100666c6f77"
    "6572000008000b00000000000c0102000600080086dd0000050009000600000014000e0020010db800000000"
    "000000000000000014000f00ffffffffffffffff0000000000000000060013000050000006002400ffff0000"
    "08001600080000000800560000000000b0000300ac0001000b0001006d697272656400004400040014000100"
    "0000000000000000000000000000000014000700000000000000000000000000000000001800030000000000"
    "00000000000000000000000000000000060006007636000008000a0000000000480002002000020003000000"
    "0000000004000000010000000100000003000000040000002400010064000000000000006400000000000000"
    "00000000000000000000000000000000"
)
# made by tc: protocol 802.1Q flower vlan_id 5 action pass
KERNEL_VLAN = (
    "f40000002c00020008000040f9000000000000000200000001000000f2ffffff810052000b000100666c6f77"
    "6572000008000b0000000000bc000200060017000500000008001600080000000800560000000000a0000300"
    "9c00010009000100676163740000000044000400140001000000000000000000000000000000000014000700"
    "0000000000000000000000000000000018000300000000000000000000000000000000000000000008000a00"
    "0000000040000200180002000300000000000000000000000100000001000000240001003a00000000000000"
    "3a0000000000000000000000000000000000000000000000"
)
# eth_type 88b5 -> drop in chain 3, cookie "drop"
KERNEL_CHAIN3_DROP = (
    "080100002c00020008000040f9000000000000000200000001000000f2ffffff00031e000b000100666c6f77"
    "6572000008000b0003000000d00002000600080088b5000008001600090000000800560000000000b4000300"
    "b000010009000100676163740000000044000400140001000000000000000000000000000000000014000700"
    "0000000000000000000000000000000018000300000000000000000000000000000000000000000008000600"
    "64726f700c000700020000000200000008000a00000000004000020018000200020000000000000002000000"
    "0100000001000000240001006400000000000000640000000000000000000000000000000000000000000000"
)
# the entry a dump lists before the filters of each (prio, protocol): handle 0, no options
KERNEL_PRIO_HEADER = (
    "380000002c00020008000040f9000000000000000200000000000000f2ffffff00030a000b000100666c6f77"
    "6572000008000b0000000000"
)

KERNEL_DECODED = {
    "redirect": (
        KERNEL_REDIRECT,
        InstalledRule(
            Rule("b0", 10, 1, Match(dst_mac="02:00:00:00:00:01"), (Action("redirect", "r0"),),
                 label="vf0-rx"),
            packets=3,
            bytes=138,
        ),
    ),
    "roce": (
        KERNEL_ROCE,
        InstalledRule(
            Rule("b0", 20, 5,
                 Match(eth_type=ETH_P_IP, ip_proto=17, dst_port=4791, hash=1, hash_mask=15),
                 (Action("mirror", "r0"), Action("pass")), label="rocev2"),
        ),
    ),
    "v6": (
        KERNEL_V6,
        InstalledRule(
            Rule("b0", 40, 1,
                 Match(eth_type=ETH_P_IPV6, ip_proto=6, src_ip="2001:db8::/64", dst_port=80),
                 (Action("redirect", "r0", ingress=True),), skip_hw=False, label="v6"),
        ),
    ),
    "chain3": (
        KERNEL_CHAIN3_DROP,
        InstalledRule(
            Rule("b0", 30, 1, Match(eth_type=0x88B5), (Action("drop"),), chain=3, label="drop"),
        ),
    ),
    "vlan-foreign": (
        KERNEL_VLAN,
        InstalledRule(
            Rule("b0", 82, 1, Match(), (Action("pass"),), skip_hw=False, label=FOREIGN),
            foreign=("protocol 0x8100", "TCA_FLOWER_KEY_VLAN_ID"),
        ),
    ),
}


@pytest.mark.parametrize("name", KERNEL_DECODED)
def test_decode_kernel_dump(name: str) -> None:
    hexdump, expected = KERNEL_DECODED[name]
    raw = bytes.fromhex(hexdump)
    msg = flower.tcmsg(raw)
    msg.decode()
    assert readback.decode(msg, KERNEL_NAMES) == expected
    assert readback.unpack(raw, KERNEL_NAMES) == expected


def test_kernel_stats_attributes_decode_with_flower_classes() -> None:
    msg = flower.tcmsg(bytes.fromhex(KERNEL_REDIRECT))
    msg.decode()
    act = msg.get_attr("TCA_OPTIONS").get_attr("TCA_FLOWER_ACT").get_attr("TCA_ACT_PRIO_1")
    assert act.get_attr("TCA_ACT_KIND") == "mirred"
    assert act.get_attr("TCA_ACT_COOKIE") == b"vf0-rx"
    basic = act.get_attr("TCA_ACT_STATS").get_attr("TCA_STATS_BASIC")
    assert (basic["bytes"], basic["packets"]) == (138, 3)
    parms = act.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")
    assert (parms["eaction"], parms["ifindex"], parms["action"]) == (1, 4, 4)
    assert msg.get_attr("TCA_CHAIN") == 0


def test_prio_header_entry_has_no_filter() -> None:
    raw = bytes.fromhex(KERNEL_PRIO_HEADER)
    assert ops._TCMSG.unpack_from(raw, 16)[2] == 0  # handle 0: dump() skips it


def _with_action(rule: Rule, act_attrs: list) -> bytes:
    """``rule`` encoded, then its first action's attributes extended by ``act_attrs``."""
    msg = codec.encode(rule, IFINDEX.get(rule.dev, 0), IFINDEX.__getitem__)
    options = dict(msg["attrs"])["TCA_OPTIONS"]["attrs"]
    act = dict(dict(options)["TCA_FLOWER_ACT"]["attrs"])["TCA_ACT_PRIO_1"]["attrs"]
    act.extend(act_attrs)
    msg.encode()
    return bytes(msg.data)


def test_counters_use_pkt64_when_present() -> None:
    rule = Rule("pf0", 1, 1, Match(), (Action("pass"),), label="big")
    stats = {"attrs": [("TCA_STATS_BASIC", {"bytes": 1 << 40, "packets": 7}),
                       ("TCA_STATS_PKT64", (1 << 33) + 7)]}
    raw = _with_action(rule, [("TCA_ACT_STATS", stats)])
    msg = flower.tcmsg(raw)
    msg.decode()
    for got in (readback.decode(msg, NAMES), readback.unpack(raw, NAMES)):
        assert (got.packets, got.bytes) == ((1 << 33) + 7, 1 << 40)
        assert got.rule == rule and not got.foreign


def test_foreign_kinds_keys_and_cookies() -> None:
    u32 = flower.tcmsg()
    u32["index"], u32["handle"], u32["parent"] = 5, 0x800, flower.INGRESS_PARENT
    u32["info"] = codec.filter_info(3)
    u32["attrs"] = [("TCA_KIND", "u32"), ("TCA_CHAIN", 0)]
    u32["header"]["type"] = ops.RTM_NEWTFILTER
    u32.encode()
    got = readback.unpack(bytes(u32.data), NAMES)
    assert got.rule.label == FOREIGN and got.foreign == ("kind u32",)
    assert got.rule.key == ("pf0", "ingress", 0, 0, 3, 0x800)

    msg = codec.encode(Rule("pf0", 1, 1, Match(), (Action("pass"),)), 5, IFINDEX.__getitem__)
    dict(msg["attrs"])["TCA_OPTIONS"]["attrs"].append(("TCA_FLOWER_KEY_IP_TTL", "40"))
    msg.encode()
    got = readback.unpack(bytes(msg.data), NAMES)
    assert got.foreign == ("TCA_FLOWER_KEY_IP_TTL",) and got.rule.label == FOREIGN

    raw = _with_action(Rule("pf0", 1, 1, Match(), (Action("pass"),)),
                       [("TCA_ACT_COOKIE", b"\xff\xfe")])
    assert readback.unpack(raw, NAMES).foreign == ("cookie fffe",)

    # gact with a random verdict (TCA_GACT_PROB) is not a plain pass
    msg = codec.encode(Rule("pf0", 1, 1, Match(), (Action("pass"),)), 5, IFINDEX.__getitem__)
    options = dict(msg["attrs"])["TCA_OPTIONS"]["attrs"]
    act = dict(dict(options)["TCA_FLOWER_ACT"]["attrs"])["TCA_ACT_PRIO_1"]["attrs"]
    dict(act)["TCA_ACT_OPTIONS"]["attrs"].append(("TCA_GACT_PROB", "0100"))
    msg.encode()
    got = readback.unpack(bytes(msg.data), NAMES)
    assert got.foreign == ("action gact",) and got.rule.actions == ()


def test_vanished_mirred_target_reads_back_without_dev() -> None:
    rule = Rule("pf0", 1, 1, Match(), (Action("redirect", "vf0-rep"),), label="x")
    got = readback.unpack(whole(rule), {5: "pf0"})  # vf0-rep (7) is gone
    assert got.rule.actions == (Action("redirect", None),)
    assert not got.foreign and got.rule != rule


# --- diff -----------------------------------------------------------------------------

R1 = Rule("pf0", 10, 1, Match(dst_mac="02:00:00:00:00:01"), (Action("redirect", "vf0-rep"),),
          label="rx:vf0")
R2 = Rule("pf0", 10, 2, Match(eth_type=ETH_P_IP, ip_proto=17, dst_port=ROCEV2_PORT, hash=1,
                              hash_mask=1), (Action("redirect", "vf1-rep"),), label="roce:b1")
R3 = Rule("vf0-rep", 1, 1, Match(), (Action("redirect", "pf0"),), hook="ingress", label="tx")


def test_diff_installs_everything_into_nothing() -> None:
    assert ops.diff([R2, R1], []) == ([R1, R2], [], [])


def test_diff_ignores_what_the_kernel_fills_in() -> None:
    desired = [Rule("pf0", 10, 1, Match(dst_mac="02:00:00:00:00:01".upper(),
                                        dst_mac_mask="ff:ff:ff:ff:ff:ff"),
                    R1.actions, label="rx:vf0")]
    installed = [readback.unpack(whole(desired[0]), NAMES)]
    assert ops.diff(desired, installed) == ([], [], [])


def test_diff_replaces_in_place_when_the_mask_keeps_its_shape() -> None:
    moved = Rule(R1.dev, R1.prio, R1.handle, Match(dst_mac="02:00:00:00:00:09"),
                 (Action("redirect", "vf1-rep"),), label="rx:vf0")
    bucket = Rule(R2.dev, R2.prio, R2.handle, Match(eth_type=ETH_P_IP, ip_proto=17,
                  dst_port=ROCEV2_PORT, hash=0, hash_mask=1), R2.actions, label="roce:b0")
    assert ops.diff([moved, bucket], [InstalledRule(R1), InstalledRule(R2)]) == (
        [], [moved, bucket], [])


def test_diff_deletes_and_adds_when_the_mask_changes_shape() -> None:
    wider = Rule(R2.dev, R2.prio, R2.handle, Match(eth_type=ETH_P_IP, ip_proto=17,
                 dst_port=ROCEV2_PORT, hash=1, hash_mask=3), R2.actions, label=R2.label)
    assert canonical.mask_shape(wider.match) != canonical.mask_shape(R2.match)
    assert ops.diff([wider], [R2]) == ([wider], [], [R2])


def test_diff_removes_extra_and_rewrites_foreign_rules() -> None:
    foreign = Rule("pf0", 10, 1, Match(), (), skip_hw=False, label=FOREIGN)
    installed = [InstalledRule(foreign, foreign=("kind u32",)), InstalledRule(R3)]
    assert ops.diff([R1], installed) == ([R1], [], [foreign, R3])


def test_diff_refuses_two_rules_with_one_key() -> None:
    twin = Rule(R1.dev, R1.prio, R1.handle, Match(), (Action("drop"),))
    with pytest.raises(ConflictError, match="pf0 ingress prio 10 handle 1"):
        ops.diff([R1, twin], [])


def test_mask_shape() -> None:
    assert canonical.mask_shape(Match(dst_mac="02:00:00:00:00:01")) == canonical.mask_shape(
        Match(dst_mac="02:00:00:00:00:02", dst_mac_mask="ff:ff:ff:ff:ff:ff"))
    assert canonical.mask_shape(Match(hash=0, hash_mask=15)) == canonical.mask_shape(
        Match(hash=9, hash_mask=15))
    assert canonical.mask_shape(Match(src_ip="198.18.0.0/24")) != canonical.mask_shape(
        Match(src_ip="198.18.0.0/25"))
    assert canonical.mask_shape(Match(src_ip="198.18.0.1")) != canonical.mask_shape(
        Match(src_ip="::1"))
    assert canonical.mask_shape(Match()) != canonical.mask_shape(Match(eth_type=ETH_P_IP))
    # indev is a full-width key: the interface changes, the shape does not
    assert canonical.mask_shape(Match(indev="pf0")) == canonical.mask_shape(Match(indev="pf1"))
    assert canonical.mask_shape(Match(indev="pf0")) != canonical.mask_shape(Match())


def test_block_rules_read_back_with_their_block_and_key() -> None:
    got = readback.unpack(whole(BLOCK_GOTO), NAMES).rule
    assert got.key == ("", "ingress", 1, 0, 100, 2) and got.actions == (Action("goto", chain=1),)
    assert canonical.where(got) == "block 1 prio 100 handle 2 [tx:vf0]"


# --- nlpipe's message parsing ------------------------------------------------------

def test_error_reply_with_extended_ack() -> None:
    # NLMSG_ERROR, flags CAPPED|ACK_TLVS: errno -22, the echoed request's header,
    # then NLMSGERR_ATTR_MSG "Parent Qdisc doesn't exists"
    text = b"Parent Qdisc doesn't exists\0"
    tlv = struct.pack("=HH", 4 + len(text), 1) + text + b"\0" * (-len(text) % 4)
    echoed = nlpipe.HDR.pack(200, ops.RTM_NEWTFILTER, 0x605, 77, 0)
    payload = struct.pack("=i", -errno.EINVAL) + echoed + tlv
    msg = nlpipe.HDR.pack(16 + len(payload), nlpipe.NLMSG_ERROR, 0x300, 77, 1) + payload
    ((msg_type, flags, seq, view),) = list(nlpipe.messages(msg))
    assert (msg_type, seq) == (nlpipe.NLMSG_ERROR, 77)
    assert nlpipe.parse_error(view, flags) == nlpipe.Reply(
        errno.EINVAL, "Parent Qdisc doesn't exists")
    ack = nlpipe.HDR.pack(36, nlpipe.NLMSG_ERROR, 0x100, 78, 1) + struct.pack("=i", 0) + echoed
    ((_, flags, seq, view),) = list(nlpipe.messages(ack))
    assert nlpipe.parse_error(view, flags) == nlpipe.OK and seq == 78


def test_messages_splits_a_datagram() -> None:
    raws = [bytes.fromhex(KERNEL_PRIO_HEADER), bytes.fromhex(KERNEL_REDIRECT)]
    split = list(nlpipe.messages(b"".join(raws)))
    assert [bytes(m) for *_, m in split] == raws
