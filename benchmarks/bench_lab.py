"""Benchmark (not a test): `up`+`down` of a NIC host with N VFs, testbed vs an equivalent `ip` shell script.

Run where the kernel has bonding (e.g. the VM lane), as root:

    sudo testbed vm -- python benchmarks/bench_lab.py [--vfs 32,256] [--rounds 2] [--json-out F]

With two VF counts it also prints the marginal cost per VF: (the larger run - the smaller) / the VFs between
them, for each side, and their ratio: what a VF costs without the fixed part (interpreter start, imports,
the switch, the bond) that a 32-VF run is mostly made of.

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

import figures  # noqa: E402

from testbed import bringup, loader, teardown  # noqa: E402
from testbed.nl import netns_exists  # noqa: E402


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


def check(topo, up: bool, who: str) -> None:
    """Every namespace of the lab is there after ``up`` and gone after ``down`` (a fast run did the work)."""
    wrong = [n for n in topo.netns_names if netns_exists(n) != up]
    if wrong:
        raise SystemExit(f"{who}: {len(wrong)} namespaces {'missing after up' if up else 'left after down'}: "
                         f"{', '.join(wrong[:3])}")


def measure(n: int, rounds: int) -> dict:
    """Best of ``rounds`` of testbed up, down, then the script's up, down, for a host with ``n`` VFs (s)."""
    topo = loader.loads(topology_text(n), "<bench>")
    up_s, down_s = script(topo)
    rows = []
    for r in range(rounds):
        t = time.perf_counter()
        bringup.up(topo, agent=False)
        t_up = time.perf_counter() - t
        check(topo, True, "testbed up")
        t = time.perf_counter()
        teardown.down(topo.name)
        t_down = time.perf_counter() - t
        check(topo, False, "testbed down")
        s_up = timed_bash(up_s)
        check(topo, True, "ip script up")
        s_down = timed_bash(down_s)
        check(topo, False, "ip script down")
        rows.append((t_up, t_down, s_up, s_down))
        print(f"{n} VFs, round {r + 1}: testbed up {t_up:6.2f}s down {t_down:5.2f}s | ip script up {s_up:6.2f}s "
              f"down {s_down:5.2f}s", flush=True)
    best = [min(col) for col in zip(*rows)]
    return {"vfs": n, "rounds": rounds, "testbed_up_s": round(best[0], 3), "testbed_down_s": round(best[1], 3),
            "script_up_s": round(best[2], 3), "script_down_s": round(best[3], 3),
            "testbed_s": round(best[0] + best[1], 3), "script_s": round(best[2] + best[3], 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vfs", type=figures.comma_list(int), default=[32],
                    help="VF counts, e.g. 32,256: with two, also the marginal cost per VF between them")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json-out", help="write the figures here (JSON)")
    args = ap.parse_args()
    # untimed: the first `up` of a process imports the build's modules (seconds under TCG), which would
    # be charged to the smallest run and hide the cost per VF
    warm = loader.loads(topology_text(1), "<bench>")
    bringup.up(warm, agent=False)
    teardown.down(warm.name)
    timed_bash("\n".join(script(warm)))
    runs = [measure(n, args.rounds) for n in args.vfs]
    out: dict = {"runs": runs}
    print()
    for r in runs:
        print(f"{r['vfs']} VFs, best of {r['rounds']}: testbed up+down {r['testbed_s']:.2f}s "
              f"(up {r['testbed_up_s']:.2f}, "
              f"down {r['testbed_down_s']:.2f}; down waits for the kernel to destroy the namespaces), ip script "
              f"{r['script_s']:.2f}s (up {r['script_up_s']:.2f}, down {r['script_down_s']:.2f}); "
              f"ratio ip-script / testbed {r['script_s'] / r['testbed_s']:.2f}x")
    if len(runs) >= 2:
        lo, hi = runs[0], runs[-1]
        extra = hi["vfs"] - lo["vfs"]
        tb = (hi["testbed_s"] - lo["testbed_s"]) / extra
        sc = (hi["script_s"] - lo["script_s"]) / extra
        out["marginal"] = {"from": lo["vfs"], "to": hi["vfs"], "testbed_ms_per_vf": round(tb * 1000, 2),
                           "script_ms_per_vf": round(sc * 1000, 2), "ratio": round(sc / tb, 2)}
        print(f"marginal up+down per VF ({hi['vfs']}-VF run minus {lo['vfs']}-VF run, / {extra}): testbed "
              f"{tb * 1000:.1f} ms, ip script {sc * 1000:.1f} ms: {sc / tb:.2f}x")
    figures.write(args.json_out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
