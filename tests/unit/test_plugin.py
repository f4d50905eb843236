"""The pytest plugin, driven by pytester: markers, options, early errors, JUnit properties, teardown order.

No lab is built here (no root or bonding needed): labs are registered with ``track()`` as plain
objects that record what happened to them.
"""

from __future__ import annotations

import os
import re
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
