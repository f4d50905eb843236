"""The kernel matrix's verdict (testbed.matrix) and the ``needs`` marker's skips, on the host.

JUnit files are written here as pytest writes them; the marker is exercised by running a
small test file through pytest itself (pytester) with this project's conftest."""

from __future__ import annotations

from pathlib import Path

from testbed import kfeatures, matrix

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"


def junit(path: Path, cases) -> str:
    """Write a pytest-style JUnit file: cases are (id, status[, message])."""
    body = []
    for case in cases:
        test, status, message = (*case, "")[:3]
        classname, name = test.split("::")
        inner = {"passed": "", "failed": f'<failure message="{message}">trace</failure>',
                 "error": f'<error message="{message}">trace</error>',
                 "skipped": f'<skipped type="pytest.skip" message="{message}">x</skipped>'}[status]
        body.append(f'<testcase classname="{classname}" name="{name}" time="0.1">{inner}</testcase>')
    path.write_text('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">'
                    + "".join(body) + "</testsuite></testsuites>")
    return str(path)


LAB = "tests.integration.test_lab::test_up"
VERBS = "tests.integration.test_verbs::test_verbs_failover"


def runs(tmp_path, per_kernel):
    return [matrix.read_junit(junit(tmp_path / f"junit-{rel}.xml", cases), rel) for rel, cases in per_kernel.items()]


def test_a_skip_is_allowed_when_another_kernel_passes_the_test(tmp_path):
    kernels = runs(tmp_path, {
        "6.1.0-56-amd64": [(LAB, "passed"), (VERBS, "skipped", "needs rxe_netns")],
        "7.3.4+deb13-amd64": [(LAB, "passed"), (VERBS, "passed")],
    })
    assert matrix.judge(kernels) == []
    lines, ok = matrix.report(None, kernels)
    assert ok and lines[-1] == "3 passed, 0 failed, 1 skipped"


def test_a_test_skipped_everywhere_passed_on_no_kernel_and_fails_the_run(tmp_path):
    kernels = runs(tmp_path, {
        "6.1.0-56-amd64": [(LAB, "passed"), (VERBS, "skipped", "needs rxe_netns: Linux 7.1")],
        "6.12.117+deb12-amd64": [(LAB, "passed"), (VERBS, "skipped", "needs rxe_netns: Linux 7.1")],
    })
    problems = matrix.judge(kernels)
    assert problems == [f"passed on no kernel: {VERBS} (skipped: 6.1.0-56-amd64: needs rxe_netns: Linux 7.1; "
                        "6.12.117+deb12-amd64: needs rxe_netns: Linux 7.1)"]
    lines, ok = matrix.report(None, kernels)
    assert not ok and lines[-1] == "2 passed, 1 failed, 2 skipped"
    # one shard of a sharded matrix leaves that rule to the aggregation over all shards
    assert matrix.judge(kernels, shard=True) == []


def test_a_failure_or_error_on_any_kernel_fails_the_run(tmp_path):
    kernels = runs(tmp_path, {
        "6.1.0-56-amd64": [(LAB, "passed"), (VERBS, "error", "fixture broke")],
        "7.3.4+deb13-amd64": [(LAB, "failed", "boom"), (VERBS, "passed")],
    })
    assert matrix.judge(kernels) == [f"FAILED on 7.3.4+deb13-amd64: {LAB}", f"FAILED on 6.1.0-56-amd64: {VERBS}"]
    lines, ok = matrix.report(None, kernels)
    assert not ok and lines[-1] == "2 passed, 2 failed, 0 skipped"


def test_a_test_reported_twice_keeps_its_worst_outcome(tmp_path):
    path = junit(tmp_path / "junit-6.1.xml", [(LAB, "passed"), (LAB, "error", "teardown failed")])
    assert matrix.read_junit(path, "6.1").results == {LAB: "failed"}


def test_a_kernel_without_results_or_with_an_unexplained_exit_status_fails(tmp_path):
    ok_run = runs(tmp_path, {"7.3.4+deb13-amd64": [(LAB, "passed")]})
    dead = matrix.read_junit(str(tmp_path / "junit-6.12.xml"), "6.12")
    assert "was not written" in dead.problem
    empty = matrix.read_junit(junit(tmp_path / "junit-6.1.xml", []), "6.1")
    assert "no test ran" in empty.problem
    lines, ok = matrix.report(None, ok_run + [dead, empty])
    assert not ok and lines[-1] == "1 passed, 2 failed, 0 skipped"
    matrix.apply_statuses(ok_run, {"7.3.4+deb13-amd64": 1})
    assert "exited with status 1" in ok_run[0].problem
    (tmp_path / "junit-bad.xml").write_text("<testsuites><testcase")
    assert "unreadable" in matrix.read_junit(str(tmp_path / "junit-bad.xml"), "bad").problem


