"""The pcap writer, read back by scapy."""

from __future__ import annotations

from decimal import Decimal

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import CookedLinuxV2, Ether
from scapy.utils import rdpcap

from testbed.errors import UsageError
from traffic.pcap import PcapWriter

FRAME = bytes(
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    / IP(src="198.18.0.1", dst="198.18.0.2")
    / UDP(sport=1, dport=2)
)
TS = 1_700_000_000_123_456_789


def test_ethernet(tmp_path) -> None:
    path = str(tmp_path / "e.pcap")
    with PcapWriter(path) as w:
        w.write(FRAME, TS)
        w.write(FRAME, TS + 1)
    pkts = rdpcap(path)
    assert len(pkts) == 2 and w.count == 2
    assert bytes(pkts[0]) == FRAME
    assert pkts[0].time == Decimal("1700000000.123456789")
    assert pkts[1].time - pkts[0].time == Decimal("0.000000001")


def test_sll2_keeps_the_interface(tmp_path) -> None:
    path = str(tmp_path / "s.pcap")
    with PcapWriter(path, linktype="sll2") as w:
        w.write(FRAME, TS, ifindex=7, pkttype=0)
        w.write(FRAME, TS, ifindex=9, pkttype=4)
    pkts = rdpcap(path)
    assert [p[CookedLinuxV2].ifindex for p in pkts] == [7, 9]
    assert [p[CookedLinuxV2].pkttype for p in pkts] == [0, 4]
    assert pkts[0][CookedLinuxV2].proto == 0x0800
    assert pkts[0][IP].src == "198.18.0.1" and pkts[0][UDP].dport == 2


def test_snaplen_and_errors(tmp_path) -> None:
    path = str(tmp_path / "t.pcap")
    with PcapWriter(path, snaplen=20) as w:
        w.write(FRAME, TS)
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) == 24 + 16 + 20
    assert int.from_bytes(data[24 + 12 : 24 + 16], "little") == len(FRAME)  # original length
    with pytest.raises(ValueError):
        w.write(FRAME, TS)
    with pytest.raises(UsageError):
        PcapWriter(str(tmp_path / "x.pcap"), linktype="usb")
