"""Soak, crash and storm tests (issue 13 item 5): long reliability runs on a real kernel.

::

    soak-min.yaml (cycles):      switch ns: br0 ── server-pf0 ── server-pf1
                                 server ns:  pf0 ── bond0 ── pf1
    mode1-recovery.yaml (agent): the same plus vf0-rep ═ vf0 and a client on the switch;
                                 the agent mirrors the bond's active port into flower rules

* 30 up/down cycles (agent off): nothing left, no growth in time or memory (figures printed);
* the agent SIGKILLed, a failover while it is dead (rules stay), restart: rules follow, no
  duplicates, a second agent refused (exit 5);
* flap storms of hundreds of carrier flips while the agent is stopped (SIGSTOP) with a small
  receive buffer (``TESTBED_AGENT_RCVBUF``): the agent resyncs after the ENOBUFS overrun and its
  rules equal the final state's, ending down and ending up;
* as an unprivileged user every root command refuses with exit 4 and the lab is unchanged.

Marked ``soak``: the kernel matrix runs them on one kernel only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import List, Tuple

import pytest

from testbed import labstore
from testbed.agent import launcher, rules
from testbed.bond.state import read_state
from testbed.nl import ifindex, open_ns, wait_until
from testbed.tc import ops
from testbed.topology import Host

pytestmark = [pytest.mark.integration, pytest.mark.soak, pytest.mark.timeout(2400)]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIN = "topologies/soak-min.yaml"
MODE1 = "topologies/mode1-recovery.yaml"
CYCLES = 30
FLIPS = 300  # carrier flips per storm (each is a down or an up of the wire)
TESTBED = [sys.executable, "-m", "testbed"]


def nic_host(lab) -> Host:
    return next(h for h in lab.topo.hosts if h.nic)


def netns_list() -> List[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def root_links() -> List[str]:
    with open_ns(None) as ipr:
        return sorted(link.get("ifname") for link in ipr.get_links())


def proc_kb(path: str, key: str) -> int:
    """A ``Key:   N kB`` line of a /proc file (``/proc/meminfo`` MemAvailable, ``/proc/self/status`` VmRSS)."""
    with open(path) as fh:
        for line in fh:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in {path}")


class Rules:
    """The NIC's flower rules and bond state as the kernel holds them, against the agent's plan."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.ipr = open_ns(host.netns)

    def installed(self):
        return ops.dump(self.ipr, rules.devices(self.host.nic), rules.BLOCKS)

    def wrong(self) -> List[str]:
        state = read_state(self.ipr, self.host.nic)
        add, replace, delete = ops.diff(rules.plan(self.host.nic, state).rules, self.installed())
        return [f"missing {r.dev} {r.label}" for r in add] + [f"wrong {r.dev} {r.label}" for r in replace] + [
            f"extra {r.dev} {r.hook} prio {r.prio} {r.label}" for r in delete]

    def duplicates(self) -> List[Tuple]:
        keys = [(i.rule.dev, i.rule.hook, i.rule.block, i.rule.label) for i in self.installed()]
        return sorted({k for k in keys if keys.count(k) > 1})

    def count(self) -> int:
        return len(self.installed())

    def tx_port(self, fn: str = "vf0") -> str:
        """The port the TX table's first entry sends to (every function uses the one table)."""
        return next(i.rule.actions[0].dev for i in ops.dump(self.ipr, [], [rules.BLOCK_REPS])
                    if i.rule.chain == rules.CHAIN_TX and i.rule.handle == 1)

    def active(self) -> str:
        return read_state(self.ipr, self.host.nic).active

    def close(self) -> None:
        self.ipr.close()


def wait_pid_gone(pid: int, timeout: float = 30) -> None:
    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_until(gone, timeout, f"pid {pid} to exit")


# --- up/down cycles ---------------------------------------------------------------------------------------

