"""What the NIC's embedded switch should hold for a bond state (pure: no kernel, no I/O).

``plan(nic, state)`` returns a ``Plan``: the flower rules (``testbed.tc.rule.Rule``)
plus what ``testbed status`` shows (usable ports, the bucket -> port table,
each function's TX ports). ``desired_rules(nic, state)`` is ``plan(...).rules``.

Which ports are usable and which receive: ``testbed.bond.ports`` (the bond decides, the agent follows).

Rule placement (``dev`` / ``hook`` / ``prio`` / ``handle`` / label)::

  port ingress (pfX): frames from the wire, before the bond's rx handler
    1   1      lacp          ethertype 0x8809 -> pass (the bond's LACP, never replicated)
    2   1      arp-backup    port not receiving only: ARP -> pass (the bond's ARP monitor)
    3   1+i    rx:<vf>       dst MAC == VF i -> redirect to its rep   | not receiving: drop:<vf>
    4   1      rx:roce       IPv4 UDP 4791 to the bond address -> RDMA rep | not receiving: drop:roce
    10+k 1     bcast:<k>     receiving port: multicast dst -> mirror to VF reps (chunk k), then the bond
  port egress (pfX): frames about to leave by this port = the eswitch's loopback
    1   1+i    lb:<vf>       dst MAC == VF i -> redirect to its rep (bond -> VF, VF -> VF, RDMA -> VF)
    2   1      lb:roce       dst bond MAC, IPv4 UDP 4791 to the bond address -> RDMA rep (VF -> RDMA)
    3   1      lb:bond       dst bond MAC -> mirred *ingress* redirect into the bond (VF -> host)
    10+k 1     host-bcast:<k> src bond MAC, multicast dst -> mirror to VF reps (the host's and
                             the RDMA function's ARP/ND reach the VFs), then the wire
  representor ingress (<fn>-rep): what a VF / the RDMA function transmits
    10+k 1     vf-bcast:<k>  VF reps only: multicast dst -> mirror to the other VF reps and
                             into the bond; the last chunk also transmits (TX port of entry 0)
    100 1      tx            active-backup: redirect to the active port (drop if none)
    100 1+e    tx:<e>        hash / vf-split: hash & (size-1) == e -> redirect to table[e]

Keys never depend on state, only on the topology: a state change turns
into ``tc filter replace`` of the same (dev, hook, prio, handle), which the
kernel swaps atomically (make-before-break: no packet meets an empty table).
The only rules that come and go are ``arp-backup`` and the ``bcast`` chunks
on ports changing between usable and unusable. ``apply_order`` sorts a
change so the new path is complete before traffic moves onto it.

Why unicast loopback sits on the ports' egress and not on each
representor: every frame a function transmits is redirected to a port's
egress, so one set of ``lb`` rules per port serves all functions (P·(N+2)
rules instead of N² for VF↔VF). The catch: with no usable port the TX rule
drops, so VF↔VF and VF↔host unicast stop too while the LAG is down
(broadcasts are still replicated on the representors).

mirred ``ingress`` into the bond hands the frame to the host stack, which
drops frames marked PACKET_OTHERHOST; a representor therefore must carry
the bond's MAC (``eth_type_trans`` on the representor then marks frames for
the bond PACKET_HOST). Checked on the 6.1 guest: with a random representor
MAC a VF cannot ping the bond, with the bond's MAC it can.

A filter holds at most 32 actions (TCA_ACT_MAX_PRIO), so replication to many
representors is split into chunks of 31 mirrors chained with ``continue``
(gact TC_ACT_UNSPEC: classification goes on with the next prio).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from testbed.agent import mapping
from testbed.bond.ports import receiving_ports, usable_ports
from testbed.bond.state import BondState
from testbed.tc.rule import ETH_P_ARP, ETH_P_IP, ETH_P_SLOW, ROCEV2_PORT, Action, Match, Rule
from testbed.topology import Function, Nic

IPPROTO_UDP = 17
MULTICAST = "01:00:00:00:00:00"  # dst MAC with the group bit: broadcast and multicast
MULTICAST_MATCH = Match(dst_mac=MULTICAST, dst_mac_mask=MULTICAST)

# port ingress
PRIO_LACP = 1
PRIO_ARP_BACKUP = 2
PRIO_RX_VF = 3
PRIO_RX_ROCE = 4
PRIO_RX_BCAST = 10
# port egress
PRIO_LB_VF = 1
PRIO_LB_ROCE = 2
PRIO_LB_BOND = 3
PRIO_HOST_BCAST = 10
# representor ingress
PRIO_VF_BCAST = 10
PRIO_TX = 100

MAX_ACTIONS = 32  # TCA_ACT_MAX_PRIO
CONTINUE = Action("continue")  # gact TC_ACT_UNSPEC: go on with the next filter


@dataclass(frozen=True)
class Plan:
    """The desired rules and the decisions behind them (for status and logs)."""

    rules: Tuple[Rule, ...]
    usable: Tuple[str, ...]  # ports that carry offloaded traffic, in port order
    receiving: Tuple[str, ...]  # ports that deliver what arrives from the wire (a superset of usable)
    table: Tuple[Optional[str], ...]  # entry -> port (None: drop); active-backup: one entry
    tx: Mapping[str, Tuple[Optional[str], ...]]  # function -> the ports its TX entries use (read-only)

    def summary(self) -> str:
        """``usable pf1; table 32xpf1`` (entries per port) — for the log line."""
        counts: Dict[str, int] = {}
        for p in self.table:
            key = p or "drop"
            counts[key] = counts.get(key, 0) + 1
        table = " ".join(f"{n}x{p}" for p, n in counts.items())
        return f"usable {','.join(self.usable) or 'none'}; table {table}"


# --- helpers ---------------------------------------------------------------------


Devices = Optional[FrozenSet[str]]  # interfaces present in the namespace; None: assume all


def _present(devices: Devices, dev: str) -> bool:
    return devices is None or dev in devices


def _replicate(dev: str, hook: str, prio: int, match: Match, label: str, mirrors: Sequence[Action],
               tail: Sequence[Action] = ()) -> List[Rule]:
    """Mirror to many devices: chunks of mirrors chained with ``continue``; ``tail`` ends the last chunk.

    Each chunk but the last holds MAX_ACTIONS-1 mirrors + continue; the last
    holds the rest + ``tail`` (and spills into one more chunk if they do not fit).
    """
    rules: List[Rule] = []
    todo = list(mirrors)
    k = 0
    while True:
        if len(todo) + len(tail) <= MAX_ACTIONS:
            actions = tuple(todo) + tuple(tail)
            if actions:
                rules.append(Rule(dev=dev, hook=hook, prio=prio + k, handle=1, match=match, actions=actions,
                                  label=f"{label}:{k}"))
            return rules
        head, todo = todo[:MAX_ACTIONS - 1], todo[MAX_ACTIONS - 1:]
        rules.append(Rule(dev=dev, hook=hook, prio=prio + k, handle=1, match=match,
                          actions=tuple(head) + (CONTINUE,), label=f"{label}:{k}"))
        k += 1


def _roce_match(nic: Nic, dst_mac: Optional[str] = None) -> Match:
    return Match(eth_type=ETH_P_IP, ip_proto=IPPROTO_UDP, dst_port=ROCEV2_PORT, dst_ip=str(nic.address.ip),
                 dst_mac=dst_mac)


def _to(port: Optional[str]) -> Action:
    return Action("redirect", dev=port) if port else Action("drop")


# --- the rules -------------------------------------------------------------------


def _port_rules(nic: Nic, devices: Devices, port: str, receiving: bool, vf_reps: List[Function]) -> List[Rule]:
    """``receiving``: the port delivers what arrives from the wire."""
    rules = [Rule(dev=port, prio=PRIO_LACP, handle=1, match=Match(eth_type=ETH_P_SLOW),
                  actions=(Action("pass"),), label="lacp")]
    if not receiving:
        rules.append(Rule(dev=port, prio=PRIO_ARP_BACKUP, handle=1, match=Match(eth_type=ETH_P_ARP),
                          actions=(Action("pass"),), label="arp-backup"))
    for i, vf in enumerate(nic.vfs):
        if _present(devices, vf.rep):
            act = Action("redirect", dev=vf.rep) if receiving else Action("drop")
            rules.append(Rule(dev=port, prio=PRIO_RX_VF, handle=1 + i, match=Match(dst_mac=vf.mac),
                              actions=(act,), label=f"{'rx' if receiving else 'drop'}:{vf.name}"))
    if nic.rdma and _present(devices, nic.rdma.rep):
        act = Action("redirect", dev=nic.rdma.rep) if receiving else Action("drop")
        rules.append(Rule(dev=port, prio=PRIO_RX_ROCE, handle=1, match=_roce_match(nic), actions=(act,),
                          label=f"{'rx' if receiving else 'drop'}:roce"))
    if receiving and vf_reps:
        mirrors = [Action("mirror", dev=vf.rep) for vf in vf_reps]
        rules += _replicate(port, "ingress", PRIO_RX_BCAST, MULTICAST_MATCH, "bcast", mirrors)
    # egress: the eswitch's loopback, the same whatever the port's state
    for i, vf in enumerate(nic.vfs):
        if _present(devices, vf.rep):
            rules.append(Rule(dev=port, hook="egress", prio=PRIO_LB_VF, handle=1 + i, match=Match(dst_mac=vf.mac),
                              actions=(Action("redirect", dev=vf.rep),), label=f"lb:{vf.name}"))
    if nic.rdma and _present(devices, nic.rdma.rep):
        rules.append(Rule(dev=port, hook="egress", prio=PRIO_LB_ROCE, handle=1, match=_roce_match(nic, nic.mac),
                          actions=(Action("redirect", dev=nic.rdma.rep),), label="lb:roce"))
    if _present(devices, nic.bond.name):
        rules.append(Rule(dev=port, hook="egress", prio=PRIO_LB_BOND, handle=1, match=Match(dst_mac=nic.mac),
                          actions=(Action("redirect", dev=nic.bond.name, ingress=True),), label="lb:bond"))
    if vf_reps:
        mirrors = [Action("mirror", dev=vf.rep) for vf in vf_reps]
        rules += _replicate(port, "egress", PRIO_HOST_BCAST,
                            Match(src_mac=nic.mac, dst_mac=MULTICAST, dst_mac_mask=MULTICAST), "host-bcast", mirrors)
    return rules


def _rep_rules(nic: Nic, fn: Function, ctx: _Ctx) -> List[Rule]:
    rules: List[Rule] = []
    rep = fn.rep
    if fn.kind == "vf":
        mirrors = [m for dev, m in ctx.vf_mirrors if dev != rep]
        if ctx.bond_present:
            mirrors.append(Action("mirror", dev=nic.bond.name, ingress=True))
        rules += _replicate(rep, "ingress", PRIO_VF_BCAST, MULTICAST_MATCH, "vf-bcast", mirrors,
                            tail=(ctx.tx_actions[0],))
    if nic.offload.mode == "active-backup":
        rules.append(Rule(dev=rep, prio=PRIO_TX, handle=1, match=Match(), actions=(ctx.tx_actions[0],), label="tx"))
    else:
        for e, (match, act) in enumerate(zip(ctx.tx_matches, ctx.tx_actions)):
            rules.append(Rule(dev=rep, prio=PRIO_TX, handle=1 + e, match=match, actions=(act,), label=ctx.tx_labels[e]))
    return rules


@dataclass(frozen=True)
class _Ctx:
    """Objects every representor's rules share (built once per plan: 64 VFs x 32 entries add up)."""

    bond_present: bool
    vf_mirrors: Tuple[Tuple[str, Action], ...]
    tx_actions: Tuple[Action, ...]
    tx_matches: Tuple[Match, ...]
    tx_labels: Tuple[str, ...]


