"""The CLI on the host: help text, exit codes, and bad input that changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from testbed import cli, labstore
from testbed.commands import common
from testbed.errors import CapabilityError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BAD = os.path.join(ROOT, "tests", "unit", "bad_topologies")


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, check=False)


def netns_entries():
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("command", ["up", "down", "status", "list", "fail", "restore", "clean", "doctor", "vm"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: testbed " + command)
    assert len(out.splitlines()) > 3


def test_top_level_help_lists_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "exit status" in out and "doctor" in out and "vm" in out


def test_bad_topology_fails_with_path_and_creates_nothing():
    before = (netns_entries(), labstore.names())
    res = run("up", os.path.join(BAD, "06-bad-bond-mode.yaml"))
    assert res.returncode == 3, res.stderr
    assert "hosts.server.nic.bond.mode" in res.stderr
    assert "active-backup, balance-xor, 802.3ad" in res.stderr
    assert (netns_entries(), labstore.names()) == before


def test_missing_file_is_a_topology_error():
    res = run("up", "/nonexistent/lab.yaml")
    assert res.returncode == 3
    assert "/nonexistent/lab.yaml: cannot read" in res.stderr


def test_status_of_unknown_lab_exit_6():
    if os.geteuid() != 0:
        pytest.fail("this test needs root (it asks for a lab status); run the suite with sudo")
    res = run("status", "nosuchlab")
    assert res.returncode == 6
    assert "nosuchlab" in res.stderr and "testbed list" in res.stderr


def test_require_root_names_the_fix(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(CapabilityError) as info:
        common.require_root("up")
    assert "sudo testbed up" in str(info.value)


def test_doctor_json_names_what_is_missing_and_the_fix():
    res = run("doctor", "--json")
    data = json.loads(res.stdout)
    names = {c["name"]: c for c in data["checks"]}
    assert {"root", "netns", "veth", "bonding", "cls_flower", "act_mirred", "clsact", "flower-hash",
            "rps"} <= set(names)
    missing = [c for c in data["checks"] if not c["ok"]]
    assert res.returncode == (4 if missing else 0)
    for c in missing:
        assert c["fix"], c
    if not names["bonding"]["ok"]:  # this host's kernel: the fix points at the VM lane
        assert "VM lane" in names["bonding"]["fix"]


def test_list_json_is_a_list():
    res = run("list", "--json")
    assert res.returncode == 0
    assert isinstance(json.loads(res.stdout), list)
