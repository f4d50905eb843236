"""The offload agent against ``tc -batch``: full-resync rules/s, and failover event->applied latency.

Not a test. Needs root, bonding and cls_flower; run it in the VM lane::

    vng --disable-kvm -r /boot/vmlinuz-6.1.0-56-amd64 --memory 2G --cpus 2 \\
        --rwdir /work/main -- python3 benchmarks/bench_agent.py

Layout, one namespace per run (``<lab>-server``), built with ``ip -batch``::

    swp0 ═ pf0 ─┐
    swp1 ═ pf1 ─┴─ bond0 (balance-xor, miimon 10)      clsact on pf0, pf1 (ingress_block 2) and every rep
                                                       (ingress_block 1): ``rules.bindings``
    vf0-rep ═ vf0 ... vf63-rep ═ vf63, rdma0-rep ═ rdma0  (peers stay in the namespace)

The rules are the agent's own for 64 VFs x 2 ports x 16 buckets (offload
``hash``): ``rules.plan(nic, state)`` for the bond's real state, about 900
filters (one TX table of 32 entries in the representors' shared block; before
the shared blocks: about 2,700, 65 representors x 32 entries).

* **full resync**: ``NicReconciler.reconcile(full=True)`` on an empty eswitch
  (read the bond, clsact on 66 devices, dump, diff, apply) against
  ``tc -batch`` adding the same rules. ``tc`` has no keyword for flower's hash
  key, so its lines match a stand-in ``src_mac`` per hash value instead (same
  number of keys, same actions and cookies, same prio/handle). Runs alternate
  (tc, agent, tc, agent, ...) in fresh namespaces built up front; every run is
  checked by counting the filters the kernel holds. Also timed: a second full
  resync that finds everything right (what a restarted agent costs).
* **failover**: the real agent (``launcher.start``, its own process) on one of
  the namespaces; ``swp1`` down/up ``--rounds`` times; the agent's own
  event->applied latency of each reaction that changed rules (from
  agent.json), the number of rules each changed (the same for 2 VFs and 64:
  ``--vfs 2``), and wire->applied (this script sets the wire, the agent
  stamps completion).

Compare only ratios measured in the same boot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import yaml  # noqa: E402
from pyroute2 import IPRoute, netns  # noqa: E402

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
from testbed.bond.state import read_state  # noqa: E402
from testbed.nl import wait_until  # noqa: E402
from testbed.tc import flower, ops  # noqa: E402
from testbed.tc.rule import Rule  # noqa: E402
from testbed.topology import Host  # noqa: E402

MODULES = ("bonding", "cls_flower", "act_mirred", "act_gact", "sch_ingress", "veth")


def topology_text(vfs: int, buckets: int) -> str:
    return f"""
name: bench
hosts:
  server:
    nic:
      address: 198.18.0.1/24
      bond: {{mode: balance-xor, miimon: 10, xmit_hash_policy: layer3+4}}
      offload: {{mode: hash, buckets: {buckets}}}
      vfs: {vfs}
      rdma: true
