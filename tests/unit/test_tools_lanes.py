"""tools/test's kernel lanes: guests side by side (TESTBED_LANES at a time), a dead guest re-run once,
every kernel's status handed to the judge. Run for real against a stand-in ``.venv/bin/python``
that plays pytest, ``testbed.matrix`` and ``testbed vm`` (each guest: a short sleep, a status read
from a script per kernel) in a copy of tools/."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

FAKE_PYTHON = r"""#!/bin/bash
d=$(dirname "$0")/../..
case "$1 $2" in
  "-m pytest")
    for a; do case $a in --junitxml=*) echo '<testsuite/>' >"${a#--junitxml=}";; esac; done
    exit 0;;
  "-m testbed.matrix")
    case $3 in
      kernels) printf '7.3\t/img/7.3\n6.12\t/img/6.12\n6.1\t/img/6.1\n';;
      judge) shift 3; echo "JUDGE $*";;
    esac
    exit 0;;
  "-m testbed")
    rel=$(basename "$5")
    marks=$(printf "%s\n" "$@" | grep -x "integration.*" | tr " " _)
    echo "$rel start $(date +%s%N) $marks" >>"$d/fake.log"
    echo "$rel $7" >>"$d/timeouts.log"
    sleep 0.6
    echo "$rel end $(date +%s%N)" >>"$d/fake.log"
    st=$(head -n 1 "$d/plan-$rel"); sed -i 1d "$d/plan-$rel"
    echo "guest $rel says $st"
    exit "$st";;
esac
exit 99
"""


@pytest.fixture
def repo(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("tools/test re-runs itself through sudo when not root")
    shutil.copytree(ROOT / "tools", tmp_path / "tools")
    py = tmp_path / ".venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(FAKE_PYTHON)
    py.chmod(0o755)
    return tmp_path


def run_tools_test(repo: Path, lanes=None, **more: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": "/", **more}
    if lanes is not None:
        env["TESTBED_LANES"] = str(lanes)
    return subprocess.run([str(repo / "tools" / "test")], capture_output=True, text=True, env=env, timeout=60,
                          cwd=repo)


def run(repo: Path, plans, lanes=None, **env: str):
    for rel, statuses in plans.items():
        (repo / f"plan-{rel}").write_text("".join(f"{s}\n" for s in statuses))
    res = run_tools_test(repo, lanes, **env)
    log = [line.split() for line in (repo / "fake.log").read_text().splitlines()]
    return res, log


def most_at_once(log) -> int:
    events = sorted((int(t), 1 if what == "start" else -1) for _rel, what, t, *_ in log)
    now = peak = 0
    for _t, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_two_lanes_run_guests_side_by_side_and_hand_every_status_to_the_judge(repo):
    res, log = run(repo, {"7.3": [1], "6.12": [255, 0], "6.1": [0]}, lanes=2)
    assert res.returncode == 0, res.stderr
    judge = next(line for line in res.stdout.splitlines() if line.startswith("JUDGE"))
    assert "--status 7.3=1" in judge and "--status 6.1=0" in judge
    assert "--died 6.12 --status 6.12=0" in judge  # the dead guest was booted once more
    assert "out/junit-7.3.xml out/junit-6.12.xml out/junit-6.1.xml" in judge
    assert most_at_once(log) == 2
    assert sorted(r for r, what, *_ in log if what == "start") == ["6.1", "6.12", "6.12", "7.3"]
    marks = {r: m for r, what, _t, *m in log if what == "start"}
    assert marks["6.1"] == ["integration"], "the last kernel of the matrix runs the soak tests too"
    assert marks["7.3"] == ["integration_and_not_soak"]
    assert "guest 7.3 says 1" in res.stderr and "==== 6.12 (out/test-6.12.log)" in res.stderr
    assert (repo / "out" / "test-6.12.log").read_text().count("the guest died") == 1


def test_by_default_one_guest_runs_at_a_time(repo):
    res, log = run(repo, {"7.3": [0], "6.12": [0], "6.1": [0]})
    assert res.returncode == 0, res.stderr
    assert most_at_once(log) == 1
    assert "guest 6.12 says 0" in res.stderr and "====" not in res.stderr  # streamed live, not replayed


def test_a_bad_lane_count_is_refused(repo):
    res = run_tools_test(repo, "two")
    assert res.returncode == 2 and "TESTBED_LANES=two" in res.stderr


def guest_timeouts(repo: Path):
    return dict(line.split() for line in (repo / "timeouts.log").read_text().splitlines())


def test_each_guest_gets_what_is_left_of_the_budget_less_a_share_per_kernel_to_come(repo):
    res, _log = run(repo, {"7.3": [0], "6.12": [0], "6.1": [0]}, TESTBED_BUDGET="3000", TESTBED_VM_SHARE="1000")
    assert res.returncode == 0, res.stderr
    got = {rel: int(t) for rel, t in guest_timeouts(repo).items()}
    assert 990 <= got["7.3"] <= 1000  # two kernels still to come
    assert 1990 <= got["6.12"] <= 2000  # the time 7.3 did not need goes to those after it
    assert 2990 <= got["6.1"] <= 3000
    res, _log = run(repo, {"7.3": [0], "6.12": [0], "6.1": [0]}, TESTBED_BUDGET="1000")
    assert set(guest_timeouts(repo).values()) >= {"900"}  # never under 900 s


def test_a_fixed_guest_limit_and_bad_budgets(repo):
    res, _log = run(repo, {"7.3": [0], "6.12": [0], "6.1": [0]}, TESTBED_VM_TIMEOUT="1234")
    assert res.returncode == 0, res.stderr
    assert set(guest_timeouts(repo).values()) == {"1234"}
    res = run_tools_test(repo, TESTBED_BUDGET="85m")
    assert res.returncode == 2 and "not '85m'" in res.stderr
