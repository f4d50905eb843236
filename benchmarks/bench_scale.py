"""Benchmark (not a test): `up` and `down` of a many-VF lab, and where their time goes.

Run where the kernel has bonding (the VM lane), as root:

    sudo testbed vm --kernel 7.3 -- python benchmarks/bench_scale.py [FILE] [--profile] [--no-cli]

1. the CLI as a user runs it (`testbed up FILE`, `testbed status LAB --json`, `testbed down LAB`), each
   a process of its own, wall time each (imports included);
2. in this process, `bringup.up(agent=False)` then `teardown.down`, each progress line time-stamped and
   the time summed per kind of step (``create namespace``, ``host server``, ...); with ``--profile``
   under cProfile, printing the functions that took the most time (the netlink round trips, forks and
   namespace work show up by name).

FILE defaults to topologies/many-vfs.yaml (256 VFs). Compare only figures measured in the same boot.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import subprocess
import sys
import time
from collections import OrderedDict
from typing import Callable, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from testbed import bringup, loader, teardown  # noqa: E402


def cli(*argv: str) -> Tuple[float, str]:
    """Run ``python -m testbed ARGV``; its wall time and stdout; exit if it failed."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "testbed", *argv], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    took = time.perf_counter() - t
    if res.returncode:
        sys.exit(f"testbed {' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    return took, res.stdout


class Steps:
    """A progress callback that sums the time until the next line per kind of step."""

    def __init__(self) -> None:
        self.lines: List[Tuple[float, str]] = []

    def __call__(self, msg: str) -> None:
        self.lines.append((time.perf_counter(), msg))

    def summary(self, end: float) -> OrderedDict[str, Tuple[int, float]]:
        out: OrderedDict[str, Tuple[int, float]] = OrderedDict()
        stamps = self.lines + [(end, "")]
        for (t, msg), (t_next, _) in zip(stamps, stamps[1:]):
            kind = re.sub(r"\S*\d\S*", "N", " ".join(msg.split()[:2]))
            n, s = out.get(kind, (0, 0.0))
            out[kind] = (n + 1, s + t_next - t)
        return out


def timed(label: str, fn: Callable[[Steps], object], profile: bool) -> None:
    steps = Steps()
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    fn(steps)
    if prof:
        prof.disable()
    end = time.perf_counter()
    print(f"{label}: {end - t:.1f} s{' (under cProfile)' if prof else ''}")
    for kind, (n, s) in steps.summary(end).items():
        print(f"  {s:8.1f} s  {n:4d} x  {kind}")
    if prof:
        for order in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats(order).print_stats(22)
            lines = buf.getvalue().splitlines()
            head = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
            print(f"  top by {order}:")
            print("\n".join(line for line in lines[head:] if line.strip()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", default=os.path.join(ROOT, "topologies", "many-vfs.yaml"))
    ap.add_argument("--profile", action="store_true", help="cProfile the in-process up and down")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI's up/status/down")
    ap.add_argument("--agent-timeout", type=float, default=1800.0, help="for the CLI's up (s)")
    ap.add_argument("--no-inproc", action="store_true", help="skip the in-process up/down")
    args = ap.parse_args()
    topo = loader.load(args.file)
    vfs = sum(len(h.nic.vfs) for h in topo.hosts if h.nic)
    print(f"{args.file}: lab {topo.name}, {vfs} VFs, {len(topo.netns_names)} namespaces, kernel {os.uname().release}")
    if not args.no_cli:
        up, out = cli("up", args.file, "--json", "--agent-timeout", str(args.agent_timeout))
        agent = json.loads(out).get("agent_ready_s")
        st, _ = cli("status", topo.name, "--json")
        down, _ = cli("down", topo.name, "--quiet")
        print(f"cli: up {up:.1f} s (agent ready in {agent} s of it), status --json {st:.1f} s, down {down:.1f} s")
    if not args.no_inproc:
        timed("in-process up (no agent)", lambda p: bringup.up(topo, agent=False, progress=p), args.profile)
        timed("in-process down", lambda p: teardown.down(topo.name, progress=p), args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
