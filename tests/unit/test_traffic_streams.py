"""The stream runner's parts that need no kernel: event timing, argument checks."""

from __future__ import annotations

import time

import pytest

from testbed.errors import UsageError
from traffic.events import EventRunner
from traffic.streams import Station, StreamSpec, run_streams


def test_events_run_at_their_offsets_and_a_repair_waits_for_the_failure():
    calls = []

    def slow():
        calls.append(("fail", time.monotonic_ns()))
        time.sleep(0.15)  # a netlink call that takes long

    def quick():
        calls.append(("restore", time.monotonic_ns()))

    t0 = time.monotonic_ns() + 10_000_000
    ev = EventRunner([("restore", 0.05, quick, 0.1), ("fail", 0.0, slow)])
    ev.start(t0)
    ev.finish()
    assert [c[0] for c in calls] == ["fail", "restore"]
    fail_rec, restore_rec = ev.done
    assert fail_rec.end_ns - fail_rec.ns >= 150_000_000
    # due at 50 ms, but the failure's call ended at ~150 ms: + 100 ms gap
    assert restore_rec.ns - fail_rec.end_ns >= 95_000_000
    assert calls[0][1] >= t0


def test_an_event_that_raises_is_recorded_and_kept():
    def boom():
        raise OSError(5, "no")

    ev = EventRunner([("fail", 0.0, boom)])
    ev.start(time.monotonic_ns())
    ev.finish()
    assert ev.done[0].error and isinstance(ev.errors[0], OSError)


def test_bad_stream_sets_are_refused_before_any_socket():
    st = Station("x", "nons", "eth0", "02:00:00:00:00:01", "198.18.0.1")
    with pytest.raises(UsageError, match="no streams"):
        run_streams([], rate_pps=10, count=1)
    a = StreamSpec("a", 1, st, st, [object()])
    with pytest.raises(UsageError, match="distinct"):
        run_streams([a, StreamSpec("b", 1, st, st, [object()])], rate_pps=10, count=1)
    with pytest.raises(UsageError, match="positive"):
        run_streams([a], rate_pps=0, count=1)