"""


def build(host: Host) -> None:
    """The NIC namespace of ``host``: ports with live peers, the bond, representors, clsact."""
    nic = host.nic
    ns = host.netns
    netns.create(ns)
    lines = ["link set lo up"]
    for i, port in enumerate(nic.ports):
        lines += [f"link add {port} type veth peer name swp{i}", f"link set swp{i} up"]
    lines.append(f"link add {nic.bond.name} address {nic.mac} type bond mode balance-xor miimon 10")
    lines += [f"link set {p} master {nic.bond.name}" for p in nic.ports]
    lines += [f"link set {p} up" for p in nic.ports] + [f"link set {nic.bond.name} up"]
    for fn in nic.functions:
        lines += [f"link add {fn.rep} address {nic.mac} type veth peer name {fn.name}", f"link set {fn.name} up",
                  f"link set {fn.rep} up"]
    subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)
    qdiscs = [f"qdisc add dev {d} ingress_block {ib} clsact" if ib else f"qdisc add dev {d} clsact"
              for d, (ib, _eb) in rules.bindings(nic).items()]
    subprocess.run(["tc", "-n", ns, "-batch", "-"], input="\n".join(qdiscs) + "\n", text=True, check=True)


def wait_bond_up(ipr, host: Host) -> None:
    wait_until(lambda: set(rules.plan(host.nic, read_state(ipr, host.nic)).usable) == set(host.nic.ports), 30,
               f"{host.netns}: both ports usable in bond0")


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
    decoding; a bound hook lists its block's filters, which are counted once, with the block)."""
    links = nlpipe.link_index(ipr)
    queries = [(links[dev], parent) for dev in devs for parent in (flower.INGRESS_PARENT, flower.EGRESS_PARENT)]
    queries += [(flower.TCM_IFINDEX_MAGIC_BLOCK, block) for block in rules.BLOCKS]
    magic = flower.TCM_IFINDEX_MAGIC_BLOCK
    total = 0
    for index, parent in queries:
        for raw in nlpipe.dump(ipr, ops.RTM_GETTFILTER, ops._TCMSG.pack(0, index, 0, parent, 0), "count"):
            got_index, handle = ops._TCMSG.unpack_from(raw, nlpipe.HDR.size)[1:3]
            total += handle != 0 and (got_index == magic) == (index == magic)
    return total


