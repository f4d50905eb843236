"""A lab comes up, and its agent follows a failover, while every CPU is busy (issue 13 item 2).

::

    busy loops: one per CPU (plus one), started by the test and always killed
    mode1-recovery.yaml: switch ns br0 ── server-pf0/pf1 ═ pf0/pf1 ── bond0; vf0-rep ═ vf0; client
    fail server:pf0 -> the bond moves to pf1 -> the agent's rules follow

Namespace sockets are made in-process (``testbed.nl.ns_socket``), so the build no longer
depends on pyroute2's helper process meeting its fixed start-up timeout; the default
deadlines must hold with the CPUs saturated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Iterator, List

import pytest

pytestmark = pytest.mark.integration
BUSY = "while True: pass"


@pytest.fixture
def saturated_cpus() -> Iterator[List[subprocess.Popen]]:
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range((os.cpu_count() or 1) + 1)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def test_lab_up_and_failover_with_cpus_saturated(lab_factory, saturated_cpus):
    t0 = time.monotonic()
    lab = lab_factory("topologies/mode1-recovery.yaml")
    up = time.monotonic() - t0
    assert all(p.poll() is None for p in saturated_cpus), "the busy loops ran the whole time"
    assert lab.active_port("server") == "pf0"
    lab.wait_offload("server", ["pf0"], timeout=60)
    t1 = time.monotonic()
    lab.fail("server:pf0")
    lab.wait_active("server", "pf1", timeout=60)
    lab.wait_offload("server", ["pf1"], timeout=60)
    moved = time.monotonic() - t1
    assert all(p.poll() is None for p in saturated_cpus)
    print(f"\nwith {len(saturated_cpus)} busy loops on {os.cpu_count()} CPUs: up (agent ready) in {up:.1f} s, "
          f"bond and offload on pf1 {moved:.1f} s after the failure")
