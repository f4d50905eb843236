"""Benchmark (not a test): start-up cost of the CLI, as wall time against the bare interpreter.

Every ``testbed`` command pays Python's imports before it does anything; under TCG (the VM lane) that is
~13x the host's, and the guest reads each module over 9p, so the module count matters as well. Each row is
the median wall time of N runs of one command, with its ratio to ``python -c pass`` measured the same way:

    python benchmarks/bench_startup.py [-n 7] [--json]                    # anywhere: no lab needed
    sudo python benchmarks/bench_startup.py --lab ab --port server:pf0    # with lab ``ab`` up (e.g. in the guest)

With ``--lab`` it adds ``status --json``, ``fail HOST:PORT`` then ``restore HOST:PORT`` (each fail is
followed by its restore, so the lab ends as it began), and a refused ``up`` (the lab's own file again, under
the lab's name: a name clash, exit 5, refused before anything is built). Commands run as ``python -m testbed`` from this
checkout; the module count of each is printed by ``python -X importtime`` (the ``modules`` column).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

import figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = [sys.executable]
TESTBED = PY + ["-m", "testbed"]


def env() -> Dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def run_once(argv: List[str], ok: tuple) -> float:
    t = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t
    if proc.returncode not in ok:
        raise SystemExit(f"bench_startup: {' '.join(argv[1:])}: exit {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace').strip()[-400:]}")
    return elapsed


def module_count(argv: List[str], ok: tuple) -> Optional[int]:
    """Modules imported by the command (``-X importtime`` lines on stderr); None for a non-Python row."""
    if argv[:1] != PY:
        return None
    proc = subprocess.run(argv[:1] + ["-X", "importtime"] + argv[1:], cwd=ROOT, env=env(),
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode not in ok:
        return None
    return sum(1 for line in proc.stderr.decode(errors="replace").splitlines() if line.startswith("import time:")) - 1


def rows(args: argparse.Namespace) -> List[tuple]:
    """(label, [argv, ...] run in turn per round, accepted exit codes)."""
    out = [("python3 -c pass", [PY + ["-c", "pass"]], (0,)),
           ("python3 -c 'import pyroute2'", [PY + ["-c", "import pyroute2"]], (0,)),
           ("testbed --help", [TESTBED + ["--help"]], (0,)),
           ("testbed list", [TESTBED + ["list"]], (0,))]
    if args.lab:
        host, _, port = args.port.partition(":")
        out += [("testbed status --json", [TESTBED + ["status", args.lab, "--json"]], (0,)),
                (f"testbed fail {args.port}", [TESTBED + ["fail", args.lab, host, port]], (0,)),
                (f"testbed restore {args.port}", [TESTBED + ["restore", args.lab, host, port]], (0,)),
                ("testbed up (refused: name clash)", [TESTBED + ["up", lab_file(args), "--name", args.lab]], (5,))]
    return out


def lab_file(args: argparse.Namespace) -> str:
    """The topology file to ``up`` again: ``--file``, else the one the lab was built from (its record says;
    a relative path is taken from this checkout)."""
    if args.file:
        return os.path.abspath(args.file)
    sys.path.insert(0, ROOT)
    from testbed import labstore
    from testbed.errors import TestbedError

    try:
        path = os.path.join(ROOT, labstore.read(args.lab).file)
    except TestbedError as exc:
        raise SystemExit(f"bench_startup: {exc}") from None
    if not os.path.isfile(path):
        raise SystemExit(f"bench_startup: lab {args.lab} was built from {path}, which is not here: give --file")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--runs", type=int, default=7, help="runs per command; the median is shown (default 7)")
    ap.add_argument("--lab", help="a lab that is up: adds status, fail, restore and a refused up (needs root)")
    ap.add_argument("--port", default="server:pf0", help="HOST:PORT to fail and restore (default server:pf0)")
    ap.add_argument("--file", help="topology file for the refused up (default: the lab's own)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--json-out", help="also write that object here")
    args = ap.parse_args()
    table = rows(args)
    times: Dict[str, List[float]] = {label: [] for label, _, _ in table}
    for _ in range(args.runs):  # interleaved rounds: a slow spell of the machine hits every row alike
        for label, argvs, ok in table:
            times[label].append(run_once(argvs[0], ok))
    result = []
    base = statistics.median(times[table[0][0]])
    for label, argvs, ok in table:
        med = statistics.median(times[label])
        result.append({"command": label, "median_s": round(med, 4), "ratio": round(med / base, 2),
                       "modules": module_count(argvs[0], ok), "runs": args.runs})
    doc = {"python": sys.version.split()[0], "root": ROOT, "rows": result}
    figures.write(args.json_out, doc)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{'command':36} {'median':>9} {'x bare':>7} {'modules':>8}   ({args.runs} runs each)")
        for r in result:
            mods = "" if r["modules"] is None else r["modules"]
            print(f"{r['command']:36} {r['median_s']:8.3f}s {r['ratio']:6.2f}x {mods:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
