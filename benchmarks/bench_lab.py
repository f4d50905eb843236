"""Benchmark (not a test): `up`+`down` of a NIC host with 32 VFs, testbed vs an equivalent `ip` shell script.

Run where the kernel has bonding (e.g. the VM lane), as root:

    sudo testbed vm -- python benchmarks/bench_lab.py [--vfs 32] [--rounds 2]

Both sides build the same thing: a switch namespace with a bridge, the NIC host namespace with two veth ports
enslaved to an active-backup bond, N VF namespaces with veth VF/representor pairs, clsact on ports and
representors, RPS on them, one client. The script side is one `ip`/`tc` exec per object (what a person writes);
testbed does it in-process over netlink. Prints seconds for each and the ratio script/testbed (>1: testbed is faster).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from testbed import bringup, loader, teardown  # noqa: E402


def topology_text(n: int) -> str:
    return (f"name: bench\nhosts:\n  server:\n    nic:\n      bond: {{mode: active-backup, miimon: 10}}\n"
            f"      vfs: {n}\n  client: {{}}\n")


def script(topo) -> tuple[str, str]:
    """The same lab as plain `ip`/`tc` commands: (up script, down script)."""
    up, down = ["set -e"], ["set -e"]
    sw = topo.switch_netns
    ns_all = list(topo.netns_names)
    for ns in ns_all:
        up.append(f"ip netns add {ns}")
        up.append(f"ip -n {ns} link set lo up")
    up.append(f"ip -n {sw} link add br0 type bridge && ip -n {sw} link set br0 up")
    for h in topo.hosts:
        if not h.nic:
            up.append(f"ip -n {h.netns} link add eth0 type veth peer name {h.name}-eth0 netns {sw}")
            up.append(f"ip -n {h.netns} addr add {h.address} dev eth0 && ip -n {h.netns} link set eth0 up")
            up.append(f"ip -n {sw} link set {h.name}-eth0 master br0 up")
            continue
        nic, ns = h.nic, h.netns
        up.append(f"ip -n {ns} link add bond0 address {nic.mac} type bond mode active-backup miimon 10")
        for p in nic.ports:
            up.append(f"ip -n {ns} link add {p} type veth peer name {h.name}-{p} netns {sw}")
            up.append(f"ip -n {sw} link set {h.name}-{p} master br0 up")
            up.append(f"ip -n {ns} link set {p} master bond0 && ip -n {ns} link set {p} up")
        up.append(f"ip -n {ns} addr add {nic.address} dev bond0 && ip -n {ns} link set bond0 up")
        for f in nic.functions:
            up.append(f"ip -n {f.netns} link add {f.name} address {f.mac} type veth peer name {f.rep} netns {ns}")
            up.append(f"ip -n {f.netns} addr add {f.address} dev {f.name} && ip -n {f.netns} link set {f.name} up")
            up.append(f"ip -n {ns} link set {f.rep} up")
        mask = format((1 << (os.cpu_count() or 1)) - 1, "x")
        for dev in list(nic.ports) + [f.rep for f in nic.functions]:
            up.append(f"tc -n {ns} qdisc add dev {dev} clsact")
            up.append(f"ip netns exec {ns} sh -c 'echo {mask} > /sys/class/net/{dev}/queues/rx-0/rps_cpus'")
    for ns in reversed(ns_all):
        down.append(f"ip netns del {ns}")
    return "\n".join(up) + "\n", "\n".join(down) + "\n"


def timed_bash(text: str) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as fh:
        fh.write(text)
    try:
        t = time.perf_counter()
        subprocess.run(["bash", fh.name], check=True)
        return time.perf_counter() - t
    finally:
        os.unlink(fh.name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vfs", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    topo = loader.loads(topology_text(args.vfs), "<bench>")
    up_s, down_s = script(topo)
    rows = []
    for r in range(args.rounds):
        t = time.perf_counter()
        bringup.up(topo, agent=False)
        t_up = time.perf_counter() - t
        t = time.perf_counter()
        teardown.down(topo.name)
        t_down = time.perf_counter() - t
        s_up = timed_bash(up_s)
        s_down = timed_bash(down_s)
        rows.append((t_up, t_down, s_up, s_down))
        print(f"round {r + 1}: testbed up {t_up:6.2f}s down {t_down:5.2f}s | ip script up {s_up:6.2f}s "
              f"down {s_down:5.2f}s", flush=True)
    best = [min(col) for col in zip(*rows)]
    t_total, s_total = best[0] + best[1], best[2] + best[3]
    print(f"\n{args.vfs} VFs, best of {args.rounds}: testbed up+down {t_total:.2f}s "
          f"(up {best[0]:.2f}, down {best[1]:.2f}; down waits for the kernel to destroy the namespaces), "
          f"ip script {s_total:.2f}s (up {best[2]:.2f}, down {best[3]:.2f})")
    print(f"ratio ip-script / testbed: {s_total / t_total:.2f}x (up {best[2] / best[0]:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
