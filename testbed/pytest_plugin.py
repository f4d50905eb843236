"""pytest plugin (entry point ``testbed``): labs as fixtures for CI on privileged runners.

::

    @pytest.mark.topology("topologies/active-backup.yaml")
    def test_vf_survives(lab):
        result = lab.traffic.failover(target="server:vf0", fail="server:pf0")
        assert result.lost == 0          # nothing lost beyond the bond's own failover window
        assert result.passed, result.verdict

Fixtures
--------
``lab`` (function scope)
    Builds the topology named by the test's ``@pytest.mark.topology(path, agent=True)`` marker under a
    unique lab name (``t<pid><n>``, so tests -- and pytest-xdist workers -- run in parallel), starts the
    offload agent (unless ``agent=False``), yields a ``testbed.lab.Lab``, and removes the lab afterwards
    -- also when the test failed or errored; teardown tolerates a lab that is already gone.  ``path`` is
    taken as given, else relative to the test file's directory, else to the rootdir.
``lab_factory`` (function scope)
    ``lab_factory(path, agent=True) -> Lab``: several labs in one test; all removed at teardown, the last
    built first.
``shared_lab`` (class scope)
    The lab of the class's (or, for test functions outside a class, the module's)
    ``@pytest.mark.topology``, built once for all its tests and removed after the last one -- a lab takes
    a minute to build in a TCG guest.  Tests that change it (fail a port, set an option) put it back.
    Results are attached to the test that produced them.

Order of checks: the marker, then the topology file (validated completely, so a bad file is reported
on any machine), then the machine: missing root or kernel features make the test **fail** with the fix
(run it in the VM lane: ``sudo testbed vm -- python -m pytest ...``); with
``--testbed-skip-unsupported`` they skip instead (an explicit opt-in).  ``--testbed-keep`` keeps the
labs of failed tests for inspection (remove them with ``testbed down``/``testbed clean``).

In the VM lane: under ``testbed vm --timeout`` (which tells the guest its deadline in
``TESTBED_VM_DEADLINE``), no test runs into the guest's end: a test that could overrun it gets a
shorter pytest-timeout deadline, and once too little time is left the remaining tests fail at once
with a message naming the fix, so the session still ends by itself and writes its results
(``--junitxml``) before the guest is killed.

Results: every verification run through ``lab.traffic`` appends its ``to_dict()`` to ``lab.results``;
the plugin attaches each to the test's report as a user property ``testbed.<kind>`` (JSON), which
``--junitxml`` writes as ``<property name="testbed.failover" value="{...}"/>``.  ``track(request, lab)``
registers a lab built some other way for the same teardown and reporting.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any, Dict, List, Optional

import pytest

from testbed.vm import DEADLINE_ENV  # (testbed.vm adds 3 small modules to pytest's own)

_counter = itertools.count()
LABS = pytest.StashKey[List[Any]]()
FAILED = pytest.StashKey[bool]()
SHARED = pytest.StashKey[List[Any]]()  # on the config: labs shared by several tests
REPORTED = pytest.StashKey[Dict[str, int]]()  # on the config: results of shared labs already attached
LATE = pytest.StashKey[str]()  # on an item: why it must not start (the lane's deadline)
LANE_RESERVE_S = 150.0  # kept after the last test: its labs' teardown, the results file, shutdown
LANE_MIN_TEST_S = 30.0  # a test that would get less is not started


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("testbed", "testbed labs")
    group.addoption("--testbed-skip-unsupported", action="store_true",
                    help="skip (instead of fail) lab tests when this machine lacks root or kernel features")
    group.addoption("--testbed-keep", action="store_true", help="keep the labs of failed tests")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "topology(path, agent=True): the topology file the `lab` fixture builds")


def unique_name() -> str:
    """A lab name no other test of this machine uses now: ``t`` + pid + counter in hex (<= 12 chars)."""
    return f"t{os.getpid():x}{next(_counter):x}"[:12]


def resolve_path(path: str, test_file: Optional[str], rootdir: Optional[str]) -> str:
    """``path`` as given if it exists, else relative to the test file's directory, else to the rootdir."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    for base in (os.path.dirname(test_file) if test_file else None, rootdir):
        if base and os.path.exists(os.path.join(base, path)):
            return os.path.join(base, path)
    return path  # the loader reports the missing file


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


def track(request: Any, lab: Any) -> Any:
    """Register ``lab`` with the test: removed at its teardown (the last registered first, also when the
    test failed), its ``results`` attached to the report."""
    labs = request.node.stash.get(LABS, None)
    if labs is None:
        labs = request.node.stash[LABS] = []
        request.addfinalizer(lambda: _remove(request, labs))
    labs.append(lab)
    return lab


def _remove(request: Any, labs: List[Any]) -> None:
    keep = request.config.getoption("--testbed-keep") and request.node.stash.get(FAILED, False)
    errors: List[BaseException] = []
    while labs:
        lab = labs.pop()
        if keep:
            print(f"testbed: keeping lab {lab.name} of failed test {request.node.nodeid}")
            continue
        try:
            lab.down()  # idempotent: a lab already gone is fine
        except Exception as exc:  # remove the others anyway, then report
            errors.append(exc)
    if errors:
        raise errors[0]


