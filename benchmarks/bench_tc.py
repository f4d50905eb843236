"""Flower rule installation: testbed.tc.ops.apply() against ``tc -batch``.

Not a test.  Needs root and cls_flower; run it in the VM lane, e.g.::

    vng --disable-kvm -r /boot/vmlinuz-6.1.0-56-amd64 --memory 2G --cpus 2 \\
        --rwdir /work/main -- python3 benchmarks/bench_tc.py

Layout: one namespace, 64 representors (dummy interfaces) and, for every
run, two fresh ports (dummies ``p0r<run>``, ``p1r<run>``) with clsact.  N =
ports x VFs x buckets rules (default 2 x 64 x 16 = 2048) on the ports'
ingress, each ``dst_mac <vf> + hash <bucket>/15 -> mirred egress redirect
<vf-rep>`` with its label as action cookie.  Fresh ports per run because
deleting a qdisc full of filters frees them in the background (RCU work),
which would slow whatever runs next.

``tc`` has no keyword for flower's hash key, so the ``tc -batch`` side
matches ``dst_mac <vf> src_mac <stand-in per bucket>`` instead: the same
number of keys and masks, the same action and cookie, same prio/handles.
Every run is checked by counting the filters the kernel then holds.
Timings are wall clock of the whole call (``tc``: process start included;
apply(): link dump, encoding, sending, acks).  tc and apply() runs are
interleaved and repeated; the summary compares medians.  Compare only
ratios measured in the same boot.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyroute2 import IPRoute, netns  # noqa: E402

from testbed import nlpipe
from testbed.tc import codec, flower, ops, readback  # noqa: E402
from testbed.tc.rule import Action, Match, Rule  # noqa: E402

MODULES = ("cls_flower", "act_mirred", "act_gact", "sch_ingress", "dummy")


def vf_mac(vf: int) -> str:
    return f"02:00:00:00:{vf >> 8:02x}:{vf & 0xFF:02x}"


def bucket_mac(bucket: int) -> str:
    return f"02:00:00:01:00:{bucket:02x}"


def rules(ports: list, vfs: int, buckets: int, shift: int = 0) -> list:
    out = []
    for port in ports:
        for v in range(vfs):
            for b in range(buckets):
                out.append(
                    Rule(
                        dev=port,
                        prio=10,
                        handle=1 + v * buckets + b,
                        match=Match(dst_mac=vf_mac(v), hash=b, hash_mask=buckets - 1),
                        actions=(Action("redirect", f"vf{(v + shift) % vfs}-rep"),),
                        label=f"vf{v}b{b}",
                    )
                )
    return out


def tc_batch_lines(ports: list, vfs: int, buckets: int) -> str:
    lines = []
    for port in ports:
        for v in range(vfs):
            for b in range(buckets):
                cookie = f"vf{v}b{b}".encode().hex()
                lines.append(
                    f"filter add dev {port} ingress prio 10 handle {1 + v * buckets + b} "
                    f"protocol all flower skip_hw dst_mac {vf_mac(v)} src_mac {bucket_mac(b)} "
                    f"action mirred egress redirect dev vf{v}-rep cookie {cookie}"
                )
    return "\n".join(lines) + "\n"


TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info


def count(ipr, ports: list) -> int:
    """Filters the kernel holds on the ports' ingress (raw dump, no decoding)."""
    links = nlpipe.link_index(ipr)
    total = 0
    for port in ports:
        query = TCMSG.pack(0, links[port], 0, flower.INGRESS_PARENT, 0)
        for raw in nlpipe.dump(ipr, ops.RTM_GETTFILTER, query, "count"):
            total += TCMSG.unpack_from(raw, nlpipe.HDR.size)[2] != 0  # handle 0: prio entry
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ports", type=int, default=2)
    ap.add_argument("--vfs", type=int, default=64)
    ap.add_argument("--buckets", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3, help="tc/apply() pairs")
    args = ap.parse_args()
    subprocess.run(["modprobe", "-a", *MODULES], check=True)
    n = args.ports * args.vfs * args.buckets
    ns = f"tbbench-{uuid.uuid4().hex[:6]}"
    netns.create(ns)
    times: dict = {}
    runs = iter(range(1000))
    try:
        with IPRoute(netns=ns, groups=0) as ipr, IPRoute(netns=ns) as ipr_groups:
            for v in range(args.vfs):
                ipr.link("add", ifname=f"vf{v}-rep", kind="dummy")

            def fresh_ports() -> list:
                run = next(runs)
                ports = [f"p{p}r{run}" for p in range(args.ports)]
                for port in ports:
                    ipr.link("add", ifname=port, kind="dummy")
                    ops.ensure_clsact(ipr, port)
                return ports

            def run(label: str, fn) -> list:
                ports = fresh_ports()
                t = time.perf_counter()
                fn(ports)
                dt = time.perf_counter() - t
                got = count(ipr, ports)
                assert got == n, f"{label}: {got} filters installed, expected {n}"
                times.setdefault(label, []).append(dt)
                print(f"{label:34s} {dt:7.3f} s {n / dt:7.0f} rules/s", flush=True)
                return ports

            def tc_batch(ports: list) -> None:
                with tempfile.NamedTemporaryFile("w", suffix=".tc") as f:
                    f.write(tc_batch_lines(ports, args.vfs, args.buckets))
                    f.flush()
                    subprocess.run(["tc", "-n", ns, "-batch", f.name], check=True)

            def ours(ipr_, window: int, ack_each: bool = False):
                return lambda ports: ops.apply(
                    ipr_, add=rules(ports, args.vfs, args.buckets), window=window,
                    ack_each=ack_each,
                )

            # what the Python side costs alone: packing the messages
            want = rules(["p0r0", "p1r0"], args.vfs, args.buckets)
            t = time.perf_counter()
            for r in want:
                codec.pack(r, 1, lambda name: 2)
            dt = time.perf_counter() - t
            print(f"{'pack() only (no kernel)':34s} {dt:7.3f} s {n / dt:7.0f} rules/s")

            for _ in range(args.repeat):
                run("tc -batch", tc_batch)
                ports = run("apply() window=64", ours(ipr, 64))
            run("apply() window=64, ack each", ours(ipr, 64, ack_each=True))
            run("apply() window=1 (one ack each)", ours(ipr, 1))
            cap = ipr.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // nlpipe.BYTES_PER_REQUEST
            run(f"apply() window=256 (capped: {min(256, cap)})", ours(ipr, 256))
            run("apply() window=64, default groups", ours(ipr_groups, 64))

            # for scale: pyroute2's own path, flower.py classes and one request per rule
            sample = 256
            port = fresh_ports()[0]
            links = nlpipe.link_index(ipr)
            t = time.perf_counter()
            for r in rules([port], args.vfs, args.buckets)[:sample]:
                msg = codec.encode(r, links[port], links.__getitem__)
                msg["header"]["type"] = ops.RTM_NEWTFILTER
                msg["header"]["flags"] = nlpipe.NLM_F_REQUEST | nlpipe.NLM_F_ACK | ops.ADD_FLAGS
                ipr.nlm_request_batch([msg])  # one request, wait for its ack
            dt = time.perf_counter() - t
            assert count(ipr, [port]) == sample
            print(f"{'pyroute2 encode() + one request each':34s} {dt:7.3f} s "
                  f"{sample / dt:7.0f} rules/s  ({sample} rules)")
            t = time.perf_counter()
            query = TCMSG.pack(0, links[port], 0, flower.INGRESS_PARENT, 0)
            slow = []
            for raw in nlpipe.dump(ipr, ops.RTM_GETTFILTER, query, "classes"):
                msg = flower.tcmsg(raw)
                msg.decode()
                slow.append(readback.decode(msg, {i: n for n, i in links.items()}))
            dt = time.perf_counter() - t
            print(f"{'dump + decode() via flower classes':34s} {dt:7.3f} s "
                  f"{sample / dt:7.0f} rules/s  ({sample} rules)")

            moved = rules(ports, args.vfs, args.buckets, shift=1)
            t = time.perf_counter()
            ops.apply(ipr, replace=moved)
            dt = time.perf_counter() - t
            print(f"{'apply() replace all (new target)':34s} {dt:7.3f} s {n / dt:7.0f} rules/s")
            t = time.perf_counter()
            got = ops.dump(ipr, ports)
            dt = time.perf_counter() - t
            by_key = {g.rule.key: g.rule for g in got}
            assert by_key == {r.key: r for r in moved}, "dump differs from what was replaced"
            print(f"{'dump() + decode all':34s} {dt:7.3f} s {n / dt:7.0f} rules/s")
            t = time.perf_counter()
            ops.apply(ipr, delete=moved)
            dt = time.perf_counter() - t
            assert count(ipr, ports) == 0
            print(f"{'apply() delete all':34s} {dt:7.3f} s {n / dt:7.0f} rules/s")
    finally:
        netns.remove(ns)
    tc_med = statistics.median(times["tc -batch"])
    print(f"\n{n} rules, medians of {args.repeat} interleaved runs:")
    for label in ("tc -batch", "apply() window=64"):
        med = statistics.median(times[label])
        print(f"  {label:32s} {med:6.3f} s {n / med:7.0f} rules/s  "
              f"rate vs tc -batch: {tc_med / med:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
