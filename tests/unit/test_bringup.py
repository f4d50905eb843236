"""The one bring-up's order and its crash rule, with the kernel steps replaced (no root, no namespaces).

A lab is ``up`` only once its agent is confirmed; until then it is a build whose builder's pid is
recorded, so a dead builder is a crashed build (``list`` says so, plain ``clean`` removes it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from testbed import bringup, labstore, realize, teardown
from testbed.agent import launcher
from testbed.commands import lab as lab_cmd
from testbed.errors import AgentError
from testbed.topology import Topology


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(labstore, "RUN_DIR", str(tmp_path))
    monkeypatch.setattr(bringup.caps, "ensure_modules", lambda: [])
    monkeypatch.setattr(bringup, "_modules_ready", False)
    monkeypatch.setattr(realize, "check_conflicts", lambda topo: None)
    return tmp_path


def topo(name: str = "bu") -> Topology:
    import ipaddress

    return Topology(name=name, file="f.yaml", subnet=ipaddress.IPv4Network("198.18.0.0/24"), hosts=())


def fake_realize(monkeypatch, seen):
    def up(t, *, progress):
        rec = labstore.LabRecord(name=t.name, file=t.file, topology={}, netns=[f"{t.name}-server"], pid=4242)
        labstore.write(rec)
        seen.append(("realized", labstore.read(t.name).state))
        return rec

    monkeypatch.setattr(realize, "up", up)


def test_the_record_says_up_only_after_the_agent_is_confirmed(run_dir, monkeypatch):
    seen = []
    fake_realize(monkeypatch, seen)
    monkeypatch.setattr(launcher, "start", lambda lab, timeout: seen.append(("agent", labstore.read(lab).state)))
    rec = bringup.up(topo(), agent=True, progress=lambda m: seen.append(("say", m)))
    assert ("realized", "building") in seen and ("agent", "building") in seen
    assert ("say", "starting the offload agent") in seen
    assert rec.state == "up" and labstore.read("bu").state == "up" and labstore.read("bu").agent


def test_without_an_agent_the_build_is_marked_up_at_once(run_dir, monkeypatch):
    fake_realize(monkeypatch, [])
    monkeypatch.setattr(launcher, "start", lambda *a, **k: pytest.fail("no agent was asked for"))
    assert bringup.up(topo(), agent=False).state == "up" and not labstore.read("bu").agent


def test_an_agent_that_does_not_start_removes_the_lab(run_dir, monkeypatch):
    fake_realize(monkeypatch, [])
    removed = []

    def fail(lab, timeout):
        raise AgentError(f"lab {lab}: the agent did not start: boom")

    monkeypatch.setattr(launcher, "start", fail)
    monkeypatch.setattr(teardown, "down", lambda lab, **k: removed.append(lab))
    with pytest.raises(AgentError):
        bringup.up(topo(), agent=True)
    assert removed == ["bu"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("state,pid,listed,cleaned", [
    ("building", "dead", "crashed", True),  # `up` killed at any point before the agent was confirmed
    ("building", "self", "building", False),  # a build in progress
    ("up", "dead", "up", False),  # a finished `up` exited normally: the lab is healthy
    ("removing", "self", "removing", True),  # an interrupted removal
])
def test_list_shows_a_dead_build_as_crashed_and_clean_takes_it(run_dir, capsys, state, pid, listed, cleaned):
    import os

    rec = labstore.LabRecord(name="bu", file="f.yaml", topology={}, state=state,
                             pid=dead_pid() if pid == "dead" else os.getpid())
    labstore.write(rec)
    lab_cmd.cmd_list(argparse.Namespace(json=True))
    assert json.loads(capsys.readouterr().out)[0]["state"] == listed
    assert teardown.crashed(rec) is cleaned


def test_the_agents_start_up_time_is_reported_and_recorded(run_dir, monkeypatch):
    said = []
    fake_realize(monkeypatch, [])
    monkeypatch.setattr(launcher, "start", lambda lab, timeout: 4711)
    rec = bringup.up(topo(), agent=True, progress=said.append)
    assert isinstance(rec.agent_ready_s, float) and 0 <= rec.agent_ready_s < 60
    assert said[said.index("starting the offload agent") + 1] == bringup.ready_line(rec.agent_ready_s)
    assert labstore.read("bu").agent_ready_s == rec.agent_ready_s
    assert bringup.ready_line(3.14159) == "agent ready in 3.14 s (first reconcile)"
    assert bringup.up(topo("bv"), agent=False).agent_ready_s is None  # no agent, no figure


@pytest.mark.parametrize("agent", [True, False])
def test_up_json_carries_the_agents_start_up_time(run_dir, monkeypatch, capsys, agent):
    from testbed import loader, rdma

    fake_realize(monkeypatch, [])
    monkeypatch.setattr(launcher, "start", lambda lab, timeout: 4711)
    monkeypatch.setattr(loader, "load", lambda path, lab_name=None: topo())
    monkeypatch.setattr(rdma, "require", lambda t: None)
    monkeypatch.setattr(lab_cmd, "require_root", lambda what: None)
    args = argparse.Namespace(file="f.yaml", name=None, no_agent=not agent, agent_timeout=5.0, quiet=False,
                              json=True)
    assert lab_cmd.cmd_up(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lab"] == "bu" and out["agent"] is agent
    assert (out["agent_ready_s"] >= 0) if agent else out["agent_ready_s"] is None
