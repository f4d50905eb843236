"""Kernel time stamps of packet-socket frames (``SO_TIMESTAMPNS``), always on the real-time clock.

A packet socket hands over ``skb->tstamp`` as if it were the real time, but a forwarded skb can
keep a time stamp on another clock -- its delivery time, on CLOCK_MONOTONIC or CLOCK_TAI (seen on
7.3 for a share of the RoCE frames crossing a lab's wires). ``real_ns`` keeps a stamp that lies
between ``MAX_LAG_NS`` before and ``AHEAD_NS`` after the real time at which the frame is read (a
capture thread in a TCG guest can read frames seconds late), moves one that fits there on the
monotonic or the TAI clock onto the real-time clock by that clock's offset, and gives the read time
for a frame without a stamp or with one that fits no clock. The read time is only the last resort:
a late read would move a frame across a phase boundary.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Iterable, Tuple

SO_TIMESTAMPNS = 35
MAX_LAG_NS = 600_000_000_000  # a frame read up to 10 min after it crossed (a real-time stamp is never newer)
AHEAD_NS = 1_000_000_000  # clock steps between the kernel's stamp and our read
TIMESPEC = struct.Struct("qq")


def real_ns(anc: Iterable[Tuple[int, int, bytes]]) -> Tuple[int, bool]:
    """(the frame's time on CLOCK_REALTIME in ns, whether its stamp was on another clock or unusable)."""
    now = time.clock_gettime_ns(time.CLOCK_REALTIME)
    for level, kind, val in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(val) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack(val[:TIMESPEC.size])
            t_ns = sec * 1_000_000_000 + nsec
            if _plausible(now, t_ns):
                return t_ns, False
            for clock in (time.CLOCK_MONOTONIC, time.CLOCK_TAI):
                moved = t_ns + now - time.clock_gettime_ns(clock)
                if _plausible(now, moved):
                    return moved, True
            return now, True
    return now, False


def _plausible(now: int, t_ns: int) -> bool:
    return -AHEAD_NS <= now - t_ns <= MAX_LAG_NS
