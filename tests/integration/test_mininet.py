"""The Mininet front end on a real kernel: the CLI driven through its standard input, ``mn --custom``,
and a SIGKILLed session cleaned up by ``testbed clean``.

::

    client ── eth0 ═ client-eth0 ─┐
                                  sw (Mininet's LinuxBridge, namespace <lab>-switch)
    server ── pf0  ═ server-pf0  ─┤
              pf1  ═ server-pf1  ─┘   bond0, vf0, vf1, rdma0 (realize.Builder), offload agent

Each test starts one Mininet session as a subprocess (the way a user does),
and checks afterwards that the host's namespaces and links are exactly as
before. Output of the i-th scripted command is what follows the i-th
``mininet>`` prompt (stdout and stderr merged: Mininet logs to stderr).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from typing import List, Tuple

import pytest
from pyroute2 import netns

from testbed import labstore, teardown
from testbed.errors import ConflictError
from testbed.nl import open_ns

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPO = os.path.join(ROOT, "topologies", "active-backup.yaml")
PROMPT = "mininet> "


def host_snapshot():
    with open_ns(None) as ipr:
        links = sorted((ln.get_attr("IFLA_IFNAME"), ln["index"]) for ln in ipr.get_links())
    return sorted(netns.listnetns()), links


def lab_namespaces(lab: str) -> List[str]:
    return sorted(n for n in netns.listnetns() if n.startswith(f"{lab}-"))


def run_script(argv: List[str], commands: List[str], timeout: float) -> Tuple[int, List[str], str]:
    """Run a Mininet session with ``commands`` on its stdin; (status, output per command, all output)."""
    proc = subprocess.run(argv, input="".join(c + "\n" for c in commands), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, cwd=ROOT, check=False)
    parts = proc.stdout.split(PROMPT)
    return proc.returncode, parts[1:], proc.stdout


def section(out: List[str], commands: List[str], cmd: str) -> str:
    """The output of the first ``cmd`` in the script."""
    i = commands.index(cmd)
    assert i < len(out), f"no output for {cmd!r} (the session ended early)"
    return out[i]


def test_cli_scripted_session_fails_over_and_leaves_nothing():
    before = host_snapshot()
    lab = "mnit"
    commands = [
        "server ping -c1 -W2 client",
        "client ping -c1 -W2 vf0",
        f"sh ip -n {lab}-client link show lo",
        "sh ip netns list",
        "fail server pf0",
        "lagstatus server",
        "vf0 ping -c1 -W2 client",
        "restore server pf0",
        "traffic failover",
        "restore server pf0 ",  # (a second restore: the trailing space keeps the two apart below)
        "link sw server:pf0 down",
        "link sw server:pf0 up",
        "link sw server down",
        "lagstatus",
        "link sw server up",
        "pingall",
        "iperf",
        "exit",
    ]
    t0 = time.monotonic()
    rc, out, text = run_script([sys.executable, "-m", "testbed", "mininet", TOPO, "--name", lab], commands, 1500)
    elapsed = time.monotonic() - t0
    up = re.search(r"lab mnit is up in ([\d.]+) s \(([^)]*)\)", text)
    print(f"session {elapsed:.1f} s; {up.group(0) if up else 'no up line'}")
    assert up, text[-3000:]
    assert len(out) == len(commands), f"expected {len(commands)} prompts, got {len(out)}:\n{text[-3000:]}"

    assert " 0% packet loss" in section(out, commands, "server ping -c1 -W2 client")
    assert " 0% packet loss" in section(out, commands, "client ping -c1 -W2 vf0"), "VF reachable via offload"
    assert f"alias testbed:{lab}" in section(out, commands, f"sh ip -n {lab}-client link show lo")
    names = section(out, commands, "sh ip netns list")
    for ns in ("client", "server", "switch", "server-vf0", "server-vf1", "server-rdma0"):
        assert re.search(rf"^{lab}-{ns}\b", names, re.M), f"{lab}-{ns} reachable by name:\n{names}"

    fail = section(out, commands, "fail server pf0")
    assert "active pf0 -> pf1" in fail, fail
    assert "agent: offload uses pf1" in fail, fail
    status = section(out, commands, "lagstatus server")
    assert re.search(r"bond0 active-backup \S+ active=pf1", status), status
    assert re.search(r"^\s+\* pf1 +carrier=up +bond=active", status, re.M), status
    assert re.search(r"^\s+pf0 +carrier=DOWN", status, re.M), status
    assert "agent: offload uses pf1; table (entry:port) 0:pf1" in status, status
    assert " 0% packet loss" in section(out, commands, "vf0 ping -c1 -W2 client"), "VF still reachable after failover"

    traffic = section(out, commands, "traffic failover")  # fails the active port pf0; it stays failed
    assert "traffic failover: PASS" in traffic, traffic

    assert "active pf1 -> pf0" in section(out, commands, "restore server pf0")
    assert "active pf1 -> pf0" in section(out, commands, "restore server pf0 ")
    one = section(out, commands, "link sw server:pf0 down")
    assert "server-pf0/pf0 down" in one and "active pf0 -> pf1" in one and "offload uses pf1" in one, one
    assert "offload uses pf0" in section(out, commands, "link sw server:pf0 up")
    both = section(out, commands, "link sw server down")  # Mininet's own: both ends of every link
    assert "server-pf0/pf0, server-pf1/pf1 down" in both, both
    assert "active pf0 -> -" in both and "offload uses no port" in both, both
    assert "agent: offload uses no port (rules drop); table (entry:port) 0:drop" in section(out, commands, "lagstatus")
    assert "offload uses pf0" in section(out, commands, "link sw server up")
    assert "Results: 0% dropped" in section(out, commands, "pingall")
    iperf = section(out, commands, "iperf")  # Mininet's: client <-> the server's bond address
    assert re.search(r"Results: \['[\d.]+ [KMG]?bits/sec', '[\d.]+ [KMG]?bits/sec'\]", iperf), iperf

    assert rc == 0, text[-3000:]
    assert f"lab {lab} removed" in text
    assert labstore.try_read(lab) is None
    assert host_snapshot() == before, "exit must leave the host's namespaces and links as they were"


def test_mn_custom_topology_and_cli():
    before = host_snapshot()
    commands = ["pingall", "lagstatus server", "exit"]
    rc, out, text = run_script(["mn", "--custom", "testbed/mininet/custom.py",
                                "--topo", "lag,topologies/active-backup.yaml,name=mncu"], commands, 900)
    assert len(out) == len(commands), text[-3000:]
    assert "Results: 0% dropped" in section(out, commands, "pingall"), text[-3000:]
    status = section(out, commands, "lagstatus server")
    assert "active=pf0" in status and "agent: offload uses pf0" in status, status
    assert rc == 0, text[-3000:]
    assert labstore.try_read("mncu") is None
    assert host_snapshot() == before


def test_live_session_is_refused_by_down_and_killed_one_removed_by_clean():
    before = host_snapshot()
    lab = "mncr"
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "mininet", TOPO, "--name", lab, "--no-agent"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        buf = b""
        deadline = time.monotonic() + 600
        while PROMPT.encode() not in buf:
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, f"no prompt: {buf.decode(errors='replace')[-2000:]}"
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                buf += os.read(proc.stdout.fileno(), 4096)
        assert lab_namespaces(lab), "the lab's namespaces exist while the session runs"
        held = labstore.read(lab)
        assert held.holder == proc.pid
        with pytest.raises(ConflictError, match="running Mininet session"):
            teardown.down(lab)  # its node shells hold the namespaces: refused, nothing changed
        assert labstore.read(lab) == held and lab_namespaces(lab)
        assert not set(teardown.clean()) & set(held.netns), "plain clean leaves a live session's lab alone"
        assert labstore.try_read(lab) is not None
    finally:
        proc.send_signal(signal.SIGKILL)  # no cleanup can run: a crash
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    rec = labstore.try_read(lab)
    assert rec is not None and lab_namespaces(lab), "a crash leaves the record and the namespaces"
    removed = teardown.clean()  # no --lab: the dead holder marks the lab as crashed
    assert sorted(removed) == sorted(rec.netns)
    assert labstore.try_read(lab) is None
    assert host_snapshot() == before
