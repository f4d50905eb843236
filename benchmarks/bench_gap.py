"""Benchmark (not a test): the VF and RDMA gaps at a failover against the bond's own gap, same run.

Issue 10's acceptance: ``testbed traffic failover`` on ``topologies/active-backup.yaml`` in a quiet guest,
VF and RDMA gaps <= 1.1x the bond's own. Each round is one failover verification (vf0 and rdma0 streams
beside the bond's, both directions, ``server:pf0`` failed 1 s in and repaired 1.5 s later); a stream's
ratio is its gap at the failure over the bond's gap in the same direction of the same round::

    sudo python benchmarks/bench_gap.py [--rounds 5] [--phases 1] [--json-out FILE]   # root, bonding, flower

The reference, in the same guest: the same rounds with the agent at normal priority
(``TESTBED_AGENT_PRIORITY=normal``) instead of real-time while it waits and reacts (``agent.priority``);
``--phases N`` alternates N labs of each. Each phase brings the lab up (lab ``ab``; refused if it exists)
and down. The table shows per round and direction
the bond's gap and each offload stream's, and the verdicts of the verification; the last lines the
median and the worst ratio per stream kind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Any, Dict, List

import figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TOPOLOGY = os.path.join(ROOT, "topologies", "active-backup.yaml")
TARGET = 1.1


def round_figures(res: Any) -> List[Dict[str, Any]]:
    """Per offload stream of one verification: its gap at the failure, the bond's (same direction), ratio."""
    bond = {s.direction: s.fail_gap_ms for s in res.streams if s.kind == "bond"}
    out = []
    for s in res.streams:
        if s.kind == "bond" or s.fail_gap_ms is None or not bond.get(s.direction):
            continue
        out.append({"stream": s.name, "kind": s.kind, "gap_ms": round(s.fail_gap_ms, 1),
                    "bond_gap_ms": round(bond[s.direction], 1), "ratio": round(s.fail_gap_ms / bond[s.direction], 3)})
    return out


def run_rounds(mode: str, rounds: int) -> List[Dict[str, Any]]:
    """``rounds`` verifications on a lab whose agent runs at ``mode`` priority (agent.priority)."""
    from testbed.agent.priority import ENV
    from testbed.lab import Lab

    os.environ[ENV] = mode  # the agent `up` starts inherits it
    lab = Lab.up(TOPOLOGY)
    out: List[Dict[str, Any]] = []
    try:
        for i in range(rounds):
            res = lab.traffic.failover(targets=["server:vf0", "server:rdma0"], fail="server:pf0",
                                       restore_after_s=1.5)
            rows = round_figures(res)
            reactions = [{k: r.get(k) for k in ("trigger", "latency_ms", "done_after_event_ms")}
                         for r in res.agent.get("reactions", [])]
            out.append({"round": i + 1, "priority": mode, "verdict": res.verdict,
                        "max_send_late_ms": res.send["max_late_ms"], "streams": rows, "reactions": reactions})
            for r in rows:
                print(f"{mode:8} round {i + 1}  {r['stream']:9} gap {r['gap_ms']:7.1f} ms  bond "
                      f"{r['bond_gap_ms']:7.1f} ms  {r['ratio']:.2f}x", flush=True)
            for r in reactions:  # the agent's: event -> rules applied, and when after the failure call
                print(f"{mode:8} round {i + 1}  agent {r['trigger']}: {r['latency_ms']} ms, rules in place "
                      f"{r['done_after_event_ms']} ms after the failure call", flush=True)
            print(f"{mode:8} round {i + 1}  verdict {res.verdict}; sender at most {res.send['max_late_ms']} ms "
                  "late", flush=True)
    finally:
        lab.down()
    return out


def summarize(mode: str, rounds: List[Dict[str, Any]]) -> Dict[str, Any]:
    summary: Dict[str, Any] = {}
    latencies = [r["latency_ms"] for rd in rounds for r in rd["reactions"] if r.get("latency_ms") is not None]
    for kind in ("vf", "rdma"):
        ratios = [r["ratio"] for rd in rounds for r in rd["streams"] if r["kind"] == kind]
        if ratios:
            summary[kind] = {"median_ratio": round(statistics.median(ratios), 3), "max_ratio": max(ratios),
                             "samples": len(ratios), "within": sum(x <= TARGET for x in ratios),
                             "agent_latency_ms_median": round(statistics.median(latencies), 1) if latencies else None}
            print(f"{mode:8} {kind}: gap / bond's gap median {summary[kind]['median_ratio']:.2f}x, worst "
                  f"{summary[kind]['max_ratio']:.2f}x; {summary[kind]['within']} of {len(ratios)} <= {TARGET}x; "
                  f"agent event->applied median {summary[kind]['agent_latency_ms_median']} ms", flush=True)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="verifications per phase")
    ap.add_argument("--phases", type=int, default=1,
                    help="pairs of labs, the agent at real-time priority (the product) then at normal priority "
                         "(the reference, TESTBED_AGENT_PRIORITY=normal); 0: the product only")
    ap.add_argument("--json-out", metavar="FILE")
    args = ap.parse_args()
    modes = ["realtime", "normal"] * args.phases or ["realtime"]
    rounds: Dict[str, List[Dict[str, Any]]] = {"realtime": [], "normal": []}
    for mode in modes:
        rounds[mode] += run_rounds(mode, args.rounds)
    summary = summarize("realtime", rounds["realtime"])
    reference = summarize("normal", rounds["normal"]) if rounds["normal"] else None
    figures.write(args.json_out, {"rounds": rounds["realtime"], "summary": summary, "target_ratio": TARGET,
                                  "reference_rounds": rounds["normal"], "reference_summary": reference})
    return 0


if __name__ == "__main__":
    sys.exit(main())
