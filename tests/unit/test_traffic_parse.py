"""Dissection of received frames into stream fields."""

from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from traffic.packets import build_template, flows, pack_stream_header
from traffic.parse import parse_stream_frame


def test_udp_tcp_roce_ipv6() -> None:
    cases = [
        flows(2, "198.18.0.1", "198.18.1.1")[1],
        flows(2, "198.18.0.1", "198.18.1.1", proto="tcp")[1],
        flows(2, "198.18.0.1", "198.18.1.1", proto="roce")[1],
        flows(2, "2001:db8::1", "2001:db8::2", proto="roce")[1],
        flows(2, "2001:db8::1", "2001:db8::2", proto="tcp")[1],
    ]
    for flow in cases:
        frame = bytes(build_template(flow, 77, payload_len=40).stamp(2**24 + 5, 123))
        p = parse_stream_frame(frame)
        assert p is not None, flow
        assert (p.kind, p.sport, p.dport) == (flow.proto, flow.sport, flow.dport)
        assert (p.stream_id, p.flow_id, p.seq, p.tx_ns) == (77, 1, 2**24 + 5, 123)
        if flow.proto == "roce":
            assert p.psn == 5 and p.icrc_ok is True
            bad = bytearray(frame)
            bad[-1] ^= 0xFF
            assert parse_stream_frame(bytes(bad)).icrc_ok is False
            assert parse_stream_frame(bytes(bad), check_icrc=False).icrc_ok is None
        else:
            assert p.psn is None and p.icrc_ok is None


def test_vlan_tagged() -> None:
    payload = pack_stream_header(1, 2, 3, 4)
    frame = bytes(
        Ether() / Dot1Q(vlan=5) / IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=9, dport=10) / Raw(payload)
    )
    p = parse_stream_frame(frame)
    assert p is not None and (p.stream_id, p.flow_id, p.seq, p.tx_ns) == (1, 2, 3, 4)


def test_not_ours() -> None:
    payload = pack_stream_header(1, 2, 3, 4)
    ip = IP(src="198.18.0.1", dst="198.18.0.2")
    assert parse_stream_frame(bytes(Ether() / ip / UDP() / Raw(b"x" * 40))) is None
    assert parse_stream_frame(bytes(Ether(type=0x88B5) / Raw(payload * 2))) is None
    assert (
        parse_stream_frame(bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", proto=47) / Raw(b"\0" * 8 + payload)))
        is None
    )
    frag = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", frag=10) / UDP() / Raw(payload))
    assert parse_stream_frame(frag) is None
    assert parse_stream_frame(b"\x00" * 20) is None
