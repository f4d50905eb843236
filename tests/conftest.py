"""Test-session policy.

* An integration test never skips for want of root or kernel features: it
  fails with the fix (run it in the VM lane). A skipped integration test is not
  a passing one.
* ``--require-integration``: the session fails unless at least one
  integration test ran and passed (CI uses it so "0 integration tests" is red).
* ``--live-failures``: each failure is named the moment it happens (test, phase, time
  taken, first line of the error), not only in the summary at the end -- a run that
  never reaches its end (a guest killed at its deadline) still tells what failed.
* ``@pytest.mark.needs(FEATURE, ...)`` (features of ``testbed.kfeatures.FEATURES``):
  skipped on a kernel that lacks one, the reason naming the feature, this kernel and
  the kernel needed.  The kernel matrix (``tools/test``, ``testbed.matrix``) fails a
  test that passed on no kernel of the run, so such a skip is only allowed when another
  kernel of the run passes it.  An unknown feature name fails the test.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--require-integration", action="store_true",
                     help="fail the session when no integration test passed")
    parser.addoption("--live-failures", action="store_true",
                     help="name each failure when it happens (test, phase, seconds, first error line)")


_LIVE = []  # the config, with --live-failures


def pytest_configure(config):
    if config.getoption("--live-failures"):
        _LIVE.append(config)


def live_failure_line(report):
    """One line for a failed report: ``FAILED nodeid (phase, N s): first line of the error``, then
    the first failed checks of a verification's verdict (its ``FAIL <check>`` lines), `` | ``-joined."""
    text = str(report.longrepr or "").strip().splitlines()
    errors = [ln.strip()[1:].strip() for ln in text if ln.strip().startswith("E ")]
    first = errors[0] if errors else (text[-1].strip() if text else "")
    checks = [e for e in errors[1:] if e.startswith("FAIL ")][:3]
    what = " | ".join([first[:300]] + [c[:200] for c in checks])
    return f"FAILED {report.nodeid} ({report.when}, {report.duration:.0f} s): {what}"


_CAPS_PROBLEM = None


def _caps_problem():
    global _CAPS_PROBLEM
    if _CAPS_PROBLEM is None:
        from testbed import caps

        if os.geteuid() != 0:
            _CAPS_PROBLEM = "not root"
        else:
            missing = [c for c in caps.check() if not c.ok]
            _CAPS_PROBLEM = "; ".join(f"{c.name}: {c.detail}" for c in missing)
            if not missing:
                caps.ensure_modules()
    return _CAPS_PROBLEM


def needs_problem(features, has=None, release=None):
    """Why a test marked ``needs(*features)`` cannot run on this kernel, or None;
    ``(unknown features, reason)`` so an unknown name fails instead of skipping."""
    from testbed import kfeatures

    unknown = [f for f in features if f not in kfeatures.FEATURES]
    if unknown:
        return unknown, (f"@pytest.mark.needs: unknown kernel feature(s) {', '.join(unknown)}; "
                         f"one of: {', '.join(kfeatures.FEATURES)}")
    has = has or kfeatures.has
    release = release or kfeatures.running_release()
    lacking = [f for f in features if not has(f)]
    if not lacking:
        return None
    return [], "; ".join(f"needs {f} ({kfeatures.FEATURES[f]}), which kernel {release} lacks: "
                         f"{kfeatures.needed_kernel(f)}" for f in lacking)


def pytest_runtest_setup(item):
    features = [f for mark in item.iter_markers("needs") for f in mark.args]
    if features:
        problem = needs_problem(features)
        if problem:
            unknown, reason = problem
            if unknown:
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
    if item.get_closest_marker("integration"):
        problem = _caps_problem()
        if problem:
            pytest.fail(f"integration test cannot run here ({problem}); run it in the VM lane: "
                        "`testbed vm -- python -m pytest -m integration tests/integration` (as root), "
                        "or `tools/test`", pytrace=False)


_PASSED_INTEGRATION = []


def pytest_runtest_logreport(report):
    tr = _LIVE[0].pluginmanager.get_plugin("terminalreporter") if _LIVE and report.failed else None
    if tr:
        tr.write_line("")
        tr.write_line(live_failure_line(report))
    if report.when == "call" and report.passed and "integration" in report.keywords:
        _PASSED_INTEGRATION.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if session.config.getoption("--require-integration"):
        n = len(_PASSED_INTEGRATION)
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr:
            tr.write_line(f"integration tests passed in a kernel with bonding and flower: {n}")
        if n == 0:
            session.exitstatus = 1
