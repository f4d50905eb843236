"""The lab record and the decisions ``down``/``clean`` take from it (no root, no namespaces)."""

import json
import os
import subprocess
import sys

import pytest

from testbed import labstore, teardown
from testbed.errors import ConflictError, LabNotFound


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(labstore, "RUN_DIR", str(tmp_path))
    return tmp_path


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_record_round_trip(run_dir):
    rec = labstore.LabRecord(name="ab", file="f.yaml", topology={"hosts": {}}, netns=["ab-server"], pid=7,
                             holder=42)
    labstore.write(rec)
    back = labstore.read("ab")
    assert back == rec
    assert labstore.names() == ["ab"]


def test_record_from_older_or_newer_version_reads(run_dir):
    """A record without ``holder`` (older testbed) or with a field we don't know (newer) still reads."""
    os.makedirs(run_dir / "old")
    (run_dir / "old" / "lab.json").write_text(json.dumps(
        {"name": "old", "file": "f", "topology": {}, "state": "up", "netns": [], "pid": 1, "agent": True,
         "future_field": 3}))
    rec = labstore.read("old")
    assert rec.holder == 0 and rec.state == "up"


def test_missing_and_unreadable_records(run_dir):
    with pytest.raises(LabNotFound, match="no such lab"):
        labstore.read("nope")
    os.makedirs(run_dir / "bad")
    (run_dir / "bad" / "lab.json").write_text("{")
    with pytest.raises(LabNotFound, match="unreadable") as exc:
        labstore.read("bad")
    assert "testbed clean --lab bad" in exc.value.fix
    assert labstore.try_read("bad") is None


@pytest.mark.parametrize("state,pid,holder,expected", [
    ("up", "alive", 0, False),          # a healthy lab
    ("building", "alive", 0, False),    # a build in progress
    ("building", "dead", 0, True),      # a crashed build
    ("removing", "alive", 0, True),     # an interrupted removal
    ("up", "dead", "alive", False),     # a live Mininet session (its builder is the holder)
    ("up", "dead", "dead", True),       # a killed Mininet session
])
def test_crashed(state, pid, holder, expected):
    pids = {"alive": os.getppid(), "dead": dead_pid(), 0: 0}
    rec = labstore.LabRecord(name="x", file="f", topology={}, state=state, pid=pids[pid], holder=pids[holder])
    assert teardown.crashed(rec) is expected


def test_held_elsewhere_is_only_another_live_process():
    rec = labstore.LabRecord(name="x", file="f", topology={})
    assert not teardown.held_elsewhere(rec)
    rec.holder = os.getpid()  # the session itself removes its lab
    assert not teardown.held_elsewhere(rec)
    rec.holder = dead_pid()
    assert not teardown.held_elsewhere(rec)
    rec.holder = os.getppid()
    assert teardown.held_elsewhere(rec)


def test_down_refuses_a_live_mininet_lab_and_changes_nothing(run_dir):
    rec = labstore.LabRecord(name="mn", file="f", topology={}, state="up", netns=["mn-server"],
                             holder=os.getppid())
    labstore.write(rec)
    with pytest.raises(ConflictError, match="running Mininet session") as exc:
        teardown.down("mn")
    assert f"kill {os.getppid()}" in exc.value.fix
    with pytest.raises(ConflictError):
        teardown.clean(lab="mn")
    assert labstore.read("mn") == rec  # untouched


def test_down_of_an_absent_lab_is_not_an_error(run_dir):
    seen = []
    assert teardown.down("gone", progress=seen.append) == []
    assert seen == ["lab gone: nothing to remove"]
