"""The engine's one send loop (traffic.pacing.run_schedule), with lanes whose send is a list."""

from __future__ import annotations

import errno
import time

import pytest

from traffic.pacing import Lane, run_schedule


def stamp(seq: int, tx_ns: int) -> tuple:
    return seq, tx_ns


def test_paced_lanes_interleave_tick_by_tick_on_schedule():
    a, b = [], []
    t0 = time.monotonic_ns() + 5_000_000
    sched = run_schedule([Lane(a.append, [stamp], first_seq=10), Lane(b.append, [stamp, stamp])],
                         count=20, rate_pps=1000.0, start_mono_ns=t0)
    assert sched.sent == 20 and [s for s, _ in a] == list(range(10, 30)) and [s for s, _ in b] == list(range(20))
    stamps = [t for pair in zip(a, b) for _, t in pair]
    assert stamps == sorted(stamps), "every frame is stamped at its own send, lane 0 before lane 1"
    assert sched.first_ns == a[0][1] and sched.last_ns == b[-1][1]
    # tick 19 is due 19 ms after the origin: the loop never sends before its deadline
    assert b[-1][1] - sched.start_ns >= 19_000_000
    assert sched.elapsed_s >= 0.019 and sched.refused == [0, 0]
    assert sched.stamps_ns is None, "stamps are kept only when asked (an unpaced sender sends millions)"


def test_recorded_stamps_are_each_frames_own_send_time_refused_ones_too():
    a = []

    def refusing(_buf):
        raise OSError(errno.ENOBUFS, "a dead path")

    sched = run_schedule([Lane(a.append, [stamp]), Lane(refusing, [stamp])], count=5, rate_pps=1000.0, record=True)
    assert sched.stamps_ns is not None and list(sched.stamps_ns[0]) == [t for _, t in a]
    assert len(sched.stamps_ns[1]) == 5 and sched.refused == [0, 5]
    assert all(t1 >= t0 for t0, t1 in zip(sched.stamps_ns[0], sched.stamps_ns[1])), "lane 1 goes after lane 0"


def test_a_refused_frame_is_counted_and_other_errors_raise():
    def full(_buf):
        raise OSError(errno.ENOBUFS, "no buffer space")

    sched = run_schedule([Lane(full, [stamp])], count=3, rate_pps=10_000.0)
    assert sched.sent == 3 and sched.refused == [3]

    def broken(_buf):
        raise OSError(errno.EINVAL, "bad")

    with pytest.raises(OSError):
        run_schedule([Lane(broken, [stamp])], count=1)


def test_unpaced_runs_for_its_duration_and_paced_duration_means_rate_times_duration():
    out = []
    sched = run_schedule([Lane(out.append, [stamp])], duration_s=0.02)
    assert sched.sent == len(out) > 0 and sched.max_late_ns == 0 and sched.elapsed_s >= 0.02
    tick = [0]
    sched = run_schedule([Lane(out.append, [stamp])], duration_s=0.01, rate_pps=1000.0, tick=tick)
    assert sched.sent == 10 and tick[0] == 9
