"""The agent's CPU priority (agent.priority): real-time while waiting and reacting, normal otherwise."""

from __future__ import annotations

import errno
import os

import pytest

from testbed.agent.priority import ENV, Priority


def test_the_default_is_realtime_and_the_env_can_say_normal(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert Priority.from_env().realtime
    monkeypatch.setenv(ENV, "normal")
    p = Priority.from_env()
    assert not p.realtime and p.describe() == f"normal ({ENV}=normal)"
    calls = []
    monkeypatch.setattr(os, "sched_setscheduler", lambda *a: calls.append(a))
    p.fast()
    p.normal()
    assert calls == []  # disabled: the scheduler is never asked


def test_fast_then_normal_switch_policies_once_each(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "sched_setscheduler", lambda pid, policy, param: calls.append((pid, policy,
                                                                                           param.sched_priority)))
    p = Priority()
    p.fast()
    p.fast()  # already real-time: no second call
    p.normal()
    p.normal()
    assert calls == [(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, 1), (0, os.SCHED_OTHER, 0)]
    assert p.describe() == "realtime (SCHED_FIFO 1) for reactions"


def test_a_refusal_leaves_normal_priority_and_says_why(monkeypatch):
    def refuse(*_a):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    p = Priority()
    p.fast()
    assert not p.realtime and p.describe() == "normal (the scheduler refused SCHED_FIFO: Operation not permitted)"
    p.fast()  # not asked again
    p.normal()


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs CAP_SYS_NICE")
def test_the_policy_really_changes_for_root():
    p = Priority()
    try:
        p.fast()
        assert os.sched_getscheduler(0) == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
        child = os.fork()
        if child == 0:  # a child starts at normal priority
            os._exit(0 if os.sched_getscheduler(0) == os.SCHED_OTHER else 1)
        assert os.waitpid(child, 0)[1] == 0
    finally:
        p.normal()
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
