"""Every benchmark of issue 10 in one guest boot, then one table: figure, reference, ratio, target, met.

Run from the checkout's root, in the VM lane (the benchmarks need root, bonding and cls_flower)::

    flock /tmp/testbed-guest.lock testbed vm --kernel 7.3 --timeout 2400 -- \\
        python benchmarks/run_all.py --out bench-out

Steps, each a process of its own that writes its figures (``--json-out``) into ``--out``:

* ``startup``: ``testbed up topologies/active-backup.yaml`` (lab ``ab``, with its agent), then
  ``bench_startup.py --lab ab``: ``list``, ``status --json``, ``fail``, ``restore`` and a refused ``up``
  next to ``python3 -c pass`` and ``python3 -c 'import pyroute2'``; then ``testbed down ab``;
* ``agent``: ``bench_agent.py``: failover with 2, 64 and 256 VFs x active-backup, hash and vf-split
  (event->applied p50/p99, rule changes per failover, the agent's start-up to its first reconcile and
  its RSS), full resync of 256 VFs vs ``tc -batch``;
* ``lab``: ``bench_lab.py --vfs 32,256``: up+down marginal cost per VF vs the ``ip``/``tc`` script;
* ``gap``: ``bench_gap.py``: ``traffic failover`` on ``topologies/active-backup.yaml`` (vf0, rdma0), each
  offload stream's gap at the failure over the bond's own in the same round.

``--only agent,lab`` runs some; ``--summary`` prints the table again from an ``--out`` directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import figures

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEPS = ("startup", "agent", "lab", "gap")
STARTUP_LAB = ("topologies/active-backup.yaml", "ab", "server:pf0")
CLI_TARGET = ("testbed list", "testbed status --json", "testbed fail", "testbed restore")  # <= 3x bare start
Row = Tuple[str, str, str, str, Optional[bool]]  # figure, measured, reference, target, met (None: no target)


def run(argv: List[str], ok: Tuple[int, ...] = (0,)) -> bool:
    print(f"\n## {' '.join(argv)}", flush=True)
    t = time.perf_counter()
    rc = subprocess.run(argv, cwd=ROOT).returncode
    print(f"## exit {rc} after {time.perf_counter() - t:.0f} s", flush=True)
    return rc in ok


def step_startup(out: str, args: argparse.Namespace) -> None:
    topo, lab, port = STARTUP_LAB
    testbed = [sys.executable, "-m", "testbed"]
    if run(testbed + ["up", topo, "--quiet"]):
        try:
            run([sys.executable, os.path.join(HERE, "bench_startup.py"), "--lab", lab, "--port", port,
                 "-n", str(args.startup_runs), "--json-out", os.path.join(out, "startup.json")])
        finally:
            run(testbed + ["down", lab, "--quiet"])


def step_agent(out: str, args: argparse.Namespace) -> None:
    run([sys.executable, os.path.join(HERE, "bench_agent.py"), "--vfs", "2,64,256",
         "--offload", "active-backup,hash,vf-split", "--resync-vfs", "256", "--rounds", str(args.rounds),
         "--json-out", os.path.join(out, "agent.json")] + (["--profile"] if args.profile else []))


def step_lab(out: str, args: argparse.Namespace) -> None:
    run([sys.executable, os.path.join(HERE, "bench_lab.py"), "--vfs", "32,256", "--rounds", str(args.lab_rounds),
         "--json-out", os.path.join(out, "lab.json")])


def step_gap(out: str, args: argparse.Namespace) -> None:
    run([sys.executable, os.path.join(HERE, "bench_gap.py"), "--rounds", str(args.gap_rounds),
         "--json-out", os.path.join(out, "gap.json")])


RUNNERS: Dict[str, Callable[[str, argparse.Namespace], None]] = {
    "startup": step_startup, "agent": step_agent, "lab": step_lab, "gap": step_gap}


def startup_rows(st: Dict[str, Any], ag: Optional[Dict[str, Any]]) -> List[Row]:
    by = {r["command"]: r for r in st["rows"]}
    bare, pyr = by["python3 -c pass"]["median_s"], by["python3 -c 'import pyroute2'"]["median_s"]
    ref = f"python3 -c pass {bare:.3f} s, import pyroute2 {pyr:.3f} s"
    rows: List[Row] = []
    for r in st["rows"]:
        if r["command"].startswith("python3"):
            continue
        targeted = r["command"].startswith(CLI_TARGET)
        rows.append((r["command"], f"{r['median_s']:.3f} s = {r['ratio']:.2f}x bare", ref,
                     "<= 3x bare" if targeted else "-", r["ratio"] <= 3 if targeted else None))
    for fo in (ag or {}).get("failover") or []:
        if fo["offload"] == "hash":
            rows.append((f"agent start -> first reconcile, {fo['vfs']} VFs",
                         f"{fo['start_s']:.2f} s = {fo['start_s'] / bare:.1f}x bare", ref, "-", None))
    return rows


def agent_rows(ag: Dict[str, Any]) -> List[Row]:
    rows: List[Row] = []
    fos = ag.get("failover") or []
    for fo in fos:
        rows.append((f"failover {fo['offload']}, {fo['vfs']} VFs ({fo['reactions']} reactions)",
                     f"p50 {fo['event_p50_ms']:.1f} ms, p99 {fo['event_p99_ms']:.1f} ms "
                     f"(the kernel's sendmsg p50 {fo['apply_p50_ms']:.1f} "
                     f"p99 {fo.get('apply_p99_ms', float('nan')):.1f}; "
                     f"wire p99 {fo['wire_p99_ms']:.1f})", "-", "p99 <= 10 ms", fo["event_p99_ms"] <= 10))
    for offload in dict.fromkeys(fo["offload"] for fo in fos):
        per = {fo["vfs"]: fo["changes"] for fo in fos if fo["offload"] == offload}
        shown = "; ".join(f"{v} VFs: {'/'.join(map(str, c))}" for v, c in per.items())
        rows.append((f"rule changes per failover/recovery, {offload}", shown, "-", "same at every VF count",
                     len({tuple(c) for c in per.values()}) == 1))
    big = [fo for fo in fos if fo["vfs"] == max(f["vfs"] for f in fos)]
    for fo in big:
        rows.append((f"agent RSS, {fo['vfs']} VFs, {fo['offload']}",
                     f"{fo['rss_mb']:.1f} MB (peak {fo['peak_rss_mb']:.1f})", "-", "<= 60 MB", fo["rss_mb"] <= 60))
    rs = ag.get("resync")
    if rs:
        rows.append((f"full resync, {rs['vfs']} VFs ({rs['rules']} rules)",
                     f"{rs['agent_s']:.3f} s: {rs['ratio']:.2f}x",
                     f"tc -batch {rs['tc_s']:.3f} s", ">= 2x", rs["ratio"] >= 2))
    return rows


def lab_rows(lb: Dict[str, Any]) -> List[Row]:
    rows: List[Row] = [(f"up+down, {r['vfs']} VFs (whole run)", f"{r['testbed_s']:.2f} s: "
                        f"{r['script_s'] / r['testbed_s']:.2f}x", f"ip/tc script {r['script_s']:.2f} s", "-", None)
                       for r in lb["runs"]]
    m = lb.get("marginal")
    if m:
        rows.append((f"up+down marginal per VF ({m['to']} - {m['from']} VFs)",
                     f"{m['testbed_ms_per_vf']:.1f} ms: {m['ratio']:.2f}x",
                     f"ip/tc script {m['script_ms_per_vf']:.1f} ms",
                     ">= 5x", m["ratio"] >= 5))
    return rows


def gap_rows(gp: Dict[str, Any]) -> List[Row]:
    target = gp.get("target_ratio", 1.1)
    ref = gp.get("reference_summary") or {}

    def reference(kind: str) -> str:
        r = ref.get(kind)
        return (f"agent at normal priority: median {r['median_ratio']:.2f}x, worst {r['max_ratio']:.2f}x, "
                f"{r['within']} of {r['samples']} within" if r else "--")
    return [(f"traffic failover gap / bond's gap, {kind} ({v['samples']} streams)",
             f"median {v['median_ratio']:.2f}x, worst {v['max_ratio']:.2f}x, {v['within']} within",
             reference(kind), f"<= {target}x", v["max_ratio"] <= target)
            for kind, v in (gp.get("summary") or {}).items()]


def summary(out: str) -> None:
    docs = {name: figures.read(os.path.join(out, f"{name}.json")) for name in STEPS}
    kernels = sorted({d["kernel"] for d in docs.values() if d})
    print(f"\n== summary ({out}; kernel {', '.join(kernels) or '?'}; {os.cpu_count()} CPUs; "
          f"guest load average {os.getloadavg()[0]:.2f})")
    rows: List[Row] = []
    if docs["startup"]:
        rows += startup_rows(docs["startup"], docs["agent"])
    if docs["agent"]:
        rows += agent_rows(docs["agent"])
    if docs["lab"]:
        rows += lab_rows(docs["lab"])
    if docs["gap"]:
        rows += gap_rows(docs["gap"])
    missing = [name for name, d in docs.items() if d is None]
    widths = [max(len(r[i]) for r in rows) if rows else 8 for i in range(4)]
    for fig, got, ref, target, met in rows:
        verdict = "-" if met is None else ("met" if met else "NOT MET")
        print(f"{fig:{widths[0]}}  {got:{widths[1]}}  {ref:{widths[2]}}  {target:{widths[3]}}  {verdict}")
    if missing:
        print(f"(no figures from: {', '.join(missing)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="directory for the figures files (default: a new temporary one)")
    ap.add_argument("--only", type=figures.comma_list(str), default=list(STEPS), help=f"of {','.join(STEPS)}")
    ap.add_argument("--rounds", type=int, default=15, help="failover + recovery rounds per agent run")
    ap.add_argument("--lab-rounds", type=int, default=1, help="rounds of each bench_lab size")
    ap.add_argument("--gap-rounds", type=int, default=5, help="failover verifications of bench_gap")
    ap.add_argument("--startup-runs", type=int, default=5, help="runs per CLI command (median shown)")
    ap.add_argument("--profile", action="store_true", help="bench_agent: one full resync under cProfile")
    ap.add_argument("--summary", action="store_true", help="only print the table from --out")
    args = ap.parse_args()
    bad = set(args.only) - set(STEPS)
    if bad:
        ap.error(f"--only: unknown step {', '.join(sorted(bad))}; one of {', '.join(STEPS)}")
    out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="testbed-bench-"))
    if not args.summary:
        os.makedirs(out, exist_ok=True)
        print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, figures into {out}", flush=True)
        for name in STEPS:
            if name in args.only:
                stale = os.path.join(out, f"{name}.json")
                if os.path.exists(stale):
                    os.unlink(stale)
                RUNNERS[name](out, args)
    summary(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
