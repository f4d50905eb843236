"""The offload agent against ``tc -batch``: full-resync rules/s; failover event->applied latency, rule changes, RSS.

Not a test. Needs root, bonding and cls_flower; run it in the VM lane (or all benchmarks: ``run_all.py``)::

    testbed vm --kernel 7.3 --timeout 1200 -- python benchmarks/bench_agent.py \
        [--vfs 2,64,256] [--offload active-backup,hash,vf-split] [--resync-vfs 256] [--rounds 25] [--json-out F]

Layout, one namespace per run (``<lab>-server``), built with ``ip -batch``::

    swp0 ═ pf0 ─┐
    swp1 ═ pf1 ─┴─ bond0 (balance-xor, miimon 10;      clsact on pf0, pf1 (ingress_block 2) and every rep
                          active-backup: primary pf0)  (ingress_block 1): ``rules.bindings``
    vf0-rep ═ vf0 ... vfN-rep ═ vfN, rdma0-rep ═ rdma0  (peers stay in the namespace)

The rules are the agent's own: ``rules.plan(nic, state)`` for the bond's real state (256 VFs x 2 ports x
16 buckets, offload ``hash``: about 3,600 filters).

* **full resync** (``--resync-vfs``, offload hash): ``NicReconciler.reconcile(full=True)`` on an empty
  eswitch (read the bond, clsact check on every device, dump, diff, apply) against ``tc -batch`` adding
  the same rules. ``tc`` has no keyword for flower's hash key, so its lines match a stand-in ``src_mac``
  per hash value instead (same number of keys, same actions and cookies, same prio/handle). Runs
  alternate (tc, agent, tc, agent, ...), each in a fresh namespace; every run is checked by counting the
  filters the kernel holds. Also timed: a second full resync that finds everything right (what a
  restarted agent costs). ``--profile``: one more agent run under cProfile.
* **failover** (every ``--offload`` x ``--vfs``): the real agent (``launcher.start``, its own process;
  its start-up wall time up to its first full reconcile is reported); ``swp0`` down then up, ``--rounds``
  times; until the agent reports the ports the bond now uses (the script sleeps until the agent replaces
  agent.json: inotify, no polling beside the agent on the guest's one TCG thread), then: the agent's own event->applied
  latency of each reaction that changed rules (agent.json), the rules changed per event (all its
  reactions), and wire->applied (this script sets the wire, the agent stamps completion). The agent's
  VmRSS/VmHWM from /proc after the rounds.

Compare only ratios measured in the same boot.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import figures  # noqa: E402
import yaml  # noqa: E402

from testbed import (  # noqa: E402
    labstore,
    loader,
    nlpipe,  # noqa: E402
    teardown,
)
from testbed.agent import launcher, rules  # noqa: E402
from testbed.agent import status as agent_status  # noqa: E402
from testbed.agent.reconcile import NicReconciler  # noqa: E402
from testbed.agent.status import ReactionStatus  # noqa: E402
from testbed.bond.ports import usable_ports  # noqa: E402
from testbed.bond.state import read_state  # noqa: E402
from testbed.errors import WaitTimeout  # noqa: E402
from testbed.inotify import IN_MOVED_TO, DirWatch  # noqa: E402
from testbed.nl import open_ns, wait_until  # noqa: E402
from testbed.tc import ops  # noqa: E402
from testbed.tc.rule import Rule  # noqa: E402
from testbed.topology import Host  # noqa: E402

MODULES = ("bonding", "cls_flower", "act_mirred", "act_gact", "sch_ingress", "veth")


def topology_text(vfs: int, offload: str, buckets: int) -> str:
    bond = ("{mode: active-backup, miimon: 10, primary: pf0}" if offload == "active-backup"
            else "{mode: balance-xor, miimon: 10, xmit_hash_policy: layer3+4}")
    return f"""
name: bench
hosts:
  server:
    nic:
      bond: {bond}
      offload: {{mode: {offload}, buckets: {buckets}}}
      vfs: {vfs}
      rdma: true
