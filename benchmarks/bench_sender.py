"""Raw AF_PACKET sender vs scapy ``sendp()`` on the same packets, in a namespace.

    ns <p>-a  w0 ====== veth ====== w0p  ns <p>-b

Measures (root needed; the namespaces are removed afterwards):
- per-packet stamp cost of each template kind (pure Python, no socket)
- raw sender, unpaced: UDP (8 flows), RoCEv2 (ICRC recomputed per packet),
  and RoCEv2 frames precomputed once (send only, no stamping)
- scapy ``sendp(list)`` of the same UDP frames out of the same interface
- the receiver: how much of an unpaced burst a namespace-wide capture keeps

Usage: python3 benchmarks/bench_sender.py [--raw-count N] [--scapy-count N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyroute2 import IPRoute, netns  # noqa: E402

from traffic.netns import run_in_netns  # noqa: E402
from traffic.packets import build_templates, flows  # noqa: E402
from traffic.receiver import Receiver  # noqa: E402
from traffic.sender import RawSender  # noqa: E402

SRC, DST = "198.18.0.1", "198.18.0.2"


def stamp_cost_ns(templates, n: int = 200_000) -> float:
    stamps = [t.stamp for t in templates]
    k = len(stamps)
    t0 = time.perf_counter_ns()
    for i in range(n):
        stamps[i % k](i, t0 + i)
    return (time.perf_counter_ns() - t0) / n


def scapy_sendp_pps(ns: str, ifname: str, frames, count: int) -> float:
    from scapy.layers.l2 import Ether
    from scapy.sendrecv import sendp

    pkts = [Ether(frames[i % len(frames)]) for i in range(count)]

    def run() -> float:
        t0 = time.perf_counter()
        sendp(pkts, iface=ifname, verbose=False)
        return time.perf_counter() - t0

    return count / run_in_netns(ns, run)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw-count", type=int, default=300_000)
    ap.add_argument("--scapy-count", type=int, default=3_000)
    ap.add_argument("--rx-count", type=int, default=50_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_sender: needs root (namespaces, raw sockets)", file=sys.stderr)
        return 4

    udp = build_templates(flows(8, SRC, DST), stream_id=1)
    tcp = build_templates(flows(8, SRC, DST, proto="tcp"), stream_id=2)
    roce = build_templates(flows(8, SRC, DST, proto="roce"), stream_id=3)
    out: Dict[str, Any] = {
        "stamp_ns": {
            "udp": stamp_cost_ns(udp),
            "tcp_checksum_fix": stamp_cost_ns(tcp),
            "roce_icrc": stamp_cost_ns(roce),
        }
    }
    a, b = f"tbbench{os.getpid()}-a", f"tbbench{os.getpid()}-b"
    made = []
    try:
        for name in (a, b):
            netns.create(name)
            made.append(name)
        with IPRoute(netns=a) as ipa, IPRoute(netns=b) as ipb:
            ipa.link("add", ifname="w0", kind="veth", peer={"ifname": "w0p", "net_ns_fd": b})
            ipb.link("set", index=ipb.link_lookup(ifname="w0p")[0], state="up")
            ipa.link("set", index=ipa.link_lookup(ifname="w0")[0], state="up")
        with RawSender(a, "w0") as tx:
            tx.send(udp, count=20_000)  # warm-up
            out["raw_udp_pps"] = tx.send(udp, count=args.raw_count).rate_pps
            out["raw_roce_pps"] = tx.send(roce, count=args.raw_count).rate_pps
            pre = [bytes(roce[i % 8].stamp(i, i)) for i in range(4096)]
            out["raw_roce_precomputed_pps"] = tx.send_frames(pre, count=args.raw_count).rate_pps
        frames = [bytes(udp[i % 8].stamp(i, i)) for i in range(64)]
        out["scapy_sendp_pps"] = scapy_sendp_pps(a, "w0", frames, args.scapy_count)
        out["ratio_raw_over_scapy"] = out["raw_udp_pps"] / out["scapy_sendp_pps"]
        with Receiver(b, stream_id=1) as rx, RawSender(a, "w0") as tx:
            sent = tx.send(udp, count=args.rx_count)
            try:
                rx.wait_quiet(0.5, timeout_s=60)
            finally:
                rx.stop()
        out["rx_burst"] = {
            "sent": sent.sent,
            "sent_pps": sent.rate_pps,
            "captured": rx.count,
            **{k: v for k, v in rx.stats().items() if k in ("frames", "socket_drops")},
        }
    finally:
        for name in reversed(made):
            netns.remove(name)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    s = out["stamp_ns"]
    print(
        f"stamp cost per packet: udp {s['udp']:.0f} ns, tcp+fix {s['tcp_checksum_fix']:.0f} ns, "
        f"roce+icrc {s['roce_icrc']:.0f} ns"
    )
    print(f"raw sender, unpaced, UDP:            {out['raw_udp_pps']:>10,.0f} pps")
    print(f"raw sender, unpaced, RoCEv2 (ICRC):  {out['raw_roce_pps']:>10,.0f} pps")
    print(f"raw sender, RoCEv2 precomputed:      {out['raw_roce_precomputed_pps']:>10,.0f} pps")
    print(f"scapy sendp(list), same UDP frames:  {out['scapy_sendp_pps']:>10,.0f} pps")
    print(f"ratio raw / scapy:                   {out['ratio_raw_over_scapy']:>10,.1f} x")
    r = out["rx_burst"]
    print(
        f"receiver, unpaced burst of {r['sent']:,} at {r['sent_pps']:,.0f} pps: captured "
        f"{r['captured']:,}, socket drops {r['socket_drops']:,}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