def test_up_down_cycles_leave_nothing_and_do_not_grow(lab_factory):
    before = (netns_list(), labstore.names(), root_links())
    ups: List[float] = []
    downs: List[float] = []
    free: List[int] = []
    rss: List[int] = []
    for i in range(CYCLES):
        t0 = time.monotonic()
        lab = lab_factory(MIN, agent=False)
        t1 = time.monotonic()
        assert set(lab.topo.netns_names) <= set(netns_list()), f"cycle {i}: the lab's namespaces exist"
        lab.down()
        t2 = time.monotonic()
        ups.append(t1 - t0)
        downs.append(t2 - t1)
        free.append(proc_kb("/proc/meminfo", "MemAvailable"))
        rss.append(proc_kb("/proc/self/status", "VmRSS"))
        now = (netns_list(), labstore.names(), root_links())
        assert now == before, f"cycle {i}: left behind: {now} (before: {before})"
    first, last = slice(0, 5), slice(-5, None)

    def avg(xs: List[float]) -> float:
        return sum(xs) / len(xs)

    print(f"\n{CYCLES} cycles of {MIN}: up {avg(ups[first]):.2f} s -> {avg(ups[last]):.2f} s, down "
          f"{avg(downs[first]):.2f} s -> {avg(downs[last]):.2f} s (first 5 -> last 5); MemAvailable "
          f"{free[0] / 1024:.0f} -> {free[-1] / 1024:.0f} MiB, test process RSS {rss[0] / 1024:.1f} -> "
          f"{rss[-1] / 1024:.1f} MiB")
    assert avg(ups[last]) < 2.5 * avg(ups[first]) + 1, f"up got slower: {ups}"
    assert avg(downs[last]) < 2.5 * avg(downs[first]) + 1, f"down got slower: {downs}"
    assert free[0] - free[-1] < 64 * 1024, f"MemAvailable fell by {(free[0] - free[-1]) / 1024:.0f} MiB"
    assert rss[-1] - rss[0] < 32 * 1024, f"the test process grew by {(rss[-1] - rss[0]) / 1024:.0f} MiB"


# --- agent crash ------------------------------------------------------------------------------------------

def test_agent_sigkill_failover_while_dead_restart_follows(lab_factory):
    lab = lab_factory(MODE1)
    host = nic_host(lab)
    view = Rules(host)
    try:
        assert view.wrong() == [] and view.tx_port() == "pf0"
        n_rules = view.count()
        pid = launcher.running(lab.name)
        assert pid
        os.kill(pid, signal.SIGKILL)
        wait_pid_gone(pid)
        lab.fail("server:pf0")
        wait_until(lambda: view.active() == "pf1", 30, "the bond to fail over to pf1 (agent dead)")
        assert view.tx_port() == "pf0", "with the agent dead the rules must stay where they were"
        assert view.wrong(), "the kernel's rules are out of line while no agent runs"
        t0 = time.monotonic()
        launcher.start(lab.name, timeout=120)
        followed = time.monotonic() - t0
        assert view.wrong() == [] and view.tx_port() == "pf1"
        assert view.duplicates() == [] and view.count() == n_rules, (view.count(), n_rules)
        second = subprocess.run(TESTBED + ["agent", lab.name], capture_output=True, text=True, timeout=300,
                                cwd=ROOT, check=False)
        assert second.returncode == 5, (second.returncode, second.stderr)
        assert "already running" in second.stderr
        assert launcher.running(lab.name) is not None
        lab.restore("server:pf0")
        wait_until(lambda: view.tx_port() == "pf0" and not view.wrong(), 60, "the rules back on pf0")
        print(f"\nagent SIGKILL: failover while dead kept {n_rules} rules on pf0; the restarted agent followed the "
              f"bond to pf1 in {followed:.1f} s (start + first reconcile); second agent refused (exit 5)")
    finally:
        view.close()


# --- flap storm -------------------------------------------------------------------------------------------