def test_judge_cli_prints_the_table_and_the_summary_line_last(tmp_path, capsys):
    unit = junit(tmp_path / "junit-unit.xml", [("tests.unit.test_a::test_x", "passed"),
                                               ("tests.unit.test_a::test_y", "skipped", "no")])
    k61 = junit(tmp_path / "junit-6.1.0-56-amd64.xml", [(LAB, "passed"), (VERBS, "skipped", "needs rxe_netns")])
    k73 = junit(tmp_path / "junit-7.3.4+deb13-amd64.xml", [(LAB, "passed"), (VERBS, "passed")])
    assert matrix.main(["judge", "--unit", unit, "--status", "unit=0", "--status", "6.1.0-56-amd64=0",
                        k61, k73]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "4 passed, 0 failed, 2 skipped"
    assert any(line.split()[:4] == ["6.1.0-56-amd64", "1", "0", "1"] for line in out)
    missing = str(tmp_path / "junit-6.12.117+deb12-amd64.xml")
    assert matrix.main(["judge", "--unit", unit, k61, missing, "--status", "6.12.117+deb12-amd64=9"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "2 passed, 2 failed, 2 skipped"  # no results + passed on no kernel
    assert matrix.main(["judge", str(tmp_path / "results.xml")]) == 2  # not junit-<release>.xml
    assert "junit-<release>.xml" in capsys.readouterr().err


def test_select_kernels_resolves_versions_once_each(monkeypatch):
    from testbed import vm

    monkeypatch.setattr(vm, "resolve_kernel", lambda spec: vm.Kernel(f"/boot/vmlinuz-{spec}.0-1", f"{spec}.0-1"))
    assert matrix.select_kernels(["6.1", "7.3", "6.1"]) == [("6.1.0-1", "/boot/vmlinuz-6.1.0-1"),
                                                            ("7.3.0-1", "/boot/vmlinuz-7.3.0-1")]


# ---- @pytest.mark.needs ------------------------------------------------------------------


def test_needs_marker_skips_with_the_feature_and_kernel_needed(pytester, monkeypatch):
    monkeypatch.setattr(kfeatures, "has", lambda feature, *a, **k: feature != "rxe_netns")
    monkeypatch.setattr(kfeatures, "running_release", lambda: "6.1.0-56-amd64")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    needs(feature): kernel features\n")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.needs("rxe_netns")
        def test_verbs():
            pass

        @pytest.mark.needs("bonding", "flower_hash")
        def test_hash():
            pass

        @pytest.mark.needs("rxe_nets")
        def test_typo():
            pass
    """)
    result = pytester.runpytest_inprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1, errors=1)
    result.stdout.fnmatch_lines([
        "*unknown kernel feature(s) rxe_nets; one of: bonding*",
        "*needs rxe_netns (Soft-RoCE inside a network namespace (Linux 7.1+)), which kernel 6.1.0-56-amd64 "
        "lacks: Linux 7.1 or newer (in the VM lane: `testbed vm --kernel 7.3`)*",
    ])


def test_pytest_args_split_like_a_shell_and_refuse_bad_quoting(monkeypatch, capsys):
    assert matrix.pytest_args("-k 'test_lab or test_demo' --maxfail=1") == ["-k", "test_lab or test_demo",
                                                                            "--maxfail=1"]
    assert matrix.pytest_args("") == []
    assert matrix.pytest_args("-k $(reboot)") == ["-k", "$(reboot)"]  # never evaluated
    monkeypatch.setenv("TESTBED_PYTEST_ARGS", "-k 'unclosed")
    assert matrix.main(["pytest-args"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TESTBED_PYTEST_ARGS: No closing quotation" in err[0]


def test_a_kernel_whose_guest_died_once_is_judged_by_its_second_run_and_named(tmp_path, capsys):
    k73 = junit(tmp_path / "junit-7.3.4+deb13-amd64.xml", [(LAB, "passed"), (VERBS, "passed")])
    assert matrix.main(["judge", "--died", "7.3.4+deb13-amd64", "--status", "7.3.4+deb13-amd64=0", k73]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "2 passed, 0 failed, 0 skipped"
    assert any(line.startswith("note: 7.3.4+deb13-amd64: the guest died in the first run")
               and "out/console-7.3.4+deb13-amd64.died.log" in line for line in out)
    # a second death is the run's status 255, which no failed test explains: the run fails
    missing = str(tmp_path / "junit-6.12.117+deb12-amd64.xml")
    assert matrix.main(["judge", "--died", "6.12.117+deb12-amd64",
                        "--status", "6.12.117+deb12-amd64=255", missing]) == 1