"""


def remove(host: Host) -> None:
    subprocess.run(["ip", "netns", "del", host.netns], check=True)


def build(host: Host) -> None:
    """The NIC namespace of ``host``: ports with live peers, the bond, representors, clsact."""
    nic = host.nic
    ns = host.netns
    # ip, not pyroute2's netns.create: its helper process timed out under TCG in a loaded boot
    subprocess.run(["ip", "netns", "add", ns], check=True)
    lines = ["link set lo up"]
    for i, port in enumerate(nic.ports):
        lines += [f"link add {port} type veth peer name swp{i}", f"link set swp{i} up"]
    lines.append(f"link add {nic.bond.name} address {nic.mac} type bond mode {nic.bond.mode} miimon 10")
    lines += [f"link set {p} master {nic.bond.name}" for p in nic.ports]
    if nic.bond.mode == "active-backup":
        lines.append(f"link set {nic.bond.name} type bond primary {nic.ports[0]}")
    lines += [f"link set {p} up" for p in nic.ports] + [f"link set {nic.bond.name} up"]
    for fn in nic.functions:
        lines += [f"link add {fn.rep} address {nic.mac} type veth peer name {fn.name}", f"link set {fn.name} up",
                  f"link set {fn.rep} up"]
    subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)
    qdiscs = [f"qdisc add dev {d} ingress_block {ib} clsact" if ib else f"qdisc add dev {d} clsact"
              for d, (ib, _eb) in rules.bindings(nic).items()]
    subprocess.run(["tc", "-n", ns, "-batch", "-"], input="\n".join(qdiscs) + "\n", text=True, check=True)


def expected_usable(nic, failed: bool) -> Tuple[str, ...]:
    """The ports the bond uses with ``swp0`` down (``failed``) or with both up (active-backup: primary pf0)."""
    if failed:
        return tuple(nic.ports[1:])
    return nic.ports[:1] if nic.bond.mode == "active-backup" else tuple(nic.ports)


def wait_bond_up(ipr, host: Host) -> None:
    want = set(expected_usable(host.nic, failed=False))
    wait_until(lambda: set(usable_ports(host.nic, read_state(ipr, host.nic))) == want, 30,
               f"{host.netns}: {sorted(want)} usable in bond0")


def tc_line(r: Rule) -> str:
    """``tc -batch`` line for a rule; the hash key becomes a stand-in src_mac (tc has no hash keyword)."""
    m = r.match
    proto = f"0x{m.eth_type:04x}" if m.eth_type else "all"
    where = f"block {r.block}" if r.block else f"dev {r.dev} {r.hook}"
    out = [f"filter add {where} chain {r.chain} prio {r.prio} handle {r.handle} protocol {proto} flower"]
    if r.skip_hw:
        out.append("skip_hw")
    if m.indev:
        out.append(f"indev {m.indev}")
    if m.dst_mac:
        out.append(f"dst_mac {m.dst_mac}" + (f"/{m.dst_mac_mask}" if m.dst_mac_mask else ""))
    if m.src_mac:
        out.append(f"src_mac {m.src_mac}" + (f"/{m.src_mac_mask}" if m.src_mac_mask else ""))
    if m.hash is not None:
        out.append(f"src_mac 02:00:00:01:{m.hash >> 8:02x}:{m.hash & 0xFF:02x}")
    if m.ip_proto is not None:
        out.append({17: "ip_proto udp", 6: "ip_proto tcp"}[m.ip_proto])
    if m.dst_ip:
        out.append(f"dst_ip {m.dst_ip}")
    if m.dst_port is not None:
        out.append(f"dst_port {m.dst_port}")
    cookie = r.label.encode().hex()
    for a in r.actions:
        if a.kind in ("redirect", "mirror"):
            out.append(f"action mirred {'ingress' if a.ingress else 'egress'} {a.kind} dev {a.dev}")
        elif a.kind == "goto":
            out.append(f"action gact goto chain {a.chain}")
        else:
            out.append(f"action gact {a.kind}")
        if cookie:
            out.append(f"cookie {cookie}")
    return " ".join(out)


def count(ipr, devs: List[str]) -> int:
    """Filters the kernel holds on the devices' own clsact hooks and in the shared blocks (raw dump, no
    decoding): ``ops.filter_queries``, the agent's own dump requests."""
    total = 0
    for what, query in ops.filter_queries(ipr, devs, rules.BLOCKS):
        for raw in nlpipe.dump(ipr, ops.RTM_GETTFILTER, query, what):
            total += ops._TCMSG.unpack_from(raw, nlpipe.HDR.size)[2] != 0  # handle 0: a classifier's header
    return total


