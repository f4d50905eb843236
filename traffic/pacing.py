"""Sending on a schedule: the one send loop of the engine (``run_schedule``), paced by sleeping to just before
each deadline and spinning to it, with a 1 us timer slack.

``run_schedule(lanes, ...)`` sends packet ``k`` of every lane at tick ``k``: paced (``rate_pps``), tick ``k``
is due at ``start + k / rate`` and a late loop catches up at once (the schedule, not the previous send, sets
the rate); unpaced, as fast as the device takes them until ``count`` or ``duration_s``. Each frame is
stamped with its sequence number and the CLOCK_REALTIME of its own send. A frame the device refuses
(ENOBUFS: a bond with no usable port; ENETDOWN: the interface is down) is counted, not retried.

Public API:
    Lane(send, stamps, first_seq=0)           one stream: a socket's send, frame builders stamp(seq, tx_ns)
    Schedule(sent, start_ns, first_ns, last_ns, elapsed_s, max_late_ns, refused, stamps_ns)   what it did
    run_schedule(lanes, *, count=None, duration_s=None, rate_pps=None, start_mono_ns=None, tick=None,
                 record=False)
    realtime_offset_ns() -> int               CLOCK_REALTIME - CLOCK_MONOTONIC, read tightly
    STREAM_RATE_PPS, FRAME_BUDGET_PPS; stream_rate(streams) -> pps   the default rate per stream of N streams
    SPIN_NS                                   spin (rather than sleep) for the last 80 us before a deadline
    fine_timer_slack()                        context manager: this thread's timer slack 1 us, then back
    wait_until(target_ns) -> now_ns           CLOCK_MONOTONIC deadline; returns the clock it read last
    start_at(start_ns)                        wait for a start time chosen by the caller (no spin)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import math
import time
from array import array
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence

SPIN_NS = 80_000
STREAM_RATE_PPS = 100.0  # packets/s per stream of a failover/rdma verification: the default of every front end
# frames/s all streams of a verification send together by default (each is also captured at its destination and
# on the wire, in Python): what the 2-CPU TCG guest sustains with room left for the agent -- 4 streams x 100 pps, the
# single-VF default, always kept its schedule; asked for 2,000 (64 VFs x 2 + the bond's 2 at 15.3 pps) in the
# 256-VF lab it managed ~450 and fell 3.5-18 s behind. See stream_rate
FRAME_BUDGET_PPS = 400.0
REFUSED = (errno.ENOBUFS, errno.EAGAIN, errno.ENETDOWN)  # a dead path: counted, not raised
PR_SET_TIMERSLACK = 29
PR_GET_TIMERSLACK = 30
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def fine_timer_slack() -> Iterator[None]:
    """The default 50 us timer slack would make every paced sleep end late; 1 us keeps them close."""
    old = _libc.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)
    _libc.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    try:
        yield
    finally:
        if old > 0:
            _libc.prctl(PR_SET_TIMERSLACK, old, 0, 0, 0)


def wait_until(target: int, mono=time.monotonic_ns, sleep=time.sleep) -> int:
    """Block until CLOCK_MONOTONIC reaches ``target`` (ns): sleep to SPIN_NS before it, then spin."""
    now = mono()
    if now < target:
        if target - now > SPIN_NS:
            sleep((target - now - SPIN_NS) / 1e9)  # poll: pacing loop
            now = mono()
        while now < target:  # poll: spin to the deadline
            sleep(0)  # lets other threads (receivers, an event injector) take the GIL
            now = mono()
    return now


def start_at(start_ns: int) -> None:
    """Wait for a start time the caller chose (a deadline shared by several senders)."""
    wait = start_ns - time.monotonic_ns()
    if wait > 0:
        time.sleep(wait / 1e9)  # poll: one deadline, not a fixed delay


def realtime_offset_ns(tries: int = 5) -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, from the tightest of a few bracketed readings
    (a thread preempted between two clock reads would otherwise skew every stamp)."""
    best = None
    for _ in range(tries):
        m1 = time.monotonic_ns()
        rt = time.time_ns()
        m2 = time.monotonic_ns()
        if best is None or m2 - m1 < best[0]:
            best = (m2 - m1, rt - (m1 + m2) // 2)
    assert best is not None
    return best[1]


def stream_rate(streams: int) -> float:
    """The default packets/s per stream when ``streams`` run on one schedule: ``STREAM_RATE_PPS``, lowered
    (to 0.1 pps) so that together they send at most ``FRAME_BUDGET_PPS``."""
    return min(STREAM_RATE_PPS, max(0.1, math.floor(10 * FRAME_BUDGET_PPS / max(1, streams)) / 10))


@dataclass(frozen=True)
class Lane:
    """One stream of a schedule: where its frames go and how each is built (``stamp(seq, tx_ns) -> bytes``)."""

    send: Callable[[Any], Any]
    stamps: Sequence[Callable[[int, int], Any]]
    first_seq: int = 0


@dataclass(frozen=True)
class Schedule:
    sent: int  # ticks run (packets per lane)
    start_ns: int  # CLOCK_REALTIME origin: tick k was due at start + k / rate
    first_ns: int  # CLOCK_REALTIME stamp of the first frame
    last_ns: int  # ... of the last frame
    elapsed_s: float
    max_late_ns: int  # worst lateness against the schedule (0 unpaced)
    refused: List[int]  # per lane: frames the device refused
    stamps_ns: Optional[List[array]] = None  # per lane, with ``record``: tick k's stamp (CLOCK_REALTIME) at [k]


def run_schedule(lanes: Sequence[Lane], *, count: Optional[int] = None, duration_s: Optional[float] = None,
                 rate_pps: Optional[float] = None, start_mono_ns: Optional[int] = None,
                 tick: Optional[List[int]] = None, record: bool = False) -> Schedule:
    """Tick k: stamp and send packet k of every lane (see the module docstring). ``tick[0]`` follows k (for a
    progress reporter on another thread). Paced with only ``duration_s``: ``ceil(rate * duration)`` ticks.
    ``record``: keep every frame's stamp (``Schedule.stamps_ns``), the send time of what never arrives too --
    with many lanes a tick's frames go out tens of ms apart, so a lost frame's time is its own, not its tick's."""
    if rate_pps is not None and count is None:
        count = max(1, math.ceil(rate_pps * (duration_s or 0)))
    plan = [(ln.send, ln.stamps, len(ln.stamps), ln.first_seq, j) for j, ln in enumerate(lanes)]
    refused = [0] * len(plan)
    stamps_ns = [array("q") for _ in plan] if record else None
    mono = time.monotonic_ns
    max_late = 0
    with fine_timer_slack():
        off = realtime_offset_ns()
        if rate_pps is None and start_mono_ns is not None:
            start_at(start_mono_ns)
        start = start_mono_ns if rate_pps is not None and start_mono_ns is not None else mono()
        end = start + int(duration_s * 1e9) if rate_pps is None and duration_s is not None else None
        interval = 1e9 / rate_pps if rate_pps else 0.0
        first = last = start + off
        k = 0
        while (count is None or k < count) and (end is None or mono() < end):
            if rate_pps:
                target = start + int(k * interval)
                now = wait_until(target)
                max_late = max(max_late, now - target)
            if tick is not None:
                tick[0] = k
            for send, stamps, n, first_seq, j in plan:
                last = mono() + off  # each frame its own stamp: another thread may run between two sends
                if stamps_ns is not None:
                    stamps_ns[j].append(last)
                try:
                    send(stamps[k % n](first_seq + k, last))
                except OSError as exc:
                    if exc.errno not in REFUSED:
                        raise
                    refused[j] += 1
                if k == 0 and j == 0:
                    first = last
            k += 1
        elapsed = (mono() - start) / 1e9
    return Schedule(k, start + off, first, last, elapsed, max_late, refused, stamps_ns)