def storm(lab, host: Host, flips: int, end_up: bool) -> float:
    """``flips`` carrier flips of pf0's wire in one tight loop over one netlink socket; ends up or down."""
    peer = f"{host.name}-pf0"
    t0 = time.monotonic()
    with open_ns(lab.topo.switch_netns, groups=0) as ipr:
        idx = ifindex(ipr, peer)
        states = ["down", "up"] * (flips // 2)
        if (states[-1] == "up") != end_up:
            states.append("down" if not end_up else "up")
        for state in states:
            ipr.link("set", index=idx, state=state)
    return time.monotonic() - t0


@pytest.fixture
def small_agent_buffer(monkeypatch):
    """The agent started by this test gets a 16 kB link-event buffer: an overrun is certain."""
    monkeypatch.setenv("TESTBED_AGENT_RCVBUF", "16384")


def test_flap_storm_overrun_resync_ending_down_and_up(lab_factory, small_agent_buffer):
    lab = lab_factory(MODE1)
    host = nic_host(lab)
    view = Rules(host)
    try:
        pid = launcher.running(lab.name)
        assert pid
        log = labstore.lab_file(lab.name, "agent.log")
        for end_up, want in ((False, "pf1"), (True, "pf0")):
            offset = os.path.getsize(log)
            os.kill(pid, signal.SIGSTOP)  # the kernel queues events for a sleeping agent until the buffer overflows
            try:
                seconds = storm(lab, host, FLIPS, end_up)
            finally:
                os.kill(pid, signal.SIGCONT)
            wait_until(lambda want=want: view.active() == want, 60, f"the bond to settle on {want}")
            t0 = time.monotonic()
            wait_until(lambda want=want: view.tx_port() == want and not view.wrong(), 120,
                       f"the agent's rules to match the final state (TX on {want})")
            settled = time.monotonic() - t0
            assert launcher.running(lab.name) == pid, "the agent survived the storm"
            assert view.duplicates() == []
            with open(log) as fh:
                fh.seek(offset)
                new = fh.read().splitlines()
            overruns = [line for line in new if "ENOBUFS" in line]
            assert overruns, f"the agent's log shows no overrun resync after the storm: {new[-5:]}"
            print(f"\nstorm of {FLIPS} flips ending {'up' if end_up else 'down'} in {seconds:.1f} s with the agent "
                  f"stopped: {len(new)} log lines, {len(overruns)} ENOBUFS resyncs; rules right {settled:.1f} s "
                  f"after the bond settled: {view.count()} rules, 0 duplicates")
    finally:
        view.close()


# --- non-root ---------------------------------------------------------------------------------------------

def snapshot(lab) -> Tuple:
    host = nic_host(lab)
    view = Rules(host)
    try:
        rules_now = sorted((i.rule.dev, i.rule.hook, i.rule.prio, i.rule.label) for i in view.installed())
        active = view.active()
    finally:
        view.close()
    return netns_list(), labstore.names(), launcher.running(lab.name), active, rules_now


def test_every_root_command_refuses_an_unprivileged_user(lab_factory, tmp_path):
    lab = lab_factory(MODE1)
    valid = os.path.join(ROOT, "tests", "integration", MODE1)
    before = snapshot(lab)
    commands = [["up", valid, "--name", "nobody1"], ["down", lab.name], ["status", lab.name],
                ["fail", lab.name, "server", "pf0"], ["restore", lab.name, "server", "pf0"], ["clean"],
                ["clean", "--all"], ["clean", "--lab", lab.name], ["agent", lab.name]]
    env = dict(os.environ, PYTHONPATH=ROOT, HOME=str(tmp_path))
    os.chmod(tmp_path, 0o777)
    refused = 0
    for argv in commands:
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *TESTBED, *argv],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
        assert proc.returncode == 4, (argv, proc.returncode, proc.stderr[-400:])
        assert "root" in proc.stderr and "Traceback" not in proc.stderr, (argv, proc.stderr[-400:])
        refused += 1
    assert snapshot(lab) == before, "an unprivileged command changed the lab"
    print(f"\nnon-root: {refused}/{len(commands)} commands refused with exit 4; the lab unchanged")
