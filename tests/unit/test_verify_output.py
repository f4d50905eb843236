"""Results as text, as PNG, and through the ``testbed traffic`` command (host, no lab needed)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from testbed import cli
from testbed.verify.checks import check
from testbed.verify.failover import FailoverResult, FailoverTolerance, StreamMeta, evaluate_failover
from testbed.verify.hashdist import HashResult, HashTolerance, evaluate_moves, evaluate_phase
from testbed.verify.plot import plot
from testbed.verify.render import render
from testbed.verify.txhash import BondHashResult, FlowObservation, evaluate_policy
from traffic.records import RxRecord

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START = 1_700_000_000_000_000_000
MS = 1_000_000


def failover_result() -> FailoverResult:
    metas = [StreamMeta("vf0 rx", "server:vf0", "vf", "rx"), StreamMeta("rdma0 rx", "server:rdma0", "rdma", "rx"),
             StreamMeta("bond rx", "server:bond", "bond", "rx")]
    recs, wires = {}, {}
    for i, m in enumerate(metas):
        kind = "roce" if m.kind == "rdma" else "udp"
        recs[m.name] = [RxRecord(i, 0, k, START + k * 10 * MS, START + k * 10 * MS + 50_000, 1, "x", kind, 1, 2,
                                 k if kind == "roce" else None, True if kind == "roce" else None)
                        for k in range(300) if not 100 <= k < 103]
        wires[m.name] = [RxRecord(i, 0, k, START + k * 10 * MS, START + k * 10 * MS + 20_000, 1,
                                  "pf0" if k < 100 else "pf1", kind, 1, 2) for k in range(300)]
    events = [("fail server:pf0", START + 1000 * MS, START + 1001 * MS)]
    figs, checks, series = evaluate_failover(metas, recs, wires, ticks=300, rate_pps=100, start_ns=START,
                                             events=events, failed_port="pf0")
    return FailoverResult(lab="ab", fail="server:pf0", rate_pps=100, duration_s=3, ticks=300,
                          events=[{"name": "fail server:pf0", "at_s": 1.0, "took_ms": 1.0, "error": None}],
                          tolerance=FailoverTolerance(), streams=figs, checks=checks, series=series,
                          agent={"reactions": [{"trigger": "bond0,pf0", "usable": ["pf1"], "latency_ms": 3.1,
                                                "done_after_event_ms": 14.2, "error": None}]},
                          send={"max_late_ms": 2.0})


def hash_result() -> HashResult:
    rnd = random.Random(5)
    placement = {f: rnd.choice(("pf0", "pf1")) for f in range(64)}
    dest = [RxRecord(1, s % 64, s, s, s, 1, "eth0", "udp", 1, 2) for s in range(256)]
    wires = [RxRecord(1, s % 64, s, s, s, 1, placement[s % 64], "udp", 1, 2) for s in range(256)]
    fig, checks = evaluate_phase("before", "tx", dest, wires, sent=256, flows=64,
                                 expected_share={"pf0": 0.5, "pf1": 0.5})
    mv, c2 = evaluate_moves("tx", placement, {f: "pf1" for f in placement}, dict(placement), "pf0")
    buckets = {"before": [{"entry": e, "port": "pf0" if e < 16 else "pf1", "packets": 8, "flows": 2.0}
                          for e in range(32)]}
    return HashResult(lab="aah", target="server:vf0", flows=64, packets_per_flow=4, fail="server:pf0",
                      fault="carrier", directions=["tx"], phases=[fig], moves={"tx": mv}, buckets=buckets,
                      tables={}, tolerance=HashTolerance(), checks=checks + c2)


def bondhash_result() -> BondHashResult:
    obs = [FlowObservation("raw", i, bytes(64), {"pf0" if i % 2 else "pf1": 1}) for i in range(4)]
    fig, checks = evaluate_policy("layer2", ["pf0", "pf1"], obs, expected_flows=4)
    return BondHashResult(lab="aah", mode="balance-xor", policies=[fig], checks=checks)


def test_failover_table_shows_the_offload_gap_next_to_the_bonds():
    text = render(failover_result())
    assert text.startswith("lab ab: fail server:pf0 at 1 s; 3 streams x 100 pps for 3 s")
    assert ("vf0 rx: gap 40.0 ms next to the bond's 40.0 ms; lost 3 (bond 3): 3 in the bond's window, "
            "0 while the agent reacted, 0 beyond") in text
    assert "pf0 > pf1 > -" in text and "ICRC bad" in text
    assert "agent: bond0,pf0: rules applied 14.2 ms after the failure began (event->applied 3.1 ms)" in text
    assert text.rstrip().endswith("checks)") and "verdict: PASS" in text


def test_failed_checks_are_listed_and_verbose_lists_all():
    res = failover_result()
    res.checks.append(check("vf0 rx: invented", 3, False, "0"))
    text = render(res)
    assert "failed checks:\n  FAIL vf0 rx: invented: 3 (want 0)" in text and "verdict: FAIL" in text
    assert render(res, verbose=True).count("ok   ") == len(res.checks) - 1


def test_hash_and_bondhash_tables():
    text = render(hash_result())
    assert "64 flows to/from server:vf0, 4 packets each; fail server:pf0 (carrier)" in text
    assert "flows pf0" in text and "tx: after the repair 64/64 flows are back on their port" in text
    assert "tx flows per table entry" in text
    text = render(bondhash_result())
    assert "layer2" in text and "verdict:" in text


@pytest.mark.parametrize("make", [failover_result, hash_result, bondhash_result])
def test_plots_are_png_files(make, tmp_path):
    path = str(tmp_path / "out.png")
    assert plot(make(), path) == path
    with open(path, "rb") as fh:
        data = fh.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 700 and height >= 400


def test_results_serialize():
    for res in (failover_result(), hash_result(), bondhash_result()):
        d = json.loads(json.dumps(res.to_dict()))
        assert d["kind"] in ("failover", "hash", "bondhash") and d["verdict"] in ("PASS", "FAIL")


@pytest.mark.parametrize("check_name", ["failover", "rdma", "hash", "bondhash"])
def test_traffic_subcommands_have_help(check_name, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["traffic", check_name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: testbed traffic {check_name}")
    assert "--json" in out and "--plot" in out and "--pcap" in out and "exit status" in out


def test_defaults_parse():
    args = cli.build_parser().parse_args(["traffic", "failover", "ab"])
    assert (args.lab, args.target, args.fail, args.rate, args.direction, args.restore_after) == \
        ("ab", None, "server:pf0", None, "both", None)  # rate None: 100 pps, lowered for many streams
    args = cli.build_parser().parse_args(["traffic", "hash", "aah", "--fail", "server:pf1", "--fault", "lacp"])
    assert (args.flows, args.fail, args.fault, args.no_restore) == (256, "server:pf1", "lacp", False)


def test_cli_start_imports_no_scapy_matplotlib_or_verify():
    code = ("import sys; from testbed import cli; cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scapy', 'matplotlib') "
            "or m.startswith('testbed.verify')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env=dict(os.environ, PYTHONPATH=ROOT)).stdout
    assert out.strip() == "[]"


def test_unknown_lab_is_an_error_not_a_verdict(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TESTBED_RUN_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "testbed", "traffic", "failover", "nosuchlab"], capture_output=True,
                         text=True, cwd=ROOT, env=env, check=False)
    assert res.returncode == (6 if os.geteuid() == 0 else 4), res.stderr
    assert "nosuchlab" in res.stderr or "root" in res.stderr
