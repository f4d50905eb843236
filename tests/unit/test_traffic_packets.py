"""Flows, the stream header and frame templates (pure; scapy is the reference)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from testbed.errors import UsageError
from traffic.packets import (
    STREAM_HEADER_LEN,
    STREAM_MAGIC,
    build_template,
    checksum_fix,
    flows,
    pack_stream_header,
    parse_stream_header,
)


def test_flows_are_deterministic_and_distinct() -> None:
    a = flows(64, "198.18.0.1", "198.18.1.1")
    assert a == flows(64, "198.18.0.1", "198.18.1.1")
    assert len({f.five_tuple for f in a}) == 64
    assert [f.flow_id for f in a] == list(range(64))
    assert (a[0].sport, a[63].sport, a[5].dport) == (20000, 20063, 5201)


@pytest.mark.parametrize("vary", ["sport", "dport", "src_ip", "dst_ip"])
def test_flows_vary_one_field(vary: str) -> None:
    fl = flows(5, "198.18.0.1", "198.18.1.1", proto="tcp", vary=vary, first_id=10)
    assert len({f.five_tuple for f in fl}) == 5
    assert [f.flow_id for f in fl] == [10, 11, 12, 13, 14]
    if vary == "src_ip":
        assert fl[4].src_ip == "198.18.0.5" and fl[4].sport == 20000
    if vary == "dst_ip":
        assert fl[4].dst_ip == "198.18.1.5"
    if vary == "dport":
        assert fl[4].dport == 5205


def test_roce_flows_go_to_4791_with_their_own_qp() -> None:
    fl = flows(3, "198.18.0.1", "198.18.1.1", proto="roce", dport=9999)
    assert {f.dport for f in fl} == {4791}
    assert [f.qpn for f in fl] == [0x100, 0x101, 0x102]
    assert fl[0].five_tuple == ("udp", "198.18.0.1", "198.18.1.1", 20000, 4791)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=0),
        dict(n=2, proto="sctp"),
        dict(n=2, vary="ttl"),
        dict(n=2, proto="roce", vary="dport"),
        dict(n=10, sport_base=65530),
        dict(n=1, dst_ip="2001:db8::1"),
    ],
)
def test_flows_reject_bad_requests(kwargs: dict) -> None:
    dst = kwargs.pop("dst_ip", "198.18.1.1")
    with pytest.raises(UsageError):
        flows(src_ip="198.18.0.1", dst_ip=dst, **kwargs)


def test_stream_header_round_trip() -> None:
    raw = pack_stream_header(7, 3, 2**40 + 5, 1_700_000_000_123_456_789)
    assert len(raw) == STREAM_HEADER_LEN == 32
    assert raw[:4] == STREAM_MAGIC
    assert parse_stream_header(b"xx" + raw, 2) == (7, 3, 2**40 + 5, 1_700_000_000_123_456_789)
    assert parse_stream_header(b"XBSQ" + raw[4:]) is None
    assert parse_stream_header(raw[:31]) is None


def test_checksum_fix_cancels_the_patched_words() -> None:
    for seq, ts in [(0, 0), (1, 2), (2**64 - 1, 2**63 + 12345), (0xFFFF, 0xFFFF * 3)]:
        words = [(v >> s) & 0xFFFF for v in (seq, ts) for s in (48, 32, 16, 0)]
        total = sum(words) + checksum_fix(seq, ts)
        assert total % 0xFFFF == 0 and total > 0  # one's-complement zero: sum unchanged


def _stamped(flow, seq: int, ts: int, **kw) -> Ether:
    t = build_template(flow, 42, **kw)
    return Ether(bytes(t.stamp(seq, ts))), t


@pytest.mark.parametrize(
    "proto,src,dst",
    [
        ("udp", "198.18.0.1", "198.18.1.1"),
        ("tcp", "198.18.0.1", "198.18.1.1"),
        ("udp", "2001:db8::1", "2001:db8::2"),
        ("tcp", "2001:db8::1", "2001:db8::2"),
    ],
)
def test_stamped_template_equals_a_fresh_scapy_build(proto: str, src: str, dst: str) -> None:
    flow = flows(4, src, dst, proto=proto)[2]
    for seq, ts in [(0, 0), (1, 1_700_000_000_000_000_001), (2**33 + 7, 2**62 + 99)]:
        pkt, t = _stamped(flow, seq, ts, payload_len=100, l4_checksum=True)
        raw = bytes(pkt)
        assert len(raw) == len(t.frame)
        assert parse_stream_header(raw, t.stream_off) == (42, flow.flow_id, seq, ts)
        assert raw[t.stream_off + STREAM_HEADER_LEN :] == bytes(100 - STREAM_HEADER_LEN)
        l4 = pkt[TCP] if proto == "tcp" else pkt[UDP]
        assert (l4.sport, l4.dport) == (flow.sport, flow.dport)
        wire = l4.chksum
        assert wire != 0  # a real checksum is kept: TCP, UDP over IPv6
        del l4.chksum
        assert Ether(bytes(pkt))[type(l4)].chksum == wire  # still valid after patching
        if IP in pkt:
            del pkt[IP].chksum
            assert Ether(raw)[IP].chksum == Ether(bytes(pkt))[IP].chksum
        else:
            assert pkt[IPv6].plen == len(raw) - 14 - 40


def test_udp_over_ipv4_sends_checksum_zero_unless_asked() -> None:
    flow = flows(1, "198.18.0.1", "198.18.1.1")[0]
    pkt, _ = _stamped(flow, 5, 6)
    assert pkt[UDP].chksum == 0
    pkt, _ = _stamped(flow, 5, 6, l4_checksum=True)
    wire = pkt[UDP].chksum
    del pkt[UDP].chksum
    assert wire and Ether(bytes(pkt))[UDP].chksum == wire


def test_template_frame_layout() -> None:
    flow = flows(1, "198.18.0.1", "198.18.1.1", src_mac="02:00:00:00:00:aa")[0]
    t = build_template(flow, 9)
    pkt = Ether(bytes(t.frame))
    assert pkt.src == "02:00:00:00:00:aa"
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl, pkt[IP].flags) == ("198.18.0.1", "198.18.1.1", 64, 2)
    assert t.stream_off == 14 + 20 + 8 and len(t.frame) == 14 + 20 + 8 + 32
    assert bytes(pkt[Raw])[:4] == STREAM_MAGIC
    with pytest.raises(UsageError):
        build_template(flow, 9, payload_len=31)