def pct(values: List[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def failover(host: Host, lab: str, rounds: int) -> Dict[str, List[float]]:
    rec = labstore.LabRecord(name=lab, file="<bench>", topology=yaml.safe_load(TOPO), netns=[host.netns])
    labstore.write(rec)
    t = time.perf_counter()
    pid = launcher.start(lab, timeout=300)
    print(f"agent (pid {pid}) up and adopted the rules in {time.perf_counter() - t:.1f} s "
          "(process start + imports + full resync)", flush=True)
    with open(labstore.lab_file(lab, "agent.log")) as fh:
        print("  " + "  ".join(fh.readlines()[-2:]), end="")
    out: Dict[str, List[float]] = {"event->applied": [], "wire->applied": [], "apply": [], "changed": []}

    def changed_since(t_set: float) -> List[ReactionStatus]:
        """Reactions that changed rules and finished after ``t_set`` (agent.json keeps the last 20)."""
        return [r for r in agent_status.nic(lab, "server").reactions_since(int(t_set * 1e9)) if r.changed]

    try:
        with IPRoute(netns=host.netns, flags=0) as ipr:
            swp1 = ipr.link_lookup(ifname="swp1")[0]
            for i in range(2 * rounds):
                state = "down" if i % 2 == 0 else "up"
                t_set = time.time()
                ipr.link("set", index=swp1, state=state)
                wait_until(lambda t=t_set: changed_since(t), 120, f"the agent to react to swp1 {state}",
                           interval=0.05)  # poll
                r = changed_since(t_set)[0]
                out["event->applied"].append(r.latency_ms)
                out["wire->applied"].append((r.done_ns / 1e9 - t_set) * 1000)
                out["apply"].append(r.apply_ms)
                out["changed"].append(r.changed)
                print(f"  swp1 {state:4s}: {r.text}", flush=True)  # ReactionStatus: not subscriptable
    except BaseException:
        with open(labstore.lab_file(lab, "agent.log")) as fh:
            print("agent.log:\n" + "".join(fh.readlines()[-15:]))
        raise
    finally:
        teardown.stop_agent(lab)
        labstore.remove(lab)
    return out


TOPO = ""


def main() -> int:
    global TOPO
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vfs", type=int, default=64)
    ap.add_argument("--buckets", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2, help="tc/agent pairs of full-resync runs")
    ap.add_argument("--rounds", type=int, default=10, help="failover + recovery rounds")
    args = ap.parse_args()
    subprocess.run(["modprobe", "-a", *MODULES], check=True)
    TOPO = topology_text(args.vfs, args.buckets)
    labs = [f"bt{i}" if i % 2 == 0 else f"ba{i}" for i in range(2 * args.repeat)]
    hosts = {lab: loader.loads(TOPO, lab_name=lab).host("server") for lab in labs}
    times: Dict[str, List[float]] = {"tc -batch": [], "agent full resync": [], "agent adopt (all right)": []}
    created: List[str] = []
    n = 0
    try:
        t = time.perf_counter()
        for lab in labs:
            build(hosts[lab])
            created.append(hosts[lab].netns)
        print(f"built {len(labs)} namespaces with {len(rules.devices(hosts[labs[0]].nic))} devices each "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
        for lab in labs:
            host = hosts[lab]
            with IPRoute(netns=host.netns, flags=0, groups=0) as ipr:
                wait_bond_up(ipr, host)
                plan = rules.plan(host.nic, read_state(ipr, host.nic))
                n = len(plan.rules)
                devs = list(rules.devices(host.nic))
                if lab.startswith("bt"):
                    with tempfile.NamedTemporaryFile("w", suffix=".tc") as f:
                        f.write("\n".join(tc_line(r) for r in plan.rules) + "\n")
                        f.flush()
                        t = time.perf_counter()
                        subprocess.run(["tc", "-n", host.netns, "-batch", f.name], check=True)
                        dt = time.perf_counter() - t
                    label = "tc -batch"
                else:
                    rec = NicReconciler(host, ipr)
                    t = time.perf_counter()
                    reaction = rec.reconcile("start", time.monotonic(), full=True)
                    dt = time.perf_counter() - t
                    assert reaction.added == n and not reaction.replaced + reaction.deleted, reaction.text()
                    label = "agent full resync"
                    print(f"    (read+dump {reaction.read_ms:.0f} ms, plan+diff {reaction.plan_ms:.0f} ms, "
                          f"apply {reaction.apply_ms:.0f} ms)")
                got = count(ipr, devs)
                assert got == n, f"{label}: {got} filters in the kernel, expected {n}"
                times[label].append(dt)
                print(f"{label:26s} {n} rules {dt:7.3f} s {n / dt:7.0f} rules/s", flush=True)
                if lab.startswith("ba"):
                    rec2 = NicReconciler(host, ipr)
                    t = time.perf_counter()
                    reaction = rec2.reconcile("start", time.monotonic(), full=True)
                    dt = time.perf_counter() - t
                    assert reaction.changed == 0, reaction.text()
                    times["agent adopt (all right)"].append(dt)
                    print(f"{'agent adopt (all right)':26s} {n} rules {dt:7.3f} s {n / dt:7.0f} rules/s "
                          "(dump + diff, nothing applied)", flush=True)
        fo = failover(hosts[labs[1]], labs[1], args.rounds)
    finally:
        for ns in created:
            netns.remove(ns)
    tc_med = statistics.median(times["tc -batch"])
    ag_med = statistics.median(times["agent full resync"])
    ad_med = statistics.median(times["agent adopt (all right)"])
    print(f"\n== {args.vfs} VFs x 2 ports x {args.buckets} buckets: {n} rules, medians of {args.repeat}")
    print(f"tc -batch           {tc_med:7.3f} s  {n / tc_med:7.0f} rules/s")
    print(f"agent full resync   {ag_med:7.3f} s  {n / ag_med:7.0f} rules/s   agent/tc rate = {tc_med / ag_med:.2f}")
    print(f"agent adopt         {ad_med:7.3f} s  {n / ad_med:7.0f} rules/s checked")
    ev, wire = fo["event->applied"], fo["wire->applied"]
    print(f"failover/recovery with {args.vfs} VFs, {len(ev)} reactions ({min(fo['changed'])}-{max(fo['changed'])} "
          f"rules changed each):")
    print(f"  event->applied  p50 {pct(ev, 0.5):7.1f} ms  p99 {pct(ev, 0.99):7.1f} ms  (apply p50 "
          f"{pct(fo['apply'], 0.5):.1f} ms)")
    print(f"  wire->applied   p50 {pct(wire, 0.5):7.1f} ms  p99 {pct(wire, 0.99):7.1f} ms  (incl. bond miimon 10 ms)")
    print(f"  event->applied p50 / tc -batch time for the full set = {pct(ev, 0.5) / 1000 / tc_med:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
