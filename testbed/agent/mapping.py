"""Port-selection tables (pure): which port each hash bucket's flows leave by.

Modelled on mlx5's hash-based port selection (``lag/port_sel.c``): a table
of ``ports × buckets`` entries; entry ``i`` matches ``skb->hash & (size-1) == i``.

* **Native mapping**: entry ``i`` belongs to port ``i * ports // size``
  (= ``i // buckets`` when ``ports × buckets`` is a power of two, mlx5's layout).
  A port count that is not a power of two (3 ports) is *folded*: the table
  grows to the next power of two and the entries are shared out as evenly as
  integer division allows (22/21/21 for 3 ports × 16 buckets → 64 entries).
* **A dead port's entries** are re-pointed over the live ports round-robin:
  entry ``i`` of port ``p`` tries ``p+1+(i mod (P-1))``, then the following
  ports in turn (mod P), and takes the first live one. Entries of live ports
  never move.
* **Properties** (unit-tested): when a port dies, only entries that pointed
  at it change; when a port recovers, every entry that changes now points at
  it; with every port live the table is native again; the table depends only
  on *which* ports are live, never on history, so a restarted agent computes
  the same table.
* No live port: every entry is ``None`` (the rules drop).

ice's VF active-active (2025) is the same table with one entry per port
(``buckets=1``): each VF's flows are split by hash half over the ports, all
halves move to the survivor on failure and the same halves come back.
"""

from __future__ import annotations

from typing import AbstractSet, Optional, Sequence, Tuple

from testbed.topology import Nic

Table = Tuple[Optional[int], ...]


def next_pow2(n: int) -> int:
    if n < 1:
        raise ValueError(f"table size {n} < 1")
    return 1 << (n - 1).bit_length()


def table_size(ports: int, buckets: int) -> int:
    """Entries in the table: ``ports × buckets`` rounded up to a power of two (flower matches ``hash & mask``)."""
    if ports < 1 or buckets < 1:
        raise ValueError(f"ports={ports} buckets={buckets}: both must be >= 1")
    return next_pow2(ports * buckets)


def native(ports: int, size: int) -> Tuple[int, ...]:
    """Entry -> port index with every port live."""
    return tuple(i * ports // size for i in range(size))


def fallback_order(port: int, entry: int, ports: int) -> Tuple[int, ...]:
    """The ports entry ``entry`` of dead port ``port`` tries, in order (round-robin start per entry)."""
    if ports < 2:
        return ()
    start = entry % (ports - 1)
    return tuple((port + 1 + (start + k) % (ports - 1)) % ports for k in range(ports - 1))


def select(ports: int, buckets: int, live: AbstractSet[int]) -> Table:
    """The table for ``ports`` ports of which ``live`` (indexes) may carry traffic."""
    size = table_size(ports, buckets)
    out = []
    for i, p in enumerate(native(ports, size)):
        if p in live:
            out.append(p)
            continue
        out.append(next((q for q in fallback_order(p, i, ports) if q in live), None))
    return tuple(out)


def by_name(table: Table, names: Sequence[str]) -> Tuple[Optional[str], ...]:
    return tuple(None if p is None else names[p] for p in table)


def for_nic(nic: Nic, usable: Sequence[str]) -> Tuple[Optional[str], ...]:
    """The NIC's TX table as port names for the ports in use: active-backup one entry (the active port),
    hash ``ports × buckets`` entries, vf-split one entry per port; ``None``: drop."""
    if nic.offload.mode == "active-backup":
        return (usable[0] if usable else None,)
    live = frozenset(i for i, p in enumerate(nic.ports) if p in usable)
    buckets = nic.offload.buckets if nic.offload.mode == "hash" else 1
    return by_name(select(len(nic.ports), buckets, live), nic.ports)