def _ctx(nic: Nic, devices: Devices, table: Tuple[Optional[str], ...], vf_reps: List[Function]) -> _Ctx:
    by_port = {p: _to(p) for p in set(table)}
    mask = len(table) - 1
    return _Ctx(
        bond_present=_present(devices, nic.bond.name),
        vf_mirrors=tuple((vf.rep, Action("mirror", dev=vf.rep)) for vf in vf_reps),
        tx_actions=tuple(by_port[p] for p in table),
        tx_matches=tuple(Match(hash=e, hash_mask=mask) for e in range(len(table))),
        tx_labels=tuple(f"tx:{e}" for e in range(len(table))),
    )


def plan(nic: Nic, state: BondState) -> Plan:
    return _plan(nic, usable_ports(nic, state), receiving_ports(nic, state), state.devices)


@functools.lru_cache(maxsize=16)
def _plan(nic: Nic, usable: Tuple[str, ...], receiving: Tuple[str, ...], devices: Devices) -> Plan:
    """The rules depend only on the topology, the usable and receiving ports and which devices exist.

    Cached (the result is immutable): a flapping port alternates between two
    plans, and 64 VFs make ~2,500 rules.
    """
    table = mapping.for_nic(nic, usable)
    vf_reps = [vf for vf in nic.vfs if _present(devices, vf.rep)]
    rules: List[Rule] = []
    for port in nic.ports:
        if _present(devices, port):
            rules += _port_rules(nic, devices, port, port in receiving, vf_reps)
    tx: Dict[str, Tuple[Optional[str], ...]] = {}
    ctx = _ctx(nic, devices, table, vf_reps)
    for fn in nic.functions:
        tx[fn.name] = table
        if _present(devices, fn.rep):
            rules += _rep_rules(nic, fn, ctx)
    return Plan(rules=tuple(rules), usable=usable, receiving=receiving, table=table, tx=MappingProxyType(tx))