def failover(topo_text: str, host: Host, lab: str, rounds: int) -> Dict[str, Any]:
    """Start the real agent on ``host``'s namespace; ``swp0`` down/up ``rounds`` times; what it reported."""
    rec = labstore.LabRecord(name=lab, file="<bench>", topology=yaml.safe_load(topo_text), netns=[host.netns])
    labstore.write(rec)
    t = time.perf_counter()
    pid = launcher.start(lab, timeout=600)
    start_s = time.perf_counter() - t
    print(f"  agent (pid {pid}) up and adopted the rules in {start_s:.2f} s (process start + imports + full "
          f"resync), {figures.memory_mb(pid)['VmRSS']:.1f} MB resident", flush=True)
    out: Dict[str, Any] = {"start_s": start_s, "event_ms": [], "wire_ms": [], "apply_ms": [], "changes": [],
                           "reactions": []}

    def since(t_set: float) -> Tuple[ReactionStatus, ...]:
        """Reactions that finished after ``t_set`` (agent.json keeps the last 20)."""
        return agent_status.nic(lab, "server").reactions_since(int(t_set * 1e9))

    try:
        with open_ns(host.netns) as ipr, DirWatch(labstore.lab_dir(lab), IN_MOVED_TO) as watch:
            swp0 = ipr.link_lookup(ifname="swp0")[0]
            for i in range(2 * rounds):
                failed = i % 2 == 0
                want = expected_usable(host.nic, failed)
                t_set = time.time()
                ipr.link("set", index=swp0, state="down" if failed else "up")

                def settled(t_set: float = t_set, want: Tuple[str, ...] = want) -> bool:
                    done = [r for r in since(t_set) if r.changed]
                    return bool(done) and done[-1].usable == want

                # woken by the agent's own write of agent.json (inotify), never polling it: under
                # single-threaded TCG a poller's every wake-up takes the one host thread from the agent
                # (a poll every 20 ms read and parsed agent.json in the middle of the reactions measured)
                deadline = time.monotonic() + 120
                while not settled():
                    if not watch.wait(deadline) and time.monotonic() >= deadline:
                        raise WaitTimeout(f"the agent to apply {list(want)} after swp0 "
                                          f"{'down' if failed else 'up'}: not within 120 s")
                done = [r for r in since(t_set) if r.changed]
                if any(r.full or r.error for r in done):
                    raise RuntimeError(f"{lab}: a full resync or an error during the rounds: {done[-1].text}")
                out["event_ms"] += [r.latency_ms for r in done]
                out["apply_ms"] += [r.apply_ms for r in done]
                out["wire_ms"].append((done[-1].done_ns / 1e9 - t_set) * 1000)
                out["changes"].append(sum(r.changed for r in done))
                out["reactions"].append(len(done))
            out.update(figures.memory_mb(pid))
    except BaseException:
        with open(labstore.lab_file(lab, "agent.log")) as fh:
            print("agent.log:\n" + "".join(fh.readlines()[-15:]))
        raise
    finally:
        teardown.stop_agent(lab)
        labstore.remove(lab)
    return out


def failover_summary(fo: Dict[str, Any]) -> Dict[str, Any]:
    ev, wire = fo["event_ms"], fo["wire_ms"]
    return {"start_s": round(fo["start_s"], 3), "rss_mb": round(fo["VmRSS"], 1), "peak_rss_mb": round(fo["VmHWM"], 1),
            "events": len(wire), "reactions": len(ev),
            "event_p50_ms": round(figures.pct(ev, 0.5), 2), "event_p99_ms": round(figures.pct(ev, 0.99), 2),
            "event_max_ms": round(max(ev), 2), "apply_p50_ms": round(figures.pct(fo["apply_ms"], 0.5), 2),
            "apply_p99_ms": round(figures.pct(fo["apply_ms"], 0.99), 2),  # the sendmsg and its acks: the kernel's
            "wire_p50_ms": round(figures.pct(wire, 0.5), 2), "wire_p99_ms": round(figures.pct(wire, 0.99), 2),
            "changes": sorted(set(fo["changes"])), "event_ms_each": [round(v, 1) for v in ev]}  # (in order)


