"""RoCEv2 frames and ICRC, checked against an independent bitwise CRC and golden frames."""

from __future__ import annotations

import struct

import pytest
from scapy.contrib.roce import BTH
from scapy.layers.l2 import Ether

from traffic.packets import flows, parse_stream_header
from traffic.roce import build_roce_template, icrc, icrc_ok

# A RoCEv2 CNP captured on a ConnectX-4 Lx (scapy's test/contrib/roce.uts): the NIC
# computed the trailing ICRC 82 fd 00 2a.
GOLDEN_CNP = bytes.fromhex(
    "e41d2dab2bc27cfe90643b32080045c2003c718c4000401191610a0011010a001201"
    "000012b7002800008100ffff40000118000000000000000000000000000000000000000082fd002a"
)


def crc32_bitwise(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, reflected 0xEDB88320), bit by bit: independent of zlib."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def reference_icrc_ipv4(frame: bytes) -> bytes:
    """ICRC by the IBTA recipe with hard-coded offsets (Ethernet + 20-byte IPv4)."""
    b = bytearray(frame[14:-4])
    b[1] = 0xFF  # IPv4 TOS
    b[8] = 0xFF  # TTL
    b[10:12] = b"\xff\xff"  # header checksum
    b[26:28] = b"\xff\xff"  # UDP checksum (UDP at 20)
    b[32] = 0xFF  # BTH byte 4 (BTH at 28): FECN, BECN, resv6
    return struct.pack("<I", crc32_bitwise(b"\xff" * 8 + bytes(b)))


def reference_icrc_ipv6(frame: bytes) -> bytes:
    b = bytearray(frame[14:-4])
    b[0] |= 0x0F  # traffic class, high nibble
    b[1:4] = b"\xff\xff\xff"  # traffic class low nibble + flow label
    b[7] = 0xFF  # hop limit
    b[46:48] = b"\xff\xff"  # UDP checksum (UDP at 40)
    b[52] = 0xFF  # BTH byte 4 (BTH at 48)
    return struct.pack("<I", crc32_bitwise(b"\xff" * 8 + bytes(b)))


def test_golden_hardware_frame() -> None:
    assert reference_icrc_ipv4(GOLDEN_CNP) == GOLDEN_CNP[-4:] == bytes.fromhex("82fd002a")
    assert icrc(GOLDEN_CNP) == 0x2A00FD82
    assert icrc_ok(GOLDEN_CNP)
    bad = bytearray(GOLDEN_CNP)
    bad[60] ^= 1  # a payload bit
    assert not icrc_ok(bytes(bad))
    masked = bytearray(GOLDEN_CNP)
    masked[15] ^= 0x3C  # TOS is masked: the ICRC does not cover it
    masked[22] = 1  # nor the TTL
    masked[46] ^= 0xC0  # nor FECN/BECN
    assert icrc_ok(bytes(masked))


def test_golden_scapy_uc_packet() -> None:
    # scapy's own golden UC_SEND_ONLY packet (roce.uts): ICRC 0x78f353f3 as the field reads
    from scapy.layers.inet import IP, UDP
    from scapy.packet import Raw

    pkt = (
        Ether(dst="24:8a:07:a8:fa:22", src="24:8a:07:a8:fa:22")
        / IP(
            version=4, ihl=5, tos=0x1, id=1144, flags="DF", frag=0, ttl=64, src="192.168.0.7", dst="192.168.0.7", len=64
        )
        / UDP(sport=49152, dport=4791, len=44)
        / BTH(opcode="UC_SEND_ONLY", migreq=1, padcount=2, pkey=0xFFFF, dqpn=211, psn=13571856)
        / Raw(b"F0\x81\x8b\xe2\x895\xd9\x0e\x9a\x95PT\x01\xbe\x88^P\x00\x00")
    )
    frame = bytes(pkt)
    assert frame[-4:] == bytes.fromhex("78f353f3")
    assert reference_icrc_ipv4(frame) == frame[-4:]
    assert icrc_ok(frame)


@pytest.mark.parametrize("src,dst", [("198.18.0.1", "198.18.1.1"), ("2001:db8::1", "2001:db8::9")])
def test_template_icrc_matches_scapy_and_reference(src: str, dst: str) -> None:
    flow = flows(2, src, dst, proto="roce")[1]
    t = build_roce_template(flow, 5, payload_len=45)
    ref = reference_icrc_ipv4 if ":" not in src else reference_icrc_ipv6
    for seq in (0, 1, 0xFFFFFF, 0x1000000 + 17, 2**50):
        frame = bytes(t.stamp(seq, 1_700_000_000_000_000_000 + seq))
        pkt = Ether(frame)
        assert pkt[BTH].psn == seq & 0xFFFFFF
        assert pkt[BTH].dqpn == flow.qpn and pkt[BTH].opcode == 0x04
        assert pkt[BTH].padcount == 3  # 45 -> 48 bytes
        assert parse_stream_header(frame, t.stream_off) == (5, 1, seq, 1_700_000_000_000_000_000 + seq)
        assert frame[-4:] == ref(frame)
        del pkt[BTH].icrc
        assert bytes(pkt)[-4:] == frame[-4:]  # scapy's BTH.compute_icrc agrees
        assert icrc_ok(frame)


def test_icrc_rejects_non_roce() -> None:
    with pytest.raises(ValueError):
        icrc(GOLDEN_CNP[:30])
    assert not icrc_ok(b"\x00" * 80)
