"""pytest plugin (entry point ``testbed``): labs as fixtures for CI on privileged runners.

::

    @pytest.mark.topology("topologies/active-backup.yaml")
    def test_vf_survives(lab):
        result = lab.traffic.failover(target="server:vf0", fail="server:pf0")
        assert result.lost == 0

Fixtures
--------
``lab`` (function scope)
    Builds the topology named by the test's ``@pytest.mark.topology(path, agent=True)`` marker under a unique lab
    name (``t<pid><n>``, so tests may run in parallel), starts the offload agent, yields a ``testbed.lab.Lab``,
    and removes the lab afterwards — also when the test failed or errored. Teardown tolerates a lab that is
    already gone. Verification results the test produced through ``lab.traffic`` are attached to the test
    report as user properties (``testbed.<kind>``: JSON), which JUnit XML output (``--junitxml``) includes.
``lab_factory`` (function scope)
    ``lab_factory(path, agent=True) -> Lab``: several labs in one test; all removed at teardown.

Missing kernel features or root make the test **fail** with the fix (run it in the VM lane); with
``--testbed-skip-unsupported`` they skip instead (an explicit opt-in). ``--testbed-keep`` keeps labs after
failing tests for inspection (remove with ``testbed down``/``testbed clean``).
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any, List

import pytest

_counter = itertools.count()


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("testbed", "testbed labs")
    group.addoption("--testbed-skip-unsupported", action="store_true",
                    help="skip (instead of fail) lab tests when this machine lacks root or kernel features")
    group.addoption("--testbed-keep", action="store_true", help="keep the labs of failed tests")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "topology(path, agent=True): the topology file the `lab` fixture builds")


def unique_name() -> str:
    return f"t{os.getpid():x}{next(_counter):x}"[:12]


def _unsupported(config: Any) -> None:
    from testbed import caps

    problems = [] if os.geteuid() == 0 else ["not root"]
    if not problems:
        problems = [f"{c.name}: {c.detail}" for c in caps.check() if not c.ok]
    if problems:
        msg = (f"testbed lab needs root and a kernel with bonding and flower ({'; '.join(problems)}); "
               "run the tests in the VM lane: `sudo testbed vm -- python -m pytest ...`")
        if config.getoption("--testbed-skip-unsupported"):
            pytest.skip(msg)
        pytest.fail(msg, pytrace=False)
    caps.ensure_modules()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item._testbed_failed = report.failed  # noqa: SLF001 - read by the fixture teardown
        for lab in getattr(item, "_testbed_labs", []):
            for res in lab.results:
                report.user_properties.append((f"testbed.{res.get('kind', 'result')}", json.dumps(res)))


@pytest.fixture
def lab_factory(request: Any):
    """Build labs from topology files; every one is removed at teardown."""
    from testbed.lab import Lab

    _unsupported(request.config)
    labs: List[Any] = []
    request.node._testbed_labs = labs  # noqa: SLF001

    def make(path: str, agent: bool = True) -> Any:
        lab = Lab.up(path, name=unique_name(), agent=agent)
        labs.append(lab)
        return lab

    yield make
    keep = request.config.getoption("--testbed-keep") and getattr(request.node, "_testbed_failed", False)
    for lab in reversed(labs):
        if keep:
            print(f"testbed: keeping lab {lab.name} of failed test {request.node.nodeid}")
            continue
        lab.down()  # idempotent: a lab already gone is fine


@pytest.fixture
def lab(request: Any, lab_factory: Any):
    """The lab of the test's ``@pytest.mark.topology(path)``."""
    marker = request.node.get_closest_marker("topology")
    if marker is None or not marker.args:
        pytest.fail("the `lab` fixture needs @pytest.mark.topology('path/to/topology.yaml')", pytrace=False)
    return lab_factory(marker.args[0], agent=marker.kwargs.get("agent", True))
