"""Kernel time stamps of packet-socket frames (``SO_TIMESTAMPNS``), always on the real-time clock.

A packet socket hands over ``skb->tstamp`` as if it were the real time, but a forwarded skb can
keep a time stamp on another clock -- its delivery time, on CLOCK_MONOTONIC or CLOCK_TAI (seen on
7.3 for a share of the RoCE frames crossing a lab's wires). ``real_ns`` keeps a stamp within
``SLACK_NS`` of the real time when the frame is read, moves one that fits the monotonic or TAI
clock onto the real-time clock by that clock's offset, and gives the read time for a frame without
a stamp or with one that fits no clock. The read time alone would not do: under TCG a capture
thread can read frames seconds after they crossed.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Iterable, Tuple

SO_TIMESTAMPNS = 35
SLACK_NS = 2_000_000_000
TIMESPEC = struct.Struct("qq")


def real_ns(anc: Iterable[Tuple[int, int, bytes]]) -> Tuple[int, bool]:
    """(the frame's time on CLOCK_REALTIME in ns, whether its stamp was on another clock or unusable)."""
    now = time.clock_gettime_ns(time.CLOCK_REALTIME)
    for level, kind, val in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(val) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack(val[:TIMESPEC.size])
            t_ns = sec * 1_000_000_000 + nsec
            if abs(now - t_ns) <= SLACK_NS:
                return t_ns, False
            for clock in (time.CLOCK_MONOTONIC, time.CLOCK_TAI):
                moved = t_ns + now - time.clock_gettime_ns(clock)
                if abs(now - moved) <= SLACK_NS:
                    return moved, True
            return now, True
    return now, False
