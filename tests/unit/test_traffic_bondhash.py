"""Bonding xmit hash (6.1) against vectors computed by hand from bond_main.c.

Every vector below is worked out in its comment: u32le() reads 4 bytes
little-endian, as the kernel's memcpy into a u32 does on x86.
  198.18.0.1 = c6 12 00 01 -> u32le 0x010012c6;  198.18.0.2 -> 0x020012c6
  their XOR: 0x03000000
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from testbed.errors import UsageError
from traffic.bondhash import fields_from_flow, fields_from_frame, predict_port, xmit_hash
from traffic.packets import Flow

MACS = dict(src="02:00:00:00:00:01", dst="02:00:00:00:01:02")  # last bytes 01 ^ 02 = 0x03
# bond_eth_hash = 0x03 ^ ethertype: 0x0803 for IPv4, 0x86de for IPv6, 0x0805 for ARP
ADDRS = dict(src="198.18.0.1", dst="198.18.0.2")


def udp(sport: int, dport: int) -> bytes:
    return bytes(Ether(**MACS) / IP(**ADDRS) / UDP(sport=sport, dport=dport) / Raw(b"x"))


def test_layer2_is_last_mac_bytes_and_ethertype() -> None:
    # 0x02 ^ 0x01 ^ 0x0800 = 0x0803 = 2051 = 3 * 683 + 2
    assert xmit_hash("layer2", udp(1, 2)) == 0x0803
    assert predict_port("layer2", udp(1, 2), 2) == 1
    assert predict_port("layer2", udp(1, 2), 3) == 2
    other = bytes(Ether(type=0x88B5, **MACS) / Raw(b"\0" * 46))
    assert xmit_hash("layer2", other) == 0x88B6  # 0x03 ^ 0x88b5


def test_layer23_ipv4() -> None:
    # h = 0x0803 ^ 0x03000000 = 0x03000803; ^= h>>16 (0x0300) -> 0x03000b03;
    # ^= h>>8 (0x0003000b) -> 0x03030b08
    assert xmit_hash("layer2+3", udp(20000, 5201)) == 0x03030B08
    assert predict_port("layer2+3", udp(20000, 5201), 2) == 0
    # ports do not matter for layer2+3
    assert xmit_hash("layer2+3", udp(1, 1)) == 0x03030B08


def test_layer23_ipv6_folds_the_address_words() -> None:
    # 2001:db8::1 -> words 0xb80d0120 ^ 0x01000000 = 0xb90d0120; ::2 -> 0xba0d0120;
    # XOR 0x03000000.  eth = 0x03 ^ 0x86dd = 0x86de: h = 0x030086de; ^= 0x0300 ->
    # 0x030085de; ^= 0x00030085 -> 0x0303855b
    frame = bytes(Ether(**MACS) / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2))
    assert xmit_hash("layer2+3", frame) == 0x0303855B


def test_layer34_udp_tcp() -> None:
    # ports 20000, 5201 = 4e 20 14 51 -> u32le 0x5114204e; ^ 0x03000000 = 0x5214204e;
    # ^= 0x5214 -> 0x5214725a; ^= 0x00521472 -> 0x52466628; >> 1 = 0x29233314
    assert xmit_hash("layer3+4", udp(20000, 5201)) == 0x29233314
    # sport 20001: 0x5214214e -> 0x5214735a -> 0x52466729 -> 0x29233394 (mod 3 = 2)
    assert xmit_hash("layer3+4", udp(20001, 5201)) == 0x29233394
    assert predict_port("layer3+4", udp(20001, 5201), 3) == 2
    tcp = bytes(Ether(**MACS) / IP(**ADDRS) / TCP(sport=20000, dport=5201))
    assert xmit_hash("layer3+4", tcp) == 0x29233314
    # MACs do not matter for layer3+4
    moved = bytes(Ether(src="02:00:00:00:00:77", dst="02:00:00:00:01:02") / IP(**ADDRS) / UDP(sport=20000, dport=5201))
    assert xmit_hash("layer3+4", moved) == 0x29233314


def test_layer34_icmp_echo_uses_type_code_id() -> None:
    # 8 | 0 << 8 | 0x0103 << 16 = 0x01030008; ^ 0x03000000 = 0x02030008; ^= 0x0203 ->
    # 0x0203020b; ^= 0x00020302 -> 0x02010109; >> 1 = 0x01008084
    echo = bytes(Ether(**MACS) / IP(**ADDRS) / ICMP(type=8, id=0x0103, seq=9))
    assert xmit_hash("layer3+4", echo) == 0x01008084
    # id 0 counts as 1: 0x00010008 ^ 0x03000000 = 0x03010008 -> ^0x0301 -> 0x03010309
    # -> ^0x00030103 -> 0x0302020a -> >>1 = 0x01810105
    zero = bytes(Ether(**MACS) / IP(**ADDRS) / ICMP(type=8, id=0, seq=9))
    assert xmit_hash("layer3+4", zero) == 0x01810105


def test_layer34_icmp_error_hashes_the_quoted_packet() -> None:
    # quoted: 198.18.0.2 -> 198.18.0.30 UDP 3000 -> 53; ports 0b b8 00 35 -> 0x3500b80b;
    # addrs 0x020012c6 ^ 0x1e0012c6 = 0x1c000000 -> 0x2900b80b; ^= 0x2900 -> 0x2900910b;
    # ^= 0x00290091 -> 0x2929919a; >> 1 = 0x1494c8cd
    inner = IP(src="198.18.0.2", dst="198.18.0.30") / UDP(sport=3000, dport=53)
    err = bytes(Ether(**MACS) / IP(**ADDRS) / ICMP(type=3, code=3) / bytes(inner))
    assert xmit_hash("layer3+4", err) == 0x1494C8CD


def test_layer34_fragment_has_no_ports() -> None:
    # ports 0: 0x03000000 -> ^0x0300 -> 0x03000300 -> ^0x00030003 -> 0x03030303 -> >>1
    frag = bytes(Ether(**MACS) / IP(flags="MF", id=7, **ADDRS) / UDP(sport=20000, dport=5201))
    assert xmit_hash("layer3+4", frag) == 0x01818181


def test_non_ip_falls_back_to_layer2() -> None:
    arp_like = bytes(Ether(type=0x0806, **MACS) / Raw(b"\0" * 28))
    for policy in ("layer2+3", "layer3+4"):
        assert xmit_hash(policy, arp_like) == 0x0805


def test_flow_and_frame_agree() -> None:
    flow = Flow(0, "udp", "198.18.0.1", "198.18.0.2", 20000, 5201, MACS["src"], MACS["dst"])
    assert fields_from_flow(flow) == fields_from_frame(udp(20000, 5201))
    for policy in ("layer2", "layer2+3", "layer3+4"):
        assert xmit_hash(policy, flow) == xmit_hash(policy, udp(20000, 5201))


def test_bad_policy_and_slave_count() -> None:
    with pytest.raises(UsageError):
        xmit_hash("encap3+4", udp(1, 2))
    with pytest.raises(UsageError):
        predict_port("layer2", udp(1, 2), 0)
    with pytest.raises(ValueError):
        xmit_hash("layer2", b"\x00" * 10)