def run_failovers(offloads: List[str], counts: List[int], buckets: int, rounds: int) -> List[Dict[str, Any]]:
    out = []
    for offload in offloads:
        for vfs in counts:
            lab = f"f{offload[0]}{vfs}"
            text = topology_text(vfs, offload, buckets)
            host = loader.loads(text, lab_name=lab).host("server")
            print(f"-- failover: offload {offload}, {vfs} VFs, {rounds} rounds of swp0 down + up", flush=True)
            try:
                build(host)
                try:
                    with open_ns(host.netns, groups=0) as ipr:
                        wait_bond_up(ipr, host)
                    row = dict(offload=offload, vfs=vfs, **failover_summary(failover(text, host, lab, rounds)))
                finally:
                    remove(host)
            except Exception as exc:  # noqa: BLE001 - one failed run must not cost the others' figures
                print(f"  FAILED: {type(exc).__name__}: {exc}", flush=True)
                continue
            print(f"  event->applied p50 {row['event_p50_ms']:.1f} ms p99 {row['event_p99_ms']:.1f} ms "
                  f"(max {row['event_max_ms']:.1f}, {row['reactions']} reactions, "
                  f"apply p50 {row['apply_p50_ms']:.1f} p99 {row['apply_p99_ms']:.1f}); "
                  f"wire->applied p50 {row['wire_p50_ms']:.1f} p99 {row['wire_p99_ms']:.1f} ms; rule changes per "
                  f"failover/recovery {row['changes']}; agent RSS {row['rss_mb']} MB (peak {row['peak_rss_mb']})",
                  flush=True)
            out.append(row)
    return out


