"""RoCEv2 integrity of captured records (pure): ICRC intact, PSNs in order per queue pair.

A RoCEv2 stream's packet ``seq`` carries PSN ``seq mod 2**24`` to the
flow's destination QP (``traffic.roce``); a receiver records the PSN it read
from the BTH and whether the ICRC matched.  Per QP, in arrival order, each
PSN must be ahead of the previous one (modulo 2**24, as an RC responder
compares them): a step of 0 is a duplicate, a step back (``>= 2**23`` mod
2**24) a regression -- what makes an RC QP NAK and retransmit.  The streams
send their QPs round-robin, so a QP's PSNs advance by the number of QPs
(``stride``) per packet; a larger step is a gap (lost packets).

Public API:
    PsnReport(packets, qps, icrc_bad, psn_mismatch, duplicates, regressions, gaps)   frozen dataclass
        .ok -> bool; .to_dict()
    psn_order(records, stride=None) -> PsnReport      stride: PSN step per packet of a QP (default: QPs seen)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, Optional

PSN_MOD = 1 << 24
HALF = 1 << 23


@dataclass(frozen=True)
class PsnReport:
    packets: int
    qps: int
    icrc_bad: int  # arrived with a wrong (or unreadable) ICRC
    psn_mismatch: int  # PSN in the BTH != seq mod 2**24 (the frame was altered)
    duplicates: int  # same PSN again on a QP
    regressions: int  # PSN behind the previous one on its QP
    gaps: int  # forward steps > stride (lost PSNs; expected across a failover)

    @property
    def ok(self) -> bool:
        return self.icrc_bad == 0 and self.psn_mismatch == 0 and self.duplicates == 0 and self.regressions == 0

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def psn_order(records: Iterable[Any], stride: Optional[int] = None) -> PsnReport:
    """Records need ``flow_id``, ``seq``, ``psn``, ``icrc_ok`` and ``rx_ns`` (arrival order)."""
    recs = sorted(records, key=lambda r: r.rx_ns)
    if stride is None:
        stride = max(1, len({r.flow_id for r in recs}))
    last: Dict[int, int] = {}
    icrc_bad = mismatch = dup = back = gaps = 0
    for r in recs:
        if r.icrc_ok is not True:
            icrc_bad += 1
        if r.psn is None or r.psn != r.seq % PSN_MOD:
            mismatch += 1
            continue
        prev = last.get(r.flow_id)
        if prev is not None:
            step = (r.psn - prev) % PSN_MOD
            if step == 0:
                dup += 1
                continue
            if step >= HALF:
                back += 1
                continue
            if step > stride:
                gaps += 1
        last[r.flow_id] = r.psn
    return PsnReport(len(recs), len(last), icrc_bad, mismatch, dup, back, gaps)
