"""Test-session policy.

* An integration test never skips for want of root or kernel features: it
  fails with the fix (run it in the VM lane). A skipped integration test is not
  a passing one.
* ``--require-integration``: the session fails unless at least one
  integration test ran and passed (CI uses it so "0 integration tests" is red).
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--require-integration", action="store_true",
                     help="fail the session when no integration test passed")


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


def pytest_runtest_setup(item):
    if item.get_closest_marker("integration"):
        problem = _caps_problem()
        if problem:
            pytest.fail(f"integration test cannot run here ({problem}); run it in the VM lane: "
                        "`sudo testbed vm -- python -m pytest -m integration tests/integration`", pytrace=False)


_PASSED_INTEGRATION = []


def pytest_runtest_logreport(report):
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
