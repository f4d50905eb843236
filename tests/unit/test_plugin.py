"""The pytest plugin, driven by pytester: markers, options, early errors, JUnit properties, teardown order.

No lab is built here (no root or bonding needed): labs are registered with ``track()`` as plain
objects that record what happened to them.
"""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ET

from testbed import pytest_plugin

pytest_plugins = ["pytester"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BAD = os.path.join(ROOT, "tests", "unit", "bad_topologies", "06-bad-bond-mode.yaml")


def test_the_plugin_is_registered_by_entry_point(pytester):
    result = pytester.runpytest_subprocess("--help")
    out = result.stdout.str()
    assert "--testbed-skip-unsupported" in out and "--testbed-keep" in out
    result = pytester.runpytest_subprocess("--markers")
    assert "topology(path, agent=True)" in result.stdout.str()


def test_lab_without_a_marker_fails_with_the_fix(pytester):
    pytester.makepyfile("def test_x(lab):\n    pass\n")
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    assert "needs @pytest.mark.topology('path/to/topology.yaml')" in result.stdout.str()


def test_a_bad_topology_is_reported_before_the_machine_is_checked(pytester):
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.topology({BAD!r})
        def test_x(lab):
            pass
    """)
    result = pytester.runpytest_inprocess("--testbed-skip-unsupported")
    result.assert_outcomes(errors=1)  # not skipped, even with the opt-in: the file is wrong everywhere
    assert "hosts.server.nic.bond.mode" in result.stdout.str()


def test_results_become_junit_properties_and_labs_are_removed_in_reverse(pytester):
    log = pytester.path / "downs.txt"
    pytester.makepyfile(f"""
        import pytest
        from testbed.pytest_plugin import track

        class FakeLab:
            def __init__(self, name):
                self.name = name
                self.results = []
            def down(self):
                with open({str(log)!r}, "a") as fh:
                    fh.write(self.name + "\\n")
                return []

        def test_reports(request):
            a = track(request, FakeLab("a"))
            b = track(request, FakeLab("b"))
            a.results.append({{"kind": "failover", "verdict": "PASS", "lost": 0}})
            b.results.append({{"kind": "hash", "verdict": "FAIL"}})
            assert False, "the labs must still be removed"

        def test_uses_factory(lab_factory, request):
            track(request, FakeLab("c"))
    """)
    xml = pytester.path / "junit.xml"
    result = pytester.runpytest_inprocess(f"--junitxml={xml}")
    result.assert_outcomes(failed=1, passed=1)
    props = {p.get("name"): p.get("value") for p in ET.parse(xml).iter("property")}
    assert props["testbed.failover"] == '{"kind": "failover", "verdict": "PASS", "lost": 0}'
    assert props["testbed.hash"] == '{"kind": "hash", "verdict": "FAIL"}'
    assert log.read_text().split() == ["b", "a", "c"]  # last built first; also after a failed test


def test_keep_leaves_the_labs_of_failed_tests(pytester):
    log = pytester.path / "downs.txt"
    pytester.makepyfile(f"""
        from testbed.pytest_plugin import track

        class FakeLab:
            name = "k"
            results = []
            def down(self):
                open({str(log)!r}, "a").write("down\\n")

        def test_fails(lab_factory, request):
            track(request, FakeLab())
            assert False
    """)
    result = pytester.runpytest_inprocess("--testbed-keep", "-s")
    result.assert_outcomes(failed=1)
    assert not log.exists()
    assert "testbed: keeping lab k" in result.stdout.str()


def test_unique_names_are_valid_lab_names():
    names = {pytest_plugin.unique_name() for _ in range(200)}
    assert len(names) == 200
    assert all(re.fullmatch(r"[a-z][a-z0-9]{0,11}", n) for n in names)


def test_topology_paths_resolve_from_the_test_file_then_the_rootdir(tmp_path):
    sub = tmp_path / "tests"
    sub.mkdir()
    (sub / "here.yaml").write_text("x")
    (tmp_path / "top.yaml").write_text("x")
    test_file = str(sub / "test_a.py")
    assert pytest_plugin.resolve_path("here.yaml", test_file, str(tmp_path)) == str(sub / "here.yaml")
    assert pytest_plugin.resolve_path("top.yaml", test_file, str(tmp_path)) == str(tmp_path / "top.yaml")
    assert pytest_plugin.resolve_path("missing.yaml", test_file, str(tmp_path)) == "missing.yaml"


def test_results_of_a_shared_lab_go_to_the_test_that_made_them():
    class Item:
        def __init__(self):
            self.user_properties = []

    class SharedLab:
        name = "s"
        results = [{"kind": "hash", "n": 1}]

    seen = {}
    first, second = Item(), Item()
    pytest_plugin.attach_results(first, [SharedLab], seen)
    SharedLab.results.append({"kind": "failover", "n": 2})
    pytest_plugin.attach_results(second, [SharedLab], seen)
    assert [name for name, _ in first.user_properties] == ["testbed.hash"]
    assert second.user_properties == [("testbed.failover", '{"kind": "failover", "n": 2}')]


def test_lane_budget_shortens_or_stops_tests_near_the_guests_deadline():
    budget = pytest_plugin.lane_budget
    assert budget(None, 1000.0, 300.0) is None  # not in the lane, or no --timeout
    assert budget(2000.0, 1000.0, 300.0) is None  # 850 s left: the test's own 300 s is tighter
    assert budget(1000.0 + 150 + 200.5, 1000.0, 300.0) == 200.0  # 200 s left: that is its deadline
    assert budget(1000.0 + 150 + 200, 1000.0, None) == 200.0  # no deadline of its own
    assert budget(1000.0 + 150 + 29, 1000.0, 300.0) == 0.0  # too little to start a test
    assert budget(900.0, 1000.0, 300.0) == 0.0  # already past it


def test_tests_after_the_lanes_deadline_fail_at_once_with_the_fix(pytester, monkeypatch):
    """The session ends by itself and writes its JUnit file: nothing started late runs."""
    log = pytester.path / "ran.txt"
    pytester.makepyfile(f"""
        import pytest

        @pytest.fixture(scope="module")
        def expensive():
            with open({str(log)!r}, "a") as fh:
                fh.write("fixture\\n")

        def test_a(expensive):
            pass

        def test_b(expensive):
            pass
    """)
    monkeypatch.setenv(pytest_plugin.DEADLINE_ENV, str(int(time.time()) + 100))  # < reserve + min
    xml = pytester.path / "junit.xml"
    result = pytester.runpytest_inprocess(f"--junitxml={xml}", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert "not run: the guest's --timeout ends in" in out and "TESTBED_VM_TIMEOUT" in out
    assert not log.exists()  # the module's fixture was never set up
    assert len(ET.parse(xml).getroot().iter("testcase").__next__().findall("error")) == 1


def test_a_test_near_the_lanes_deadline_gets_a_shorter_timeout(pytester, monkeypatch):
    pytester.makepyfile("""
        def test_deadline(request):
            marker = request.node.get_closest_marker("timeout")
            print("TIMEOUT", marker.args[0] if marker else None)
    """)
    pytester.makeini("[pytest]\ntimeout = 300\n")
    monkeypatch.setenv(pytest_plugin.DEADLINE_ENV, str(int(time.time()) + 150 + 120))
    result = pytester.runpytest_inprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    got = float(re.search(r"TIMEOUT (\S+)", result.stdout.str()).group(1))
    assert 100 <= got <= 120
