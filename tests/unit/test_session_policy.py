"""The test suite's own session policy (tests/conftest.py), run by pytester on toy tests."""

from __future__ import annotations

import os

pytest_plugins = ["pytester"]
CONFTEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conftest.py")


def test_live_failures_names_each_failure_when_it_happens(pytester):
    with open(CONFTEST) as fh:
        pytester.makeconftest(fh.read())
    pytester.makepyfile("""
        def test_first():
            assert 1 + 1 == 3, "arithmetic broke"

        def test_second():
            pass
    """)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "--live-failures")
    result.assert_outcomes(failed=1, passed=1)
    lines = result.stdout.lines
    live = [i for i, ln in enumerate(lines) if ln.startswith("FAILED test_live_failures")
            and "(call, " in ln and "arithmetic broke" in ln]
    assert live, "\n".join(lines)
    summary = next(i for i, ln in enumerate(lines) if "short test summary" in ln or "FAILURES" in ln)
    assert live[0] < summary  # before the end-of-session report


def test_without_the_option_failures_wait_for_the_summary(pytester):
    with open(CONFTEST) as fh:
        pytester.makeconftest(fh.read())
    pytester.makepyfile("def test_first():\n    assert False\n")
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert not any("(call, " in ln for ln in result.stdout.lines)


def test_a_failed_verifications_checks_are_in_its_live_line(pytester):
    with open(CONFTEST) as fh:
        pytester.makeconftest(fh.read())
    pytester.makepyfile("""
        def test_verification():
            verdict = "\\n".join(["lab mv: fail server:pf0 at 1 s", "ok   bond rx: 0 (want 0)",
                                   "FAIL vf7 rx: lost beyond the bond's window: 2 (want 0)",
                                   "verdict: FAIL (1/2 checks)"])
            assert False, verdict
    """)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "--live-failures")
    live = [ln for ln in result.stdout.lines if ln.startswith("FAILED test_a_failed") and "(call, " in ln]
    assert live and live[0].endswith("lab mv: fail server:pf0 at 1 s | FAIL vf7 rx: lost beyond the bond's "
                                      "window: 2 (want 0)"), result.stdout.lines
