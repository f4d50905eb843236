"""Flows: 5-tuples plus MACs (and a QP for RoCEv2), made deterministically (pure, no scapy).

Public API:
    DEFAULT_SRC_MAC, DEFAULT_DST_MAC: str;  ROCEV2_PORT = 4791
    Flow(flow_id, proto, src_ip, dst_ip, sport, dport, src_mac, dst_mac, qpn)   frozen dataclass
        .five_tuple -> (l4 proto, src_ip, dst_ip, sport, dport)
    flows(n, src_ip, dst_ip, *, proto="udp", vary="sport", sport_base=20000, dport=5201,
          src_mac=..., dst_mac=..., first_id=0, qpn_base=0x100) -> list[Flow]
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import List

from testbed.errors import UsageError

DEFAULT_SRC_MAC = "02:74:62:00:00:01"
DEFAULT_DST_MAC = "02:74:62:00:00:02"
ROCEV2_PORT = 4791
PROTOS = ("udp", "tcp", "roce")
VARY = ("sport", "dport", "src_ip", "dst_ip")


@dataclass(frozen=True)
class Flow:
    """One flow: its 5-tuple, the MACs of its frames, and (RoCEv2) its destination QP."""

    flow_id: int
    proto: str  # "udp" | "tcp" | "roce" (UDP to port 4791 carrying a BTH)
    src_ip: str
    dst_ip: str
    sport: int
    dport: int
    src_mac: str = DEFAULT_SRC_MAC
    dst_mac: str = DEFAULT_DST_MAC
    qpn: int = 0

    @property
    def five_tuple(self) -> tuple:
        l4 = "udp" if self.proto == "roce" else self.proto
        return (l4, self.src_ip, self.dst_ip, self.sport, self.dport)


def flows(
    n: int,
    src_ip: str,
    dst_ip: str,
    *,
    proto: str = "udp",
    vary: str = "sport",
    sport_base: int = 20000,
    dport: int = 5201,
    src_mac: str = DEFAULT_SRC_MAC,
    dst_mac: str = DEFAULT_DST_MAC,
    first_id: int = 0,
    qpn_base: int = 0x100,
) -> List[Flow]:
    """``n`` flows with distinct 5-tuples, deterministically.

    Flow ``i`` (id ``first_id + i``) differs from the others in one field chosen
    by ``vary``: ``sport`` (sport_base + i), ``dport`` (dport + i), ``src_ip`` or
    ``dst_ip`` (address + i).  RoCEv2 flows always go to UDP port 4791 (the
    source port is the flow entropy, as RoCEv2 NICs do) and get QPN qpn_base + i.
    """
    if proto not in PROTOS:
        raise UsageError(f"flows: unknown proto {proto!r}", fix=f"use one of {', '.join(PROTOS)}")
    if vary not in VARY:
        raise UsageError(f"flows: cannot vary {vary!r}", fix=f"use one of {', '.join(VARY)}")
    if n < 1:
        raise UsageError(f"flows: n={n}", fix="ask for at least one flow")
    if proto == "roce":
        dport = ROCEV2_PORT
        if vary == "dport":
            raise UsageError("flows: RoCEv2 flows all go to port 4791", fix="vary sport instead")
    src = ipaddress.ip_address(src_ip)
    dst = ipaddress.ip_address(dst_ip)
    if src.version != dst.version:
        raise UsageError(f"flows: {src_ip} and {dst_ip} are of different IP versions")
    for base, what in ((sport_base, "sport"), (dport, "dport")):
        if not 0 < base <= 0xFFFF or (vary == what and base + n - 1 > 0xFFFF):
            raise UsageError(f"flows: {what} {base}..{base + n - 1} leaves 1..65535")
    out = []
    for i in range(n):
        out.append(
            Flow(
                flow_id=first_id + i,
                proto=proto,
                src_ip=str(src + i) if vary == "src_ip" else str(src),
                dst_ip=str(dst + i) if vary == "dst_ip" else str(dst),
                sport=sport_base + i if vary == "sport" else sport_base,
                dport=dport + i if vary == "dport" else dport,
                src_mac=src_mac,
                dst_mac=dst_mac,
                qpn=(qpn_base + i) & 0xFFFFFF if proto == "roce" else 0,
            )
        )
    return out