def attach_results(item: Any, labs: List[Any], seen: Optional[Dict[str, int]] = None) -> None:
    """Every result of every lab as a user property ``testbed.<kind>`` = JSON on the test item: the call
    and teardown reports carry it, and JUnit XML writes it (from the teardown report).  ``seen``: per lab
    name, how many of its results earlier tests already took (shared labs)."""
    for lab in labs:
        results = getattr(lab, "results", [])
        start = seen.get(lab.name, 0) if seen is not None else 0
        for res in results[start:]:
            item.user_properties.append((f"testbed.{res.get('kind', 'result')}", json.dumps(res, default=str)))
        if seen is not None:
            seen[lab.name] = len(results)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any):
    if call.when == "call":  # before the reports copy item.user_properties
        attach_results(item, item.stash.get(LABS, []))
        attach_results(item, item.config.stash.get(SHARED, []), item.config.stash.setdefault(REPORTED, {}))
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[FAILED] = report.failed


def lane_budget(deadline: Optional[float], now: float, timeout: Optional[float]) -> Optional[float]:
    """Seconds the next test may take before the lane's ``deadline`` (Unix time) minus
    ``LANE_RESERVE_S``: None when that is no tighter than its own ``timeout`` (or there is no
    deadline), 0 when it is under ``LANE_MIN_TEST_S`` (the test must not start)."""
    if deadline is None:
        return None
    left = deadline - now - LANE_RESERVE_S
    if left < LANE_MIN_TEST_S:
        return 0.0
    if timeout and timeout > 0 and timeout <= left:
        return None
    return float(int(left))


def _lane_deadline() -> Optional[float]:
    try:
        return float(os.environ[DEADLINE_ENV])
    except (KeyError, ValueError):
        return None


def _own_timeout(item: Any) -> Optional[float]:
    """The test's pytest-timeout deadline: its marker's, else the ini's (None: none, or no plugin)."""
    marker = item.get_closest_marker("timeout")
    try:
        own = marker.args[0] if marker is not None and marker.args else item.config.getini("timeout")
        return float(own)
    except (TypeError, ValueError):
        return None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: Any, nextitem: Any):
    """Outside pytest-timeout's own wrapper: shorten the test's deadline, or mark it late."""
    deadline = _lane_deadline()
    if deadline is not None:
        budget = lane_budget(deadline, time.time(), _own_timeout(item))
        if budget == 0:
            item.stash[LATE] = (f"not run: the guest's --timeout ends in {max(deadline - time.time(), 0):.0f} s "
                                f"and {LANE_RESERVE_S:.0f} s of it are kept for the teardown and the results "
                                "(fix: raise `testbed vm --timeout`; in tools/test, TESTBED_BUDGET or "
                                "TESTBED_VM_TIMEOUT)")
        elif budget is not None:
            item.add_marker(pytest.mark.timeout(budget), append=False)
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: Any) -> None:
    late = item.stash.get(LATE, None)
    if late:
        pytest.fail(late, pytrace=False)


@pytest.fixture
def lab_factory(request: Any):
    """Build labs from topology files; every one is removed at teardown (also when the test failed)."""
    from testbed import loader
    from testbed.lab import Lab

    checked: List[bool] = []
    test_file = str(getattr(request.node, "fspath", "") or "") or None
    rootdir = str(request.config.rootpath)

    def make(path: str, agent: bool = True) -> Any:
        path = resolve_path(path, test_file, rootdir)
        name = unique_name()
        loader.load(path, lab_name=name)  # a bad file fails here, on any machine, before anything is built
        if not checked:
            _unsupported(request.config)
            checked.append(True)
        return track(request, Lab.up(path, name=name, agent=agent))

    return make


@pytest.fixture
def lab(request: Any, lab_factory: Any):
    """The lab of the test's ``@pytest.mark.topology(path, agent=True)``."""
    marker = request.node.get_closest_marker("topology")
    if marker is None or not marker.args:
        pytest.fail("the `lab` fixture needs @pytest.mark.topology('path/to/topology.yaml')", pytrace=False)
    return lab_factory(marker.args[0], agent=marker.kwargs.get("agent", True))


@pytest.fixture(scope="class")
def shared_lab(request: Any):
    """The lab of the class's (or module's) ``@pytest.mark.topology``, shared by its tests."""
    from testbed import loader
    from testbed.lab import Lab

    marker = request.node.get_closest_marker("topology")
    if marker is None or not marker.args:
        pytest.fail("the `shared_lab` fixture needs @pytest.mark.topology('path/to/topology.yaml') on the "
                    "class (or the module: pytestmark)", pytrace=False)
    test_file = str(getattr(request.node, "fspath", "") or "") or None
    path = resolve_path(marker.args[0], test_file, str(request.config.rootpath))
    name = unique_name()
    loader.load(path, lab_name=name)
    _unsupported(request.config)
    lab = Lab.up(path, name=name, agent=marker.kwargs.get("agent", True))
    shared = request.config.stash.setdefault(SHARED, [])
    shared.append(lab)
    try:
        yield lab
    finally:
        shared.remove(lab)
        if request.config.getoption("--testbed-keep") and request.session.testsfailed:
            print(f"testbed: keeping lab {lab.name} (tests failed)")
        else:
            lab.down()
