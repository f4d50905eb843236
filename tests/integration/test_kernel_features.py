"""What testbed.kfeatures says about the running kernel, checked against the kernel itself.

Runs on every kernel of the matrix (tools/test); the RDMA conversation needs rxe inside a
namespace (Linux 7.1+) and is skipped elsewhere, which the matrix allows only because
another kernel of the run passes it.  Two namespaces joined by a veth, removed afterwards::

    ns tbkf<pid>a                              ns tbkf<pid>b
    +-------------------------------+          +-------------------------------+
    | kfbond (a bond: its sysfs     |          |                               |
    |   options vs bond_options())  |          |                               |
    | kfa 198.18.99.1 ==== veth ====|==========|==== kfb 198.18.99.2           |
    | rxe device kfrxea on kfa      |          | rxe device kfrxeb on kfb      |
    | rping -s                      |  RoCEv2  | rping -c -C 3                 |
    +-------------------------------+          +-------------------------------+
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Iterator, List, Tuple

import pytest

from testbed import kfeatures
from testbed.kfeatures import BOND_OPTION_NAMES
from testbed.nl import wait_until

pytestmark = pytest.mark.integration

ADDR_A, ADDR_B = "198.18.99.1", "198.18.99.2"
ROCE_PORT = 4791
DEADLINE_S = 120.0  # RDMA CM's first connection in a loaded TCG guest


def run(*argv: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout)


def in_ns(ns: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", ns, *argv, **kw)


@pytest.fixture
def pair() -> Iterator[Tuple[str, str]]:
    a, b = f"tbkf{os.getpid()}a", f"tbkf{os.getpid()}b"
    try:
        for ns in (a, b):
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", a, "link", "add", "kfa", "type", "veth", "peer", "name", "kfb", "netns", b)
        for ns, dev, addr in ((a, "kfa", ADDR_A), (b, "kfb", ADDR_B)):
            run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        yield a, b
    finally:
        for ns in (a, b):
            run("ip", "netns", "del", ns, check=False)


def roce_listeners(ns: str) -> List[str]:
    """UDP sockets on the RoCEv2 port in ``ns``."""
    out = in_ns(ns, "ss", "-Hnlu", f"sport = :{ROCE_PORT}").stdout
    return [line for line in out.splitlines() if line.strip()]


def add_rxe(ns: str, name: str, netdev: str) -> subprocess.CompletedProcess:
    rdma = shutil.which("rdma") or "/sbin/rdma"
    return in_ns(ns, rdma, "link", "add", name, "type", "rxe", "netdev", netdev, check=False)


def test_bond_options_cover_every_option_the_bond_shows_in_sysfs(pair):
    a, _ = pair
    run("ip", "-n", a, "link", "add", "kfbond", "type", "bond")
    shown = set(in_ns(a, "ls", "/sys/class/net/kfbond/bonding").stdout.split())
    known = kfeatures.bond_options()
    named = shown & set(BOND_OPTION_NAMES)
    assert len(named) >= 20, f"the bond shows only {sorted(shown)} in sysfs"
    assert named <= known, f"sysfs options the module scan missed: {sorted(named - known)}"
    assert {"mode", "miimon", "updelay", "downdelay", "primary", "xmit_hash_policy", "lacp_rate"} <= known


def test_rxe_netns_says_where_rxe_binds_rocev2(pair):
    """rxe made inside a namespace binds UDP 4791 there exactly when kfeatures says rxe_netns."""
    a, _ = pair
    assert kfeatures.has("rxe"), "rdma_rxe is missing from this kernel"
    run("modprobe", "rdma_rxe")
    before = roce_listeners(a)
    made = add_rxe(a, "kfrxea", "kfa")
    try:
        bound = bool(made.returncode == 0 and roce_listeners(a))
        assert before == []
        assert bound == kfeatures.has("rxe_netns"), (
            f"rdma link add: status {made.returncode} {made.stderr.strip()!r}; UDP {ROCE_PORT} in {a}: "
            f"{roce_listeners(a)}; kfeatures says rxe_netns={kfeatures.has('rxe_netns')} "
            f"on {kfeatures.running_release()}")
    finally:
        if made.returncode == 0:
            in_ns(a, shutil.which("rdma") or "/sbin/rdma", "link", "delete", "kfrxea", check=False)


@pytest.mark.needs("rxe_netns")
def test_rping_between_two_namespaces_completes(pair):
    """Real RDMA (RC queue pair over RDMA CM) between rxe devices in two namespaces."""
    a, b = pair
    run("modprobe", "rdma_rxe")
    for ns, name, dev in ((a, "kfrxea", "kfa"), (b, "kfrxeb", "kfb")):
        made = add_rxe(ns, name, dev)
        assert made.returncode == 0, f"{ns}: rdma link add {name}: {made.stderr.strip()}"
    server = subprocess.Popen(["ip", "netns", "exec", a, "rping", "-s", "-a", ADDR_A, "-C", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tries: List[subprocess.CompletedProcess] = []

    def client_done() -> bool:  # the server may not listen yet: the client is retried
        tries.append(in_ns(b, "rping", "-c", "-a", ADDR_A, "-C", "3", "-v", check=False, timeout=DEADLINE_S))
        return tries[-1].returncode == 0

    try:
        wait_until(client_done, DEADLINE_S, f"rping from {b} to {ADDR_A} to complete 3 iterations",
                   interval=0.5, fix=f"raise DEADLINE_S in {__file__}")
        assert tries[-1].stdout.count("ping data:") == 3, tries[-1].stdout
        assert server.wait(timeout=DEADLINE_S) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