def desired_rules(nic: Nic, state: BondState) -> List[Rule]:
    return list(plan(nic, state).rules)


# --- make-before-break ----------------------------------------------------------

ENABLE, MOVE, DISABLE = 0, 1, 2


def phase(rule: Rule, receiving: FrozenSet[str], ports: FrozenSet[str]) -> int:
    """When a changed rule is applied: new paths first, then TX moves, then old paths close.

    0: rules on ports that receive now (delivery, loopback) — the survivor
       must deliver before flows move onto it;
    1: representor rules (TX moves);
    2: rules on ports that do not receive (drop rules replace delivery).
    """
    if rule.dev not in ports:
        return MOVE
    if rule.hook == "egress":
        return ENABLE
    return ENABLE if rule.dev in receiving else DISABLE


def apply_order(nic: Nic, rules: Sequence[Rule], receiving: Sequence[str]) -> List[List[Rule]]:
    """Split ``rules`` into the three phases above (each list keeps the input order)."""
    r, ports = frozenset(receiving), frozenset(nic.ports)
    out: List[List[Rule]] = [[], [], []]
    for rule in rules:
        out[phase(rule, r, ports)].append(rule)
    return out


def rules_by_key(rules: Sequence[Rule]) -> Dict[Tuple[str, str, int, int, int], Rule]:
    return {r.key: r for r in rules}


def devices(nic: Nic) -> Tuple[str, ...]:
    """Every interface the agent puts rules on (ports, then representors)."""
    return tuple(nic.ports) + tuple(fn.rep for fn in nic.functions)
