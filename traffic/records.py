"""``RxRecord``: one captured packet of a sequenced stream (plain data).

Public API:
    RxRecord(stream_id, flow_id, seq, tx_ns, rx_ns, ifindex, ifname, kind, sport, dport,
             psn, icrc_ok)                                         NamedTuple
    RxRecord.to_dict() -> dict
    wire: ``ifname`` is the interface the frame entered the namespace on (its
    "wire"); ``rx_ns`` is the kernel's CLOCK_REALTIME receive stamp and
    ``tx_ns`` the sender's CLOCK_REALTIME stamp carried in the packet.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional


class RxRecord(NamedTuple):
    stream_id: int
    flow_id: int
    seq: int
    tx_ns: int
    rx_ns: int
    ifindex: int
    ifname: str
    kind: str  # "udp" | "tcp" | "roce"
    sport: int
    dport: int
    psn: Optional[int] = None  # RoCEv2 only
    icrc_ok: Optional[bool] = None  # RoCEv2 only

    def to_dict(self) -> Dict[str, Any]:
        return self._asdict()