def run_resync(vfs: int, buckets: int, repeat: int, profile: bool) -> Dict[str, Any]:
    """tc -batch vs the agent's full resync of the same rules, alternating, each in a fresh namespace."""
    text = topology_text(vfs, "hash", buckets)
    labs = [f"bt{i}" if i % 2 == 0 else f"ba{i}" for i in range(2 * repeat)] + (["bp"] if profile else [])
    times: Dict[str, List[float]] = {"tc": [], "agent": [], "adopt": []}
    n = 0
    print(f"-- full resync: {vfs} VFs x 2 ports x {buckets} buckets (offload hash), {repeat} tc/agent pairs",
          flush=True)
    for lab in labs:
        host = loader.loads(text, lab_name=lab).host("server")
        t = time.perf_counter()
        build(host)
        try:
            with open_ns(host.netns, groups=0) as ipr:
                wait_bond_up(ipr, host)  # (not through rules.plan: the agent's runs below compute their own)
                devs = list(rules.devices(host.nic))
                print(f"  built {host.netns} ({len(devs)} devices) in {time.perf_counter() - t:.1f} s", flush=True)
                if lab.startswith("bt"):
                    plan = rules.plan(host.nic, read_state(ipr, host.nic))
                    n = len(plan.rules)
                    with tempfile.NamedTemporaryFile("w", suffix=".tc") as f:
                        f.write("\n".join(tc_line(r) for r in plan.rules) + "\n")
                        f.flush()
                        t = time.perf_counter()
                        subprocess.run(["tc", "-n", host.netns, "-batch", f.name], check=True)
                        dt = time.perf_counter() - t
                    label = "tc"
                elif lab == "bp":
                    prof = cProfile.Profile()
                    prof.enable()
                    NicReconciler(host, ipr).reconcile("start", time.monotonic(), full=True)
                    prof.disable()
                    buf = io.StringIO()
                    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
                    print("  agent full resync under cProfile, top by tottime:\n" + buf.getvalue())
                    continue
                else:
                    t = time.perf_counter()
                    reaction = NicReconciler(host, ipr).reconcile("start", time.monotonic(), full=True)
                    dt = time.perf_counter() - t
                    n = len(rules.plan(host.nic, read_state(ipr, host.nic)).rules)
                    assert reaction.added == n and not reaction.replaced + reaction.deleted, reaction.text()
                    label = "agent"
                    print(f"    (read+dump {reaction.read_ms:.0f} ms, plan+diff {reaction.plan_ms:.0f} ms, "
                          f"apply {reaction.apply_ms:.0f} ms)")
                got = count(ipr, devs)
                assert got == n, f"{label}: {got} filters in the kernel, expected {n}"
                times[label].append(dt)
                print(f"  {label:6s} {n} rules {dt:7.3f} s {n / dt:7.0f} rules/s", flush=True)
                if label == "agent":
                    t = time.perf_counter()
                    reaction = NicReconciler(host, ipr).reconcile("start", time.monotonic(), full=True)
                    dt = time.perf_counter() - t
                    assert reaction.changed == 0, reaction.text()
                    times["adopt"].append(dt)
                    print(f"  adopt  {n} rules {dt:7.3f} s (a second full resync: dump + diff, nothing applied)",
                          flush=True)
        finally:
            remove(host)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"vfs": vfs, "rules": n, "runs": repeat, "tc_s": round(med["tc"], 3), "agent_s": round(med["agent"], 3),
            "adopt_s": round(med["adopt"], 3), "ratio": round(med["tc"] / med["agent"], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vfs", type=figures.comma_list(int), default=[2, 64, 256],
                    help="failover runs (default 2,64,256)")
    ap.add_argument("--offload", type=figures.comma_list(str), default=["active-backup", "hash", "vf-split"],
                    help="failover runs (default active-backup,hash,vf-split)")
    ap.add_argument("--resync-vfs", type=int, default=256, help="VFs of the full-resync comparison (0: skip it)")
    ap.add_argument("--buckets", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2, help="tc/agent pairs of full-resync runs")
    ap.add_argument("--rounds", type=int, default=25, help="failover + recovery rounds per run")
    ap.add_argument("--profile", action="store_true", help="also one agent full resync under cProfile")
    ap.add_argument("--json-out", help="write the figures here (JSON)")
    args = ap.parse_args()
    subprocess.run(["modprobe", "-a", *MODULES], check=True)
    fos = run_failovers(args.offload, args.vfs, args.buckets, args.rounds) if args.rounds else []
    figures.write(args.json_out, {"resync": None, "failover": fos, "rounds": args.rounds})  # kept if resync fails
    resync = run_resync(args.resync_vfs, args.buckets, args.repeat, args.profile) if args.resync_vfs else None
    if resync:
        print(f"\n== full resync, {resync['vfs']} VFs: {resync['rules']} rules, medians of {resync['runs']}: "
              f"tc -batch {resync['tc_s']:.3f} s, agent {resync['agent_s']:.3f} s (adopt {resync['adopt_s']:.3f} s); "
              f"agent/tc rate = {resync['ratio']:.2f}")
    if fos:
        print(f"\n== failover + recovery, {args.rounds} rounds each: event->applied per reaction that changed rules, "
              "wire->applied per event (incl. bond miimon 10 ms)")
        print(f"{'offload':14} {'VFs':>4} {'ev p50':>8} {'ev p99':>8} {'wire p50':>9} {'wire p99':>9} "
              f"{'changes':>10} {'start s':>8} {'RSS MB':>7}")
        for r in fos:
            print(f"{r['offload']:14} {r['vfs']:4d} {r['event_p50_ms']:8.1f} {r['event_p99_ms']:8.1f} "
                  f"{r['wire_p50_ms']:9.1f} {r['wire_p99_ms']:9.1f} {'/'.join(map(str, r['changes'])):>10} "
                  f"{r['start_s']:8.2f} {r['rss_mb']:7.1f}")
    figures.write(args.json_out, {"resync": resync, "failover": fos, "rounds": args.rounds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
