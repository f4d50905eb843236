"""run_in_netns without entering anything (no root needed) and its name checks."""

from __future__ import annotations

import threading

import pytest

from testbed.errors import UsageError
from traffic.netns import netns_path, run_in_netns


def test_runs_on_another_thread_and_returns() -> None:
    me = threading.get_ident()
    assert run_in_netns(None, lambda x, y=0: (threading.get_ident() != me, x + y), 2, y=3) == (True, 5)


def test_exceptions_reach_the_caller() -> None:
    def boom() -> None:
        raise KeyError("inner")

    with pytest.raises(KeyError, match="inner"):
        run_in_netns(None, boom)


def test_names() -> None:
    assert netns_path("lab-server") == "/run/netns/lab-server"
    for bad in ("", "a/b", "..", "."):
        with pytest.raises(UsageError):
            netns_path(bad)
    with pytest.raises(UsageError, match="no such namespace"):
        run_in_netns("tb-unit-no-such-ns", lambda: None)
