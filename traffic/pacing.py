"""Sending on a schedule: sleep to just before each deadline, then spin to it, with a 1 us timer slack.

Public API:
    SPIN_NS                                   spin (rather than sleep) for the last 80 us before a deadline
    fine_timer_slack()                        context manager: this thread's timer slack 1 us, then back
    wait_until(target_ns) -> now_ns           CLOCK_MONOTONIC deadline; returns the clock it read last
    start_at(start_ns)                        wait for a start time chosen by the caller (no spin)
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from typing import Iterator

SPIN_NS = 80_000
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
