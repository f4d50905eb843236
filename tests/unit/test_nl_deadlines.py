"""Deadlines: every wait names what it waited for and how to raise it (TESTBED_TIMEOUT_SCALE)."""

from __future__ import annotations

import time

import pytest

from testbed import nl
from testbed.agent import events
from testbed.errors import UsageError, WaitTimeout


def test_timeout_names_what_and_how_to_raise_it(monkeypatch):
    monkeypatch.delenv(nl.TIMEOUT_SCALE_ENV, raising=False)
    with pytest.raises(WaitTimeout) as info:
        nl.wait_until(lambda: False, 0.05, "the moon to rise", fix="look up")
    text = str(info.value)
    assert "the moon to rise" in text and "look up" in text and "TESTBED_TIMEOUT_SCALE=2" in text


def test_scale_multiplies_the_deadline(monkeypatch):
    monkeypatch.setenv(nl.TIMEOUT_SCALE_ENV, "4")
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        nl.wait_until(lambda: False, 0.05, "nothing")
    assert time.monotonic() - t0 >= 0.2
    assert "after 0.2s" in str(info.value) and "TESTBED_TIMEOUT_SCALE=8" in str(info.value)


@pytest.mark.parametrize("raw", ["0", "-1", "fast", "1e9", "nan"])
def test_bad_scale_is_a_usage_error(monkeypatch, raw):
    monkeypatch.setenv(nl.TIMEOUT_SCALE_ENV, raw)
    with pytest.raises(UsageError) as info:
        nl.wait_until(lambda: True, 1, "x")
    assert nl.TIMEOUT_SCALE_ENV in str(info.value)


def test_missing_namespace_is_refused_before_any_socket(tmp_path, monkeypatch):
    monkeypatch.setattr(nl, "NETNS_DIR", str(tmp_path))
    with pytest.raises(Exception) as info:
        nl.ns_socket("nosuchns", 16, 3, 0)
    assert "nosuchns" in str(info.value) and "does not exist" in str(info.value)


@pytest.mark.parametrize("raw,want", [("", events.RCVBUF), ("16384", 16384), ("x", events.RCVBUF),
                                      (str(events.RCVBUF * 2), events.RCVBUF)])
def test_agent_rcvbuf_override(monkeypatch, raw, want):
    monkeypatch.setenv(events.RCVBUF_ENV, raw)
    assert events.rcvbuf() == want
