"""tools/setup, tools/test and tools/demo run as root: directly when root, through sudo (with
the TESTBED_* and CI variables handed over) when not, and refuse with exit 4 when neither.

Each script is run for real as an unprivileged user (``nobody`` through setpriv when these
tests run as root) with a PATH holding only the few tools the scripts need before they
re-execute, plus, for the sudo case, a stand-in ``sudo`` that records how it was called."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
NOBODY = 65534
BASICS = ("bash", "id", "readlink", "basename", "dirname", "cat", "env")


@pytest.fixture
def bindir():
    """A world-readable directory of symlinks to BASICS (no sudo), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="testbed-tools-"))
    path.chmod(0o755)
    for name in BASICS:
        (path / name).symlink_to(shutil.which(name))
    yield path
    shutil.rmtree(path)


def run_unprivileged(argv, path: Path, env=None):
    prefix = []
    if os.geteuid() == 0:
        prefix = [shutil.which("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    full_env = {"PATH": str(path), "HOME": "/", **(env or {})}
    return subprocess.run(prefix + argv, capture_output=True, text=True, env=full_env, timeout=60, cwd="/")


@pytest.mark.parametrize("tool", ["setup", "test", "demo"])
def test_refuses_without_root_or_sudo(bindir, tool):
    res = run_unprivileged([str(ROOT / "tools" / tool)], bindir)
    assert res.returncode == 4, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"tools/{tool}: needs root, and sudo is not installed: run it as root (e.g. `su -c {ROOT}/tools/{tool}`)"]


@pytest.mark.parametrize("tool", ["setup", "test", "demo"])
def test_reexecs_through_sudo_keeping_testbed_and_ci_variables(bindir, tool):
    record = bindir / "sudo.args"
    (bindir / "sudo").write_text(f'#!{shutil.which("bash")}\nprintf "%s\\n" "$@" > {record}\n')
    (bindir / "sudo").chmod(0o755)
    bindir.chmod(0o777)  # the stand-in sudo, running as nobody, writes its record here
    env = {"TESTBED_KERNELS": "6.1 7.3", "CI": "true", "SECRET": "not passed", "TESTBED_PYTEST_ARGS": "-k lab"}
    res = run_unprivileged([str(ROOT / "tools" / tool), "--flag", "two words"], bindir, env)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == f"tools/{tool}: not root: re-running through sudo"
    args = record.read_text().splitlines()
    assert args[:2] == ["--", "/usr/bin/env"]
    assert set(args[2:-3]) == {"TESTBED_KERNELS=6.1 7.3", "CI=true", "TESTBED_PYTEST_ARGS=-k lab"}
    assert args[-3:] == [str(ROOT / "tools" / tool), "--flag", "two words"]


def test_root_runs_straight_through(tmp_path):
    """As root the helper returns at once and the script goes on (no sudo involved)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    script = tmp_path / "probe"
    script.write_text(f'#!/bin/bash\nset -eu\n. {ROOT}/tools/lib/root.sh\nas_root "$0" "$@"\n'
                      'echo "ran as $(id -u): $*"\n')
    script.chmod(0o755)
    res = subprocess.run([str(script), "a b"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
                         timeout=30)
    assert (res.returncode, res.stdout, res.stderr) == (0, "ran as 0: a b\n", "")
