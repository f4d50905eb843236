"""What the NIC's embedded switch should hold for a bond state (pure: no kernel, no I/O).

``plan(nic, state)`` returns a ``Plan``: the flower rules (``testbed.tc.rule.Rule``)
plus what ``testbed status`` shows (usable ports, the bucket -> port table,
each function's TX ports). ``desired_rules(nic, state)`` is ``plan(...).rules``.

Which ports are usable and which receive: ``testbed.bond.ports`` (the bond decides, the agent follows).

Two shared filter blocks, as mlx5's VF LAG binds its uplinks to one block
(``bindings()``: every representor's clsact ingress is bound to block 1, every
port's to block 2; the ports' egress stays their own). A rule in a block sees
the frames of every bound device; ``indev`` tells them apart, ``goto chain``
leads into a table held once. Layout (``block`` / ``chain`` / ``prio`` /
``handle`` / label; i = function index, p = port index, e = table entry)::

  block 1, representors' ingress: what a VF / the RDMA function transmits
    chain 0  10+k 1+i  bc:<vf>:<k>   VFs only: indev <vf>-rep, multicast dst -> mirror to the other VF
                                     reps and into the bond (chunk k); the last chunk: goto chain 1
    chain 0  100  1+i  tx:<fn>       indev <fn>-rep -> goto chain 1 (its counter: the function's TX)
    chain 1  1    1+e  entry:<e>     the TX table, once: active-backup one entry (no key) -> the active
                                     port (drop if none); hash / vf-split hash & (size-1) == e -> table[e]
  block 2, ports' ingress: frames from the wire, before the bond's rx handler
    chain 0  1    1    lacp          ethertype 0x8809 -> pass (the bond's LACP, never replicated)
    chain 0  2    1+p  arp:<port>    port not receiving only: indev <port>, ARP -> pass (ARP monitor)
    chain 0  3    1+p  rx-on:<port>  indev <port> -> goto chain 2 | not receiving: rx-off:<port> -> chain 3
    chain 2  3    1+i  rx:<vf>       dst MAC == VF i -> redirect to its rep
    chain 2  4    1    rx:roce       IPv4 UDP 4791 to the bond address -> the RDMA rep
    chain 2  4    2    rx:roce6      dual stack: IPv6 UDP 4791 to the bond's IPv6 address -> the RDMA rep
    chain 2  10+k 1    bcast:<k>     multicast dst -> mirror to VF reps (chunk k), then the bond
    chain 3  3    1+i  drop:<vf>     dst MAC == VF i -> drop
    chain 3  4    1    drop:roce     IPv4 UDP 4791 to the bond address -> drop (IPv6: drop:roce6, handle 2)
  port egress (pfX, its own): frames about to leave by this port = the eswitch's loopback
    chain 0  1    1+i  lb:<vf>       dst MAC == VF i -> redirect to its rep (bond -> VF, VF -> VF, RDMA -> VF)
    chain 0  2    1    lb:roce       dst bond MAC, IPv4 UDP 4791 to the bond address -> RDMA rep (VF -> RDMA)
                                     (IPv6: lb:roce6, handle 2)
    chain 0  3    1    lb:bond       dst bond MAC -> mirred *ingress* redirect into the bond (VF -> host)
    chain 0  10+k 1    host-bcast:<k> src bond MAC, multicast dst -> mirror to VF reps (the host's and
                                     the RDMA function's ARP/ND reach the VFs), then the wire

What a failover changes does not grow with the number of functions: the
TX table's entries (1 in active-backup, the moved buckets in hash /
vf-split), and per port that starts or stops receiving its gate (replaced)
and its ``arp`` rule (added or deleted) -- O(ports x buckets). Everything
per function (``tx:<fn>``, ``bc:``, chains 2 and 3, the loopback) is the same
in every state. A frame that no rule takes (chains 2/3: not for a VF or
the RDMA function) goes on to the bond, as before the gates existed.

vf-split is the same table with one entry per port (``mapping``): each
function's flows are split by hash over the ports, so one chain serves
every function; its halves move to the survivor and the same ones come back.

Keys never depend on state, only on the topology: a state change turns
into ``tc filter replace`` of the same (block, chain, prio, handle), which
the kernel swaps atomically (make-before-break: no packet meets an empty
table). ``apply_order`` sorts a change so the new path is complete before
traffic moves onto it.

Why unicast loopback sits on the ports' egress and not on each
representor: every frame a function transmits is redirected to a port's
egress, so one set of ``lb`` rules per port serves all functions (P·(N+2)
rules instead of N² for VF↔VF). The catch: with no usable port the TX table
drops, so VF↔VF and VF↔host unicast stop too while the LAG is down
(broadcasts are still replicated).

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
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from testbed import naming
from testbed.agent import mapping
from testbed.bond.ports import receiving_ports, usable_ports
from testbed.bond.state import BondState
from testbed.tc.rule import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ETH_P_SLOW, ROCEV2_PORT, Action, Match, Rule
from testbed.topology import Function, Nic

IPPROTO_UDP = 17
MULTICAST = "01:00:00:00:00:00"  # dst MAC with the group bit: broadcast and multicast
MULTICAST_MATCH = Match(dst_mac=MULTICAST, dst_mac_mask=MULTICAST)

# shared blocks (per network namespace: every NIC host has its own)
BLOCK_REPS, BLOCK_PORTS, BLOCKS = naming.BLOCK_REPS, naming.BLOCK_PORTS, naming.ESWITCH_BLOCKS
# block 1
PRIO_VF_BCAST = 10
PRIO_TX = 100
CHAIN_TX = 1
PRIO_TABLE = 1
# block 2
PRIO_LACP = 1
PRIO_ARP_BACKUP = 2
PRIO_GATE = 3
CHAIN_RX = 2  # a receiving port's frames
CHAIN_DROP = 3  # a port's frames while it does not receive
PRIO_RX_VF = 3
PRIO_RX_ROCE = 4
PRIO_RX_BCAST = 10
# port egress
PRIO_LB_VF = 1
PRIO_LB_ROCE = 2
PRIO_LB_BOND = 3
PRIO_HOST_BCAST = 10

MAX_ACTIONS = 32  # TCA_ACT_MAX_PRIO
CONTINUE = Action("continue")  # gact TC_ACT_UNSPEC: go on with the next filter
TO_TABLE = Action("goto", chain=CHAIN_TX)


@dataclass(frozen=True)
class Plan:
    """The desired rules and the decisions behind them (for status and logs)."""

    rules: Tuple[Rule, ...]
    usable: Tuple[str, ...]  # ports that carry offloaded traffic, in port order
    receiving: Tuple[str, ...]  # ports that deliver what arrives from the wire (a superset of usable)
    table: Tuple[Optional[str], ...]  # entry -> port (None: drop); active-backup: one entry
    tx: Mapping[str, Tuple[Optional[str], ...]]  # function -> the ports its TX entries use (read-only)
    # rules = varying (gates, ARP passes, the TX table: what a state change touches) + fixed (the same
    # objects in every plan of one device set): a diff between two plans sharing ``fixed`` needs only
    # ``varying`` (``reconcile.plan_diff``)
    varying: Tuple[Rule, ...] = field(default=(), repr=False, compare=False)
    fixed: Tuple[Rule, ...] = field(default=(), repr=False, compare=False)

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


def _replicate(base: Rule, match: Match, label: str, mirrors: Sequence[Action],
               tail: Sequence[Action] = ()) -> List[Rule]:
    """Mirror to many devices: chunks of mirrors chained with ``continue``; ``tail`` ends the last chunk.

    ``base`` says where (dev or block, chain, first prio, handle); chunk k sits at prio + k. Each chunk
    but the last holds MAX_ACTIONS-1 mirrors + continue; the last holds the rest + ``tail`` (and spills
    into one more chunk if they do not fit).
    """
    rules: List[Rule] = []
    todo = list(mirrors)
    k = 0
    while True:
        if len(todo) + len(tail) <= MAX_ACTIONS:
            actions = tuple(todo) + tuple(tail)
            if actions:
                rules.append(replace(base, prio=base.prio + k, match=match, actions=actions, label=f"{label}:{k}"))
            return rules
        head, todo = todo[:MAX_ACTIONS - 1], todo[MAX_ACTIONS - 1:]
        rules.append(replace(base, prio=base.prio + k, match=match, actions=tuple(head) + (CONTINUE,),
                             label=f"{label}:{k}"))
        k += 1


def _roce_matches(nic: Nic, dst_mac: Optional[str] = None) -> List[Tuple[int, str, Match]]:
    """RoCEv2 to the bond's address: ``(handle, label suffix, match)`` for IPv4 (handle 1, ``roce``) and, in a
    dual-stack lab, IPv6 (handle 2, ``roce6``). One (prio, handle) pair per family: the filters share a
    prio, each carries its own eth_type (the filter's protocol is ETH_P_ALL)."""
    out = [(1, "roce", Match(eth_type=ETH_P_IP, ip_proto=IPPROTO_UDP, dst_port=ROCEV2_PORT,
                             dst_ip=str(nic.address.ip), dst_mac=dst_mac))]
    if nic.address6 is not None:
        out.append((2, "roce6", Match(eth_type=ETH_P_IPV6, ip_proto=IPPROTO_UDP, dst_port=ROCEV2_PORT,
                                      dst_ip=str(nic.address6.ip), dst_mac=dst_mac)))
    return out


def _to(port: Optional[str]) -> Action:
    return Action("redirect", dev=port) if port else Action("drop")


def _in_block(block: int, chain: int, prio: int, handle: int, match: Match, actions: Tuple[Action, ...],
              label: str) -> Rule:
    return Rule(dev="", block=block, chain=chain, prio=prio, handle=handle, match=match, actions=actions,
                label=label)


# --- the rules -------------------------------------------------------------------


def _gate_rules(nic: Nic, devices: Devices, receiving: Tuple[str, ...]) -> List[Rule]:
    """Block 2, chain 0: LACP, then per port its ARP pass (not receiving) and its gate."""
    rules = [_in_block(BLOCK_PORTS, 0, PRIO_LACP, 1, Match(eth_type=ETH_P_SLOW), (Action("pass"),), "lacp")]
    for p, port in enumerate(nic.ports):
        if not _present(devices, port):
            continue
        if port not in receiving:
            rules.append(_in_block(BLOCK_PORTS, 0, PRIO_ARP_BACKUP, 1 + p, Match(indev=port, eth_type=ETH_P_ARP),
                                   (Action("pass"),), f"arp:{port}"))
        on = port in receiving
        rules.append(_in_block(BLOCK_PORTS, 0, PRIO_GATE, 1 + p, Match(indev=port),
                               (Action("goto", chain=CHAIN_RX if on else CHAIN_DROP),),
                               f"rx-{'on' if on else 'off'}:{port}"))
    return rules


def _delivery_rules(nic: Nic, devices: Devices, vf_reps: List[Function]) -> List[Rule]:
    """Block 2, chains 2 (receiving: deliver) and 3 (not receiving: drop), the same in every state."""
    rules: List[Rule] = []
    for chain, tag in ((CHAIN_RX, "rx"), (CHAIN_DROP, "drop")):
        for i, vf in enumerate(nic.vfs):
            if _present(devices, vf.rep):
                act = Action("redirect", dev=vf.rep) if chain == CHAIN_RX else Action("drop")
                rules.append(_in_block(BLOCK_PORTS, chain, PRIO_RX_VF, 1 + i, Match(dst_mac=vf.mac), (act,),
                                       f"{tag}:{vf.name}"))
        if nic.rdma and _present(devices, nic.rdma.rep):
            act = Action("redirect", dev=nic.rdma.rep) if chain == CHAIN_RX else Action("drop")
            rules += [_in_block(BLOCK_PORTS, chain, PRIO_RX_ROCE, handle, match, (act,), f"{tag}:{what}")
                      for handle, what, match in _roce_matches(nic)]
    if vf_reps:
        mirrors = [Action("mirror", dev=vf.rep) for vf in vf_reps]
        base = _in_block(BLOCK_PORTS, CHAIN_RX, PRIO_RX_BCAST, 1, Match(), (), "")
        rules += _replicate(base, MULTICAST_MATCH, "bcast", mirrors)
    return rules


def _loopback_rules(nic: Nic, devices: Devices, port: str, vf_reps: List[Function]) -> List[Rule]:
    """A port's own egress: the eswitch's loopback, the same whatever the port's state."""
    rules: List[Rule] = []
    for i, vf in enumerate(nic.vfs):
        if _present(devices, vf.rep):
            rules.append(Rule(dev=port, hook="egress", prio=PRIO_LB_VF, handle=1 + i, match=Match(dst_mac=vf.mac),
                              actions=(Action("redirect", dev=vf.rep),), label=f"lb:{vf.name}"))
    if nic.rdma and _present(devices, nic.rdma.rep):
        rules += [Rule(dev=port, hook="egress", prio=PRIO_LB_ROCE, handle=handle, match=match,
                       actions=(Action("redirect", dev=nic.rdma.rep),), label=f"lb:{what}")
                  for handle, what, match in _roce_matches(nic, nic.mac)]
    if _present(devices, nic.bond.name):
        rules.append(Rule(dev=port, hook="egress", prio=PRIO_LB_BOND, handle=1, match=Match(dst_mac=nic.mac),
                          actions=(Action("redirect", dev=nic.bond.name, ingress=True),), label="lb:bond"))
    if vf_reps:
        mirrors = [Action("mirror", dev=vf.rep) for vf in vf_reps]
        base = Rule(dev=port, hook="egress", prio=PRIO_HOST_BCAST, handle=1, match=Match(), actions=())
        rules += _replicate(base, Match(src_mac=nic.mac, dst_mac=MULTICAST, dst_mac_mask=MULTICAST), "host-bcast",
                            mirrors)
    return rules


def _function_rules(nic: Nic, devices: Devices, i: int, fn: Function, vf_reps: List[Function]) -> List[Rule]:
    """Block 1, chain 0: what function ``i`` transmits -- broadcast replication (VFs), then the table."""
    rules: List[Rule] = []
    rep = fn.rep
    if fn.kind == "vf":
        mirrors = [Action("mirror", dev=vf.rep) for vf in vf_reps if vf.rep != rep]
        if _present(devices, nic.bond.name):
            mirrors.append(Action("mirror", dev=nic.bond.name, ingress=True))
        base = _in_block(BLOCK_REPS, 0, PRIO_VF_BCAST, 1 + i, Match(), (), "")
        rules += _replicate(base, replace(MULTICAST_MATCH, indev=rep), f"bc:{fn.name}", mirrors, tail=(TO_TABLE,))
    rules.append(_in_block(BLOCK_REPS, 0, PRIO_TX, 1 + i, Match(indev=rep), (TO_TABLE,), f"tx:{fn.name}"))
    return rules


def _table_rules(nic: Nic, table: Tuple[Optional[str], ...]) -> List[Rule]:
    """Block 1, chain 1: the TX table, once for every function."""
    if nic.offload.mode == "active-backup":
        return [_in_block(BLOCK_REPS, CHAIN_TX, PRIO_TABLE, 1, Match(), (_to(table[0]),), "entry:0")]
    mask = len(table) - 1
    return [_in_block(BLOCK_REPS, CHAIN_TX, PRIO_TABLE, 1 + e, Match(hash=e, hash_mask=mask), (_to(port),),
                      f"entry:{e}") for e, port in enumerate(table)]


def plan(nic: Nic, state: BondState) -> Plan:
    return _plan(nic, usable_ports(nic, state), receiving_ports(nic, state), state.devices)


def plan_for(nic: Nic, usable: Tuple[str, ...], receiving: Tuple[str, ...], devices: Devices) -> Plan:
    """The plan for a state given by its usable and receiving ports (the agent's precomputed next states)."""
    return _plan(nic, usable, receiving, devices)


@functools.lru_cache(maxsize=64)
def _plan(nic: Nic, usable: Tuple[str, ...], receiving: Tuple[str, ...], devices: Devices) -> Plan:
    """The rules depend only on the topology, the usable and receiving ports and which devices exist.

    Cached (the result is immutable): a flapping port alternates between two
    plans, and the agent prepares the plans of the states the bond may move to
    next (one per port lost or regained).
    """
    table = mapping.for_nic(nic, usable)
    gates, fixed, entries = _gate_rules(nic, devices, receiving), _fixed_rules(nic, devices), _table_rules(nic, table)
    tx = {fn.name: table for fn in nic.functions}
    return Plan(rules=tuple(gates) + fixed + tuple(entries), usable=usable, receiving=receiving, table=table,
                tx=MappingProxyType(tx), varying=tuple(gates + entries), fixed=fixed)


@functools.lru_cache(maxsize=8)
def _fixed_rules(nic: Nic, devices: Devices) -> Tuple[Rule, ...]:
    """The rules no bond state changes (delivery, loopback, what each function transmits): built once per
    set of devices and shared by every plan (the same objects, so comparing two plans' copies is cheap)."""
    vf_reps = [vf for vf in nic.vfs if _present(devices, vf.rep)]
    rules: List[Rule] = _delivery_rules(nic, devices, vf_reps)
    for port in nic.ports:
        if _present(devices, port):
            rules += _loopback_rules(nic, devices, port, vf_reps)
    for i, fn in enumerate(nic.functions):
        if _present(devices, fn.rep):
            rules += _function_rules(nic, devices, i, fn, vf_reps)
    return tuple(rules)


def desired_rules(nic: Nic, state: BondState) -> List[Rule]:
    return list(plan(nic, state).rules)


# --- make-before-break ----------------------------------------------------------

ENABLE, MOVE, DISABLE = 0, 1, 2


def phase(rule: Rule, receiving: FrozenSet[str], ports: FrozenSet[str]) -> int:
    """When a changed rule is applied: new paths first, then TX moves, then old paths close.

    0: the paths -- delivery and drop chains, loopback, the gates (and ARP
       rules) of ports that receive now: the survivor must deliver before
       flows move onto it;
    1: the representors' block (TX moves);
    2: the gates and ARP rules of ports that do not receive.
    """
    if rule.block == BLOCK_PORTS:
        port = rule.match.indev
        return DISABLE if port in ports and port not in receiving else ENABLE
    if rule.block == BLOCK_REPS or rule.dev not in ports:
        return MOVE
    return ENABLE


def apply_order(nic: Nic, rules: Sequence[Rule], receiving: Sequence[str]) -> List[List[Rule]]:
    """Split ``rules`` into the three phases above; in each, higher chains first (a goto's target is
    complete before the goto), otherwise in the input order."""
    r, ports = frozenset(receiving), frozenset(nic.ports)
    out: List[List[Rule]] = [[], [], []]
    for rule in rules:
        out[phase(rule, r, ports)].append(rule)
    for group in out:
        group.sort(key=lambda rule: -rule.chain)
    return out


def devices(nic: Nic) -> Tuple[str, ...]:
    """Every interface the agent puts rules on or binds to a block (ports, then representors)."""
    return tuple(nic.ports) + tuple(fn.rep for fn in nic.functions)


def bindings(nic: Nic) -> Dict[str, Tuple[int, int]]:
    """device -> (ingress block, egress block) of its clsact (0: its own): ports' ingress to block 2,
    representors' to block 1."""
    out = {port: (BLOCK_PORTS, 0) for port in nic.ports}
    out.update({fn.rep: (BLOCK_REPS, 0) for fn in nic.functions})
    return out
