"""Running the bond transmit-hash verification: frames leaving ``bond0`` under each policy, seen on the wires.

``run(ctx, plan)`` switches the bond's ``xmit_hash_policy`` over netlink
(``bond.options`` through ``LabView``) for each policy asked for, sends raw
flows out of the bond and kernel UDP flows from sockets bound to its
address, captures which wire carried each flow, and leaves the verdict to
the pure ``txhash.evaluate_policy``; the original policy is put back.
"""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from testbed.errors import UsageError, WaitTimeout
from testbed.nl import wait_until
from testbed.topology import Host
from testbed.verify import stations
from testbed.verify.context import DPORT, RunContext, stream_ids
from testbed.verify.txhash import BondHashResult, FlowObservation, evaluate_policy
from traffic.netns import run_in_netns
from traffic.parse import parse_stream_frame
from traffic.receiver import Receiver
from traffic.sender import RawSender
from traffic.stream import pack_stream_header
from traffic.streams import Station, write_pcap

POLICIES = ("layer2", "layer2+3", "layer3+4")


@dataclass(frozen=True)
class BondHashPlan:
    policy: Union[None, str, Tuple[str, ...]]  # None: the lab's own; "all": every policy predicted
    host: Optional[str]
    flows: int
    stack_flows: int
    packets_per_flow: int
    rate_pps: float
    pcap: Optional[str] = None

    def __post_init__(self) -> None:
        if self.flows < 1 or self.stack_flows < 0 or self.packets_per_flow < 1:
            raise UsageError(f"flows {self.flows}, stack flows {self.stack_flows}, "
                             f"packets per flow {self.packets_per_flow}")

    def policies(self, own: Optional[str]) -> List[str]:
        if self.policy is None:
            out = [own or "layer2"]
        elif isinstance(self.policy, str):
            out = list(POLICIES) if self.policy == "all" else [self.policy]
        else:
            out = list(self.policy)
        bad = [p for p in out if p not in POLICIES]
        if bad:
            raise UsageError(f"xmit_hash_policy {bad}", fix=f"one of: {', '.join(POLICIES)} (or all)")
        return out


def run(ctx: RunContext, plan: BondHashPlan) -> BondHashResult:
    h = ctx.topo.nic_host(plan.host)
    nic = h.nic
    assert nic is not None
    if nic.bond.mode not in ("balance-xor", "802.3ad"):
        raise UsageError(f"lab {ctx.topo.name}: bond mode {nic.bond.mode} has no transmit hash",
                         fix="use a balance-xor or 802.3ad lab (e.g. topologies/active-active-hash.yaml)")
    policies = plan.policies(nic.bond.xmit_hash_policy)
    client = stations.peer_station(ctx.topo)
    raw_id, stack_id = stream_ids(2)
    templates = _raw_templates(h, plan.flows, raw_id)
    figs, checks = [], []
    original: Optional[str] = None
    try:
        for pol in policies:
            old = ctx.view.set_xmit_hash_policy(h, pol)
            if original is None:
                original = old
            usable = list(ctx.steady(h))
            ctx.progress(f"{pol}: {plan.flows} raw + {plan.stack_flows} kernel UDP flows through "
                         f"{nic.bond.name} (usable {', '.join(usable)})")
            pcap = f"{plan.pcap}.{pol}" if plan.pcap and len(policies) > 1 else plan.pcap
            obs = _capture(ctx, h, client, templates, (raw_id, stack_id), plan, pcap)
            fig, cks = evaluate_policy(pol, usable, obs, expected_flows=plan.flows + plan.stack_flows)
            figs.append(fig)
            checks += cks
    finally:
        if original is not None:
            ctx.view.set_xmit_hash_policy(h, original)
    return BondHashResult(lab=ctx.topo.name, mode=nic.bond.mode, policies=figs, checks=checks)


def _raw_templates(h: Host, n: int, stream_id: int) -> List[Any]:
    """Frames from the bond's MAC/address with random destination MAC, address and ports (a fixed seed)."""
    from traffic.flows import Flow
    from traffic.packets import build_templates

    nic = h.nic
    assert nic is not None
    rnd = random.Random(4791)  # independent fields per flow (correlated ones could cancel in the XOR)
    fl = []
    for i in range(n):
        mac = rnd.randrange(1 << 16)
        fl.append(Flow(flow_id=i, proto="udp", src_ip=str(nic.address.ip),
                       dst_ip=f"198.19.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                       sport=rnd.randrange(10000, 60000), dport=rnd.randrange(5000, 6000), src_mac=nic.mac,
                       dst_mac=f"02:74:62:01:{mac >> 8:02x}:{mac & 0xFF:02x}"))
    return build_templates(fl, stream_id)


def _send_stack_flows(h: Host, client: Station, stack_id: int, flows: int, ppf: int,
                      socks: List[socket.socket]) -> None:
    """Kernel UDP from sockets bound to the bond's address (the bond's own hashing of stack traffic)."""
    nic = h.nic
    assert nic is not None
    bond_ip = str(nic.address.ip)

    def open_udp(sport: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((bond_ip, sport))
        return s

    for i in range(flows):
        socks.append(run_in_netns(h.netns, open_udp, 30000 + 17 * i))
    for k in range(ppf):
        for i, s in enumerate(socks):
            s.sendto(pack_stream_header(stack_id, i, k * flows + i, time.time_ns()), (client.ip, DPORT))


def _capture(ctx: RunContext, h: Host, client: Station, templates: Sequence[Any], ids: Tuple[int, int],
             plan: BondHashPlan, pcap: Optional[str]) -> List[FlowObservation]:
    nic = h.nic
    assert nic is not None
    sw_ns, ports = ctx.wires(h)
    ppf = plan.packets_per_flow
    expected = (len(templates) + plan.stack_flows) * ppf
    rx = Receiver(sw_ns, None, ifnames=set(ports), keep_frames=True)
    socks: List[socket.socket] = []
    try:
        rx.start()
        with RawSender(h.netns, nic.bond.name) as tx:
            tx.send(templates, count=len(templates) * ppf, rate_pps=plan.rate_pps)
        _send_stack_flows(h, client, ids[1], plan.stack_flows, ppf, socks)
        wait_until(lambda: rx.count >= expected, 10.0, f"{expected} frames from {nic.bond.name} on the wires",
                   interval=0.05)
    except WaitTimeout:
        pass  # what was captured is judged: "flows captured" fails if frames are missing
    finally:
        for s in socks:
            s.close()
        rx.stop()
    if pcap:
        write_pcap(pcap, rx.frames)
    obs: Dict[Tuple[str, int], Tuple[bytes, Dict[str, int]]] = {}
    for f in rx.frames:
        p = parse_stream_frame(f.data, check_icrc=False)
        if p is None or p.stream_id not in ids:
            continue
        frame, wires = obs.setdefault(("raw" if p.stream_id == ids[0] else "stack", p.flow_id), (f.data, {}))
        wires[ports[f.ifname]] = wires.get(ports[f.ifname], 0) + 1
    return [FlowObservation(src, fid, frame, wires) for (src, fid), (frame, wires) in sorted(obs.items())]
