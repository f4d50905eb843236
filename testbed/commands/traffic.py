"""``testbed traffic failover|rdma|hash|bondhash LAB``: real traffic through a running lab, figures and a verdict.

Thin: parse, check root, call ``testbed.verify.LabTraffic``, print. Every
import beyond argparse happens in the handler (this module is imported on
every ``testbed`` invocation, and scapy alone takes ~10 s in a TCG guest).
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from testbed.commands.common import Progress, add_json, add_quiet, emit_json, require_root
from traffic.pacing import FRAME_BUDGET_PPS, STREAM_RATE_PPS, stream_rate

RAW = argparse.RawDescriptionHelpFormatter
FAIL_EXIT = 11  # VerificationFailed.exit_code, without importing it here

COMMON_EPILOG = """\
output: a table of the figures, the failed checks and the verdict (--verbose: every check);
--json: the result as JSON (its "series" too with --plot); --plot FILE.png: a figure (needs matplotlib,
the 'plot' extra); --pcap FILE: the frames captured on the switch side of the NIC's wires (Linux SLL2:
the interface index names the wire).
exit status: 0 PASS, 11 FAIL, 2 usage, 6 no such lab, 8 timeout (the lab did not settle).
"""


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=78)


def _lab(name: str) -> Any:
    from testbed import labstore
    from testbed.errors import LabNotFound
    from testbed.lab import Lab

    rec = labstore.read(name)
    if rec.state != "up":
        raise LabNotFound(f"lab {name} is {rec.state}, not up",
                          fix=f"`testbed up` it again, or `testbed clean --lab {name}`")
    return Lab(rec.model(), agent=rec.agent)


def _finish(args: argparse.Namespace, result: Any) -> int:
    from testbed.verify.render import render

    if args.plot:
        from testbed.verify.plot import plot

        plot(result, args.plot)
    if args.json:
        if result.kind in ("failover", "rdma"):
            emit_json(result.to_dict(series=bool(args.plot)))
        else:
            emit_json(result.to_dict())
    else:
        print(render(result, verbose=args.verbose))
        if args.plot:
            print(f"plot: {args.plot}")
        if args.pcap:
            print(f"pcap: {args.pcap}")
        if getattr(args, "restore_after", 1) is None and result.kind in ("failover", "rdma") and result.fail != "none":
            host, _, port = result.fail.partition(":")
            print(f"note: {result.fail} stays failed; repair it with `testbed restore {result.lab} {host} {port}`")
        if getattr(result, "negative_control", False):
            print(f"note: the agent of lab {result.lab} stays stopped; start it with "
                  f"`testbed agent {result.lab} --daemon`")
    return 0 if result.passed else FAIL_EXIT


def _traffic(args: argparse.Namespace, kind: str) -> Any:
    """Root checked, the lab found: its ``LabTraffic`` with progress lines unless quiet."""
    require_root(f"traffic {kind}")
    lab = _lab(args.lab)
    from testbed.verify import LabTraffic

    return LabTraffic(lab, progress=Progress(not (args.quiet or args.json)))


def _tolerance(args: argparse.Namespace) -> Any:
    from testbed.verify.failover import FailoverTolerance

    return FailoverTolerance(agent_allowance_ms=args.allowance, agent_notice_ms=args.notice,
                             max_agent_latency_ms=args.max_agent_latency, max_send_late_ms=args.max_send_late)


def cmd_failover(args: argparse.Namespace) -> int:
    tr = _traffic(args, "failover")
    res = tr.failover(targets=args.target or ["server:vf0"], fail=args.fail, rate_pps=args.rate,
                      duration_s=args.duration, fail_at_s=args.fail_at, restore_after_s=args.restore_after,
                      flap=args.flap, directions=args.direction, flows=args.flows, compare_bond=not args.no_bond,
                      fault=args.fault, tolerance=_tolerance(args), pcap=args.pcap, attempts=args.attempts,
                      agent=not args.without_agent, family=args.ip)
    return _finish(args, res)


def cmd_rdma(args: argparse.Namespace) -> int:
    tr = _traffic(args, "rdma")
    res = tr.rdma(target=args.target, fail=None if args.no_fail else args.fail, qps=args.qps, rate_pps=args.rate,
                  duration_s=args.duration, fail_at_s=args.fail_at, restore_after_s=args.restore_after,
                  directions=args.direction, compare_bond=not args.no_bond, fault=args.fault,
                  tolerance=_tolerance(args), pcap=args.pcap, attempts=args.attempts, family=args.ip)
    return _finish(args, res)


def cmd_hash(args: argparse.Namespace) -> int:
    from testbed.verify import HashTolerance

    tr = _traffic(args, "hash")
    res = tr.hash(flows=args.flows, fail=args.fail, target=args.target, directions=args.direction,
                  packets_per_flow=args.packets_per_flow, rate_pps=args.rate, restore=not args.no_restore,
                  fault=args.fault, tolerance=HashTolerance(alpha=args.alpha, max_deviation=args.max_deviation),
                  pcap=args.pcap)
    return _finish(args, res)


def cmd_bondhash(args: argparse.Namespace) -> int:
    tr = _traffic(args, "bondhash")
    res = tr.bond_hash(args.policy, flows=args.flows, stack_flows=args.stack_flows,
                       packets_per_flow=args.packets_per_flow, rate_pps=args.rate, pcap=args.pcap)
    return _finish(args, res)


def cmd_verbs(args: argparse.Namespace) -> int:
    require_root("traffic verbs")
    if args.pcap:
        from testbed.errors import UsageError

        raise UsageError("--pcap: the verbs check counts RoCE frames per wire but keeps no capture",
                         fix="leave --pcap out (the per-wire counts are in the output and --json)")
    lab = _lab(args.lab)
    from testbed.verify import LabTraffic

    tr = LabTraffic(lab, progress=Progress(not (args.quiet or args.json)))
    res = tr.verbs(target=args.target, fail=None if args.no_fail else args.fail, agent=not args.without_agent,
                   peer=args.peer, initiator=args.initiator, fail_at_s=args.fail_at,
                   restore_after_s=args.restore_after, rate=args.rate, size=args.size, ack_timeout=args.ack_timeout,
                   retry=args.retry, family=args.ip or 4)
    return _finish(args, res)


def _outputs(p: argparse.ArgumentParser) -> None:
    add_json(p)
    add_quiet(p)
    p.add_argument("--verbose", action="store_true", help="list every check, not only the failed ones")
    p.add_argument("--plot", metavar="FILE.png", help="draw the result (needs matplotlib)")
    p.add_argument("--pcap", metavar="FILE", help="keep the frames captured on the NIC's wires (switch side); "
                                                  "hash: FILE, FILE.failed, FILE.restored per phase")


def _stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fail", default="server:pf0", metavar="HOST:PORT",
                   help="the port whose wire fails (default server:pf0; HOST:active = the bond's active port)")
    p.add_argument("--fault", choices=("carrier", "lacp"), default="carrier",
                   help="carrier: the wire goes down (default); lacp: LACPDUs dropped on the wire (802.3ad)")
    p.add_argument("--rate", type=float, metavar="PPS",
                   help=f"packets/s per stream (default {STREAM_RATE_PPS:g}, lowered when the streams together "
                        f"would send more than {FRAME_BUDGET_PPS:g} frames/s: {stream_rate(130):g} for 64 VFs "
                        "both ways)")
    p.add_argument("--duration", type=float, default=3.0, metavar="S", help="stream length (default 3; "
                   "extended to 1 s past the last event)")
    p.add_argument("--fail-at", type=float, default=1.0, metavar="S", help="failure this far in (default 1)")
    p.add_argument("--restore-after", type=float, metavar="S",
                   help="repair the port this long after the failure (default: it stays failed)")
    p.add_argument("--direction", choices=("rx", "tx", "both"), default="both",
                   help="rx: client -> target (RX steering), tx: target -> client (TX steering); default both")
    p.add_argument("--no-bond", action="store_true", help="no bond stream beside the targets' (no reference gap)")
    family = p.add_mutually_exclusive_group()
    family.add_argument("-4", "--ipv4", dest="ip", action="store_const", const=4,
                        help="every stream over IPv4 (default: IPv4 where the target has it, else IPv6)")
    family.add_argument("-6", "--ipv6", dest="ip", action="store_const", const=6,
                        help="every stream over IPv6: targets, bond and peer by their IPv6 addresses (a "
                             "dual-stack lab, `ipv6: true`); RDMA targets carry RoCEv2 over IPv6")
    p.add_argument("--allowance", type=float, default=50.0, metavar="MS",
                   help="slack around the bond's outage and the agent's reaction (default 50)")
    p.add_argument("--notice", type=float, default=150.0, metavar="MS",
                   help="how long after the bond's outage the agent may hear of it (default 150; with the "
                        "ARP/NS monitor two arp_intervals more: it notifies late)")
    p.add_argument("--max-agent-latency", type=float, default=1000.0, metavar="MS",
                   help="the agent's event -> rules applied, per reaction (default 1000, sized for a loaded TCG "
                        "guest; tens of ms on a quiet one)")
    p.add_argument("--max-send-late", type=float, default=250.0, metavar="MS",
                   help="a failed run whose sender fell further behind its schedule (an overloaded machine) "
                        "is run again (default 250)")
    p.add_argument("--attempts", type=int, default=2, metavar="N",
                   help="runs in all for such a run, when the run puts the lab back by itself (a repair, no "
                        "flap) (default 2; 1: never again)")


def register(sub: Any) -> None:
    top = sub.add_parser("traffic",
                         help="verify a running lab with real traffic: failover, rdma, verbs, hash, bondhash",
                         formatter_class=RAW,
                         description=_wrap("Send sequenced streams through a running lab (raw sockets in its "
                                           "namespaces), capture them at the destination and on the switch "
                                           "side of the NIC's wires, "
                                           "and judge them against stated tolerances."))
    tsub = top.add_subparsers(dest="traffic_command", metavar="CHECK")
    tsub.required = True

    p = tsub.add_parser("failover", help="streams through a port failure: VF/RDMA gap next to the bond's",
                        formatter_class=RAW,
                        description=_wrap("Sequenced streams client<->target (both directions by default) and, beside "
                                    "them, client<->bond (the reference), all on one schedule; the port fails "
                                    "--fail-at seconds in. Per stream: sent, lost, lost beyond the bond's own "
                                    "failover window and the agent's reaction to it, duplicated, reordered, the gap "
                                    "around the failure and the repair, the largest gap, and which wire carried it "
                                    "before and after. PASS: no offload stream loses a packet beyond the bond's "
                                    "window and the agent's reaction, none is duplicated or reordered, after the "
                                    "failure nothing crosses the failed port, the agent reacts within "
                                    "--max-agent-latency. Many targets at once (a range of VFs, or all of "
                                    "them): one sending loop and one capture thread serve them all, the rate per "
                                    "stream is lowered to fit (see --rate), and a summary per direction sets the "
                                    "spread of the VFs' gaps (the worst named) beside the bond's. "
                                    "--without-agent is the negative control: the agent is stopped before the "
                                    "fault and every offload stream must lose packets beyond the bond's window "
                                    "(exit 0 when they all did)."),
                        epilog="examples:\n"
                               "  sudo testbed traffic failover ab --target server:vf0 --target server:rdma0\n"
                               "  sudo testbed traffic failover ab --restore-after 1.5 --plot failover.png\n"
                               "  sudo testbed traffic failover mv --target server:vf0-vf63 --restore-after 1.5\n"
                               "  sudo testbed traffic failover mv --target server:vfs --without-agent   # negative "
                               "control\n\n"
                               + COMMON_EPILOG)
    p.add_argument("lab")
    p.add_argument("--target", action="append", metavar="HOST:FN",
                   help="server:vf0 (default), server:rdma0, server:bond; server:vf0-vf63 (a range of VFs), "
                        "server:vfs (every VF); repeat for several side by side")
    p.add_argument("--flows", type=int, default=1, help="flows per stream (default 1; hash labs spread them)")
    p.add_argument("--flap", metavar="HOST:PORT",
                   help="fail this port at the repair (bonding selftests' recovery case; needs --restore-after)")
    p.add_argument("--without-agent", action="store_true",
                   help="negative control: stop the agent before the fault (it stays stopped); the offload's "
                        "traffic must die")
    _stream_options(p)
    _outputs(p)
    p.set_defaults(func=cmd_failover)

    p = tsub.add_parser("rdma", help="RoCEv2 to/from the RDMA function: ICRC intact, PSNs in order, across a failover",
                        formatter_class=RAW,
                        description=_wrap("RoCEv2 (UDP 4791, BTH, ICRC) between the client and the RDMA function, one "
                                    "flow per queue pair, with a bond stream beside it; the port fails --fail-at "
                                    "seconds in (--no-fail: none). PASS: every packet arrives with an intact ICRC, "
                                    "PSNs advance per QP (no duplicate, no regression), nothing is lost beyond the "
                                    "bond's own window."),
                        epilog="example:\n  sudo testbed traffic rdma ab --restore-after 1\n\n" + COMMON_EPILOG)
    p.add_argument("lab")
    p.add_argument("--target", default="server:rdma0", metavar="HOST:FN", help="default server:rdma0")
    p.add_argument("--qps", type=int, default=4, help="queue pairs (flows), default 4")
    p.add_argument("--no-fail", action="store_true", help="no failure: integrity only")
    _stream_options(p)
    _outputs(p)
    p.set_defaults(func=cmd_rdma)

    p = tsub.add_parser("verbs", help="a real RDMA workload (RC QP over RDMA CM, Soft-RoCE) through a failover",
                        formatter_class=RAW,
                        description=_wrap("A reliable-connected queue pair between a plain host and the RDMA "
                                    "function (or a VF) -- both with 'verbs: true' Soft-RoCE devices (Linux 7.1+) -- "
                                    "connected over RDMA CM, sends continuously while the port carrying it fails for "
                                    "longer than the QP's retry budget (local ACK timeout x retry count) and is "
                                    "repaired; beside it kernel UDP through the bond gives the bond's own gap. "
                                    "Reported: operations completed, the largest completion stall next to the "
                                    "bond's gap and the agent's reaction, completion errors, the QP state at the "
                                    "end, the rxe counters, the wire carrying the RoCE frames before/during/after. "
                                    "PASS: both QPs in RTS, 0 completion errors, every operation completed. "
                                    "--without-agent is the negative control: the agent is stopped before the "
                                    "fault and the traffic must die (exit 0 when it did)."),
                        epilog="examples:\n  sudo testbed traffic verbs rab --plot verbs.png\n"
                               "  sudo testbed traffic verbs rhash --initiator target\n"
                               "  sudo testbed traffic verbs rab --without-agent   # negative control\n\n"
                               + COMMON_EPILOG)
    p.add_argument("lab")
    p.add_argument("--target", default="server:rdma0", metavar="HOST:FN", help="server:rdma0 (default) or a VF")
    p.add_argument("--peer", metavar="HOST", help="the plain host at the other end (default: the first)")
    p.add_argument("--initiator", choices=("peer", "target"), default="peer",
                   help="which end posts the SENDs (default peer, the plain host)")
    p.add_argument("--fail", default="auto", metavar="HOST:PORT",
                   help="the port to fail (default auto: the one carrying the target's RoCE frames)")
    p.add_argument("--no-fail", action="store_true", help="no failure: the QP alone")
    p.add_argument("--fail-at", type=float, default=2.0, metavar="S", help="failure this far in (default 2)")
    p.add_argument("--restore-after", type=float, metavar="S",
                   help="repair after this long (default: 1.5 x the retry budget + 0.5 s)")
    p.add_argument("--without-agent", action="store_true",
                   help="negative control: stop the agent before the fault; the traffic must die")
    p.add_argument("--rate", type=float, default=200.0, metavar="OPS", help="SENDs per second (default 200)")
    p.add_argument("--size", type=int, default=1024, metavar="B", help="bytes per SEND (default 1024)")
    p.add_argument("--ack-timeout", type=int, default=16, metavar="T",
                   help="local ACK timeout 4.096 us x 2^T (default 16: 268 ms)")
    p.add_argument("--retry", type=int, default=6, metavar="N",
                   help="retry count 0..6 (default 6; 7 would mean retry forever in Soft-RoCE)")
    p.add_argument("-6", "--ipv6", dest="ip", action="store_const", const=6,
                   help="RoCEv2 over IPv6: RDMA CM resolves the target's and the peer's IPv6 addresses to the "
                        "devices' IPv6 GIDs (a dual-stack lab; default: IPv4, IPv4-mapped GIDs)")
    _outputs(p)
    p.set_defaults(func=cmd_verbs)

    p = tsub.add_parser("hash", help="N flows over an active-active lab: stickiness, shares, moves on failure",
                        formatter_class=RAW,
                        description=_wrap("N flows (distinct 5-tuples) to and from a VF or the RDMA function of an "
                                    "active-active lab (offload hash or vf-split), in phases: before, after --fail "
                                    "and after the repair. Per phase: every flow on one wire, flows per port vs "
                                    "the agent's table (tx) or the switch's LAG (rx, also predicted from its hash): "
                                    "chi-squared p-value >= --alpha and max deviation; rx: every flow delivered "
                                    "once to the function, only on ports the NIC receives on. tx (the NIC's own "
                                    "table): after the failure exactly the dead port's flows moved, after the "
                                    "repair all are back; the switch's rx rehash is reported as its figure."),
                        epilog="examples:\n  sudo testbed traffic hash aah\n"
                               "  sudo testbed traffic hash aah --fail server:pf0 --plot hash.png\n"
                               "  sudo testbed traffic hash lacp --fail server:pf1 --fault lacp\n\n" + COMMON_EPILOG)
    p.add_argument("lab")
    p.add_argument("--target", default="server:vf0", metavar="HOST:FN", help="default server:vf0")
    p.add_argument("--flows", type=int, default=256, help="flows (default 256)")
    p.add_argument("--fail", metavar="HOST:PORT", help="fail this port between phases (default: no failure)")
    p.add_argument("--fault", choices=("carrier", "lacp"), default="carrier", help="how the port fails")
    p.add_argument("--no-restore", action="store_true", help="leave the port failed (no 'restored' phase)")
    p.add_argument("--direction", choices=("rx", "tx", "both"), default="both", help="default both")
    p.add_argument("--packets-per-flow", type=int, default=4, metavar="N", help="default 4")
    p.add_argument("--rate", type=float, default=400.0, metavar="PPS", help="packets/s per direction (default 400)")
    p.add_argument("--alpha", type=float, default=0.001, help="least chi-squared p-value (default 0.001)")
    p.add_argument("--max-deviation", type=float, metavar="X",
                   help="largest |share - expected| per port (default: 4 standard deviations for N flows)")
    _outputs(p)
    p.set_defaults(func=cmd_hash)

    p = tsub.add_parser("bondhash", help="bond0's transmit hash: predicted port vs observed wire",
                        formatter_class=RAW,
                        description=_wrap("Flows leave through bond0 -- raw frames with random MACs, addresses and "
                                    "ports, and datagrams of the kernel's own UDP stack -- and the port each "
                                    "crossed (switch-side capture) is compared with the one the bonding driver's "
                                    "formula predicts (traffic.bondhash). balance-xor / 802.3ad labs; the policy is "
                                    "switched over netlink for the run and put back. PASS: 100 % agreement."),
                        epilog="example:\n  sudo testbed traffic bondhash aah --policy all\n\n" + COMMON_EPILOG)
    p.add_argument("lab")
    p.add_argument("--policy", choices=("layer2", "layer2+3", "layer3+4", "all"),
                   help="default: the lab's own policy")
    p.add_argument("--flows", type=int, default=64, help="raw flows (default 64)")
    p.add_argument("--stack-flows", type=int, default=16, help="kernel UDP flows (default 16)")
    p.add_argument("--packets-per-flow", type=int, default=2, metavar="N", help="default 2")
    p.add_argument("--rate", type=float, default=500.0, metavar="PPS", help="raw frames per second (default 500)")
    _outputs(p)
    p.set_defaults(func=cmd_bondhash)
