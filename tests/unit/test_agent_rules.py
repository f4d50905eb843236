"""The pure rule computation, exhaustively: offload mode x bond mode x port count x every port-state combination.

Each plan is checked against invariants that do not trust the implementation:
an independent oracle says which ports are usable, and every rule set must

* give every representor exactly one TX decision per hash value,
* never send or deliver through a port the bond does not use,
* deliver VF and RoCEv2 frames on the ports the bond receives on (usable ports; in balance-xor every
  enslaved port, updelay or not) and drop them on the others,
* keep LACP (and, on ports not receiving, ARP) flowing to the bond,
* replicate broadcast to every VF representor exactly once (chunked by 32 actions),
* keep the eswitch loopback on every port, whatever its state,
* use unique, state-independent keys, so a state change is a replace in place;

and transitions must move only what changed: a dead port's buckets, the same
ones back on recovery, the bond's active port in active-backup.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Dict, Iterable, List, Optional, Tuple

import pytest

from testbed import loader
from testbed.agent import mapping, rules
from testbed.bond.state import BondState, PortState
from testbed.tc import canonical, codec, ops
from testbed.tc.rule import ETH_P_ARP, ETH_P_SLOW, Action, Rule
from testbed.topology import Nic

CD = 0x3F  # actor state: activity..distributing
C_ONLY = 0x1F  # collecting, not distributing
SYNC_ONLY = 0x0F


def make_nic(bond_mode: str, offload: Optional[str] = None, ports: int = 2, vfs: int = 2, rdma: bool = True,
             buckets: int = 16, primary: Optional[str] = None, dual: bool = False) -> Nic:
    """A NIC host's NIC; ``dual``: a dual-stack lab whose last VF is IPv6-only."""
    bond = f"{{mode: {bond_mode}, miimon: 10" + (f", primary: {primary}" if primary else "") + "}"
    off = f"{{mode: {offload}, buckets: {buckets}}}" if offload else "{}"
    if dual and vfs:
        vfs = "[" + ", ".join(f"{{name: vf{i}" + (", address: none}" if i == vfs - 1 else "}")
                              for i in range(vfs)) + "]"
    text = f"""
name: t
ipv6: {str(dual).lower()}
hosts:
  server:
    nic:
      ports: {ports}
      address: 198.18.0.1/24
      bond: {bond}
      offload: {off}
      vfs: {vfs}
      rdma: {str(rdma).lower()}
  client: {{address: 198.18.0.100/24}}
"""
    return loader.loads(text).host("server").nic


def all_devices(nic: Nic) -> frozenset:
    return frozenset(nic.ports) | {fn.rep for fn in nic.functions} | {nic.bond.name, "lo"}


# --- port conditions per bond mode, and the oracle -------------------------------------

XOR_CONDITIONS = ("up", "down", "fail", "back", "unenslaved", "missing")
LACP_CONDITIONS = ("cd", "c-only", "sync-only", "backup-cd", "down", "other-aggregator", "missing")


def port(name: str, cond: str, *, active: bool = True) -> PortState:
    if cond == "missing":
        return PortState(name=name, present=False, admin_up=False, carrier=False, enslaved=False)
    if cond == "unenslaved":
        return PortState(name=name, enslaved=False)
    carrier = cond not in ("down",)
    mii = {"up": "up", "down": "down", "fail": "fail", "back": "back"}.get(cond, "down" if cond == "down" else "up")
    actor = {"cd": CD, "c-only": C_ONLY, "sync-only": SYNC_ONLY, "backup-cd": CD, "other-aggregator": CD}.get(cond)
    state = "backup" if cond in ("backup-cd", "c-only", "sync-only", "down") or not active else "active"
    agg = 2 if cond == "other-aggregator" else (1 if actor is not None else None)
    return PortState(name=name, carrier=carrier, operstate="UP" if carrier else "LOWERLAYERDOWN", slave_state=state,
                     mii=mii, ad_actor=actor, ad_aggregator=agg)


def bond_state(nic: Nic, ports: Iterable[PortState], *, mode: Optional[str] = None, active: Optional[str] = None,
               present_extra: Iterable[str] = (), missing: Iterable[str] = (), bond_up: bool = True) -> BondState:
    ports = tuple(ports)
    devices = (all_devices(nic) | set(present_extra)) - set(missing) - {p.name for p in ports if not p.present}
    return BondState(bond=nic.bond.name, present=nic.bond.name in devices, admin_up=bond_up,
                     mode=mode or nic.bond.mode, active=active, ad_aggregator=1 if nic.bond.mode == "802.3ad" else None,
                     ports=ports, devices=frozenset(devices))


def oracle_usable(nic: Nic, conds: Dict[str, str], active: Optional[str]) -> Tuple[str, ...]:
    mode = nic.bond.mode
    if mode == "active-backup":  # the bond's active port, while the bond says its link is up
        return (active,) if active is not None and conds.get(active, "up") == "up" else ()
    # link_up is MII up or fail (in downdelay: bond_lower_state_changed), as the LAG-offload drivers read it
    ok = {"balance-xor": ("up", "fail"), "802.3ad": ("cd",)}[mode]
    return tuple(p for p in nic.ports if conds[p] in ok)


def oracle_receiving(nic: Nic, conds: Dict[str, str], active: Optional[str]) -> Tuple[str, ...]:
    """balance-xor takes frames on every enslaved port (never inactive), also without MII up or in updelay;
    active-backup and 802.3ad only on the ports they use."""
    if nic.bond.mode != "balance-xor":
        return oracle_usable(nic, conds, active)
    return tuple(p for p in nic.ports if conds[p] not in ("unenslaved", "missing"))


def states_for(nic: Nic):
    """(conditions, active, BondState) for every combination the bond mode allows."""
    if nic.bond.mode == "active-backup":
        for carriers in itertools.product((True, False), repeat=len(nic.ports)):
            for active in (None,) + nic.ports:
                conds = {p: "up" if c else "down" for p, c in zip(nic.ports, carriers)}
                ps = [port(p, conds[p], active=(p == active)) for p in nic.ports]
                yield conds, active, bond_state(nic, ps, active=active)
        return
    choices = XOR_CONDITIONS if nic.bond.mode == "balance-xor" else LACP_CONDITIONS
    if len(nic.ports) >= 4:  # 6^4 combinations add nothing over these four per port
        choices = ("up", "down", "unenslaved", "missing") if nic.bond.mode == "balance-xor" else (
            "cd", "c-only", "down", "missing")
    for combo in itertools.product(choices, repeat=len(nic.ports)):
        conds = dict(zip(nic.ports, combo))
        yield conds, None, bond_state(nic, [port(p, conds[p]) for p in nic.ports])


# --- a model of tc's classification, to check what the rules *do* ---------------------------


def _mac(value: str) -> int:
    return int(value.replace(":", ""), 16)


def matches(m, frame: Dict[str, object]) -> bool:
    """Does flower key set ``m`` match ``frame`` (a dict of header fields, ``indev`` and ``hash``)?"""
    for key in ("indev", "eth_type", "ip_proto", "dst_ip", "dst_port"):
        if getattr(m, key) is not None and frame.get(key) != getattr(m, key):
            return False
    for side in ("dst", "src"):
        want = getattr(m, f"{side}_mac")
        if want is not None:
            mask = _mac(getattr(m, f"{side}_mac_mask") or "ff:ff:ff:ff:ff:ff")
            if _mac(frame[f"{side}_mac"]) & mask != _mac(want) & mask:  # type: ignore[arg-type]
                return False
    if m.hash is not None and frame["hash"] & (0xFFFFFFFF if m.hash_mask is None else m.hash_mask) != m.hash:
        return False
    return True


def by_chain(rules_here: Iterable[Rule]) -> Dict[int, List[Rule]]:
    out: Dict[int, List[Rule]] = {}
    for r in sorted(rules_here, key=lambda r: (r.prio, r.handle)):
        out.setdefault(r.chain, []).append(r)
    return out


def classify(rules_here: Dict[int, List[Rule]], frame: Dict[str, object]) -> Tuple[object, Counter]:
    """Run a frame through one filter list (a block, or a device's hook) as cls_api does: chain 0 by prio,
    ``continue`` to the next prio, ``goto`` into a chain, mirrors collected; -> (verdict, mirrors).

    verdict: "pass" (no rule took it, or only mirrors: on to the stack), "drop" or ("redirect", dev, ingress).
    """
    mirrors: Counter = Counter()
    chain, after_prio, hops = 0, 0, 0
    while True:
        hops += 1
        assert hops < 100, "classification loops"
        hit = next((r for r in rules_here.get(chain, ()) if r.prio > after_prio and matches(r.match, frame)), None)
        if hit is None:
            return "pass", mirrors
        for a in hit.actions:
            if a.kind == "mirror":
                mirrors[(a.dev, a.ingress)] += 1
            elif a.kind == "continue":
                after_prio = hit.prio
                break
            elif a.kind == "goto":
                chain, after_prio = a.chain, 0
                break
            elif a.kind == "redirect":
                return ("redirect", a.dev, a.ingress), mirrors
            else:
                return a.kind, mirrors
        else:
            return "pass", mirrors  # only mirrors (pipe): the frame goes on


CLIENT_MAC = "02:00:00:00:00:99"


def frames(nic: Nic) -> Dict[str, Dict[str, object]]:
    """Frames arriving from the wire, by what they are."""
    out: Dict[str, Dict[str, object]] = {
        "lacp": dict(eth_type=ETH_P_SLOW, dst_mac="01:80:c2:00:00:02", src_mac=CLIENT_MAC),
        "arp-bond": dict(eth_type=ETH_P_ARP, dst_mac=nic.mac, src_mac=CLIENT_MAC),
        "mcast": dict(eth_type=0x86DD, dst_mac="33:33:00:00:00:01", src_mac=CLIENT_MAC),
        "bcast-arp": dict(eth_type=ETH_P_ARP, dst_mac="ff:ff:ff:ff:ff:ff", src_mac=CLIENT_MAC),
        "bond": dict(eth_type=0x0800, ip_proto=17, dst_ip=str(nic.address.ip), dst_port=9, dst_mac=nic.mac,
                     src_mac=CLIENT_MAC),
        "roce": dict(eth_type=0x0800, ip_proto=17, dst_ip=str(nic.address.ip), dst_port=4791, dst_mac=nic.mac,
                     src_mac=CLIENT_MAC),
    }
    if nic.address6 is not None:
        out["bond6"] = dict(eth_type=0x86DD, ip_proto=17, dst_ip=str(nic.address6.ip), dst_port=9, dst_mac=nic.mac,
                            src_mac=CLIENT_MAC)
        out["roce6"] = dict(eth_type=0x86DD, ip_proto=17, dst_ip=str(nic.address6.ip), dst_port=4791,
                            dst_mac=nic.mac, src_mac=CLIENT_MAC)
        out["ns"] = dict(eth_type=0x86DD, ip_proto=58, dst_ip="ff02::1:ff00:1", dst_mac="33:33:ff:00:00:01",
                         src_mac=CLIENT_MAC)  # a neighbour solicitation for the bond's address
        out["roce4-to-v6"] = dict(eth_type=0x0800, ip_proto=17, dst_ip=str(nic.address6.ip), dst_port=4791,
                                  dst_mac=nic.mac, src_mac=CLIENT_MAC)  # a key of the wrong family: no match
    for vf in nic.vfs:
        ip = vf.ip()
        out[vf.name] = dict(eth_type=0x86DD if ip.version == 6 else 0x0800, ip_proto=17, dst_ip=str(ip.ip),
                            dst_port=9, dst_mac=vf.mac, src_mac=CLIENT_MAC)
    return out


def in_block(plan: rules.Plan, block: int) -> List[Rule]:
    return [r for r in plan.rules if r.block == block]


_CHECKED: Dict[tuple, rules.Plan] = {}  # plans (cached, immutable) already checked for these ports


def on_dev(plan: rules.Plan, dev: str, hook: str) -> List[Rule]:
    return [r for r in plan.rules if not r.block and r.dev == dev and r.hook == hook]


def check_chain(chain: List[Rule], want_mirrors: Counter, tail: Tuple[Action, ...] = ()) -> None:
    """A replication chain: consecutive prios, continue between chunks, every target once, the tail last."""
    assert chain, "missing replication chain"
    prios = [r.prio for r in chain]
    assert prios == list(range(prios[0], prios[0] + len(chain)))
    got: Counter = Counter()
    for i, r in enumerate(chain):
        assert len(r.actions) <= rules.MAX_ACTIONS
        last = i == len(chain) - 1
        assert (r.actions[-1] == rules.CONTINUE) != last, f"{r.label}: continue only between chunks"
        got.update((a.dev, a.ingress) for a in r.actions if a.kind == "mirror")
        assert not [a for a in r.actions[:-1] if a.kind in ("redirect", "drop", "goto")], "a verdict before the end"
    assert got == want_mirrors
    if tail:
        assert chain[-1].actions[-len(tail):] == tail


_ENCODED: set = set()  # rules codec.pack() already accepted (the same rule recurs across states)


def check_plan(nic: Nic, state: BondState, plan: rules.Plan, usable: Tuple[str, ...],
               receiving: Optional[Tuple[str, ...]] = None) -> None:
    receiving = usable if receiving is None else receiving
    assert plan.usable == usable
    assert plan.receiving == receiving and set(usable) <= set(receiving)
    devs = state.devices
    memo = (id(plan), usable, receiving, devs)
    if _CHECKED.get(memo) is plan:
        return
    _CHECKED[memo] = plan
    # identity: unique keys, short labels, encodable; rules live in the two blocks or on a port's egress
    keys = [r.key for r in plan.rules]
    assert len(keys) == len(set(keys)), "duplicate rule keys"
    ifindex = {name: i for i, name in enumerate(sorted(devs), start=1)}
    for r in plan.rules:
        if r.block:
            assert r.block in rules.BLOCKS and r.dev == ""
            assert r.match.indev is None or r.match.indev in devs, f"{r.label} matches missing {r.match.indev}"
        else:
            assert r.dev in nic.ports and r.hook == "egress" and r.dev in devs, f"{r.label} on {r.dev} {r.hook}"
        assert r.label and len(r.label.encode()) <= 16, r.label
        assert 1 <= len(r.actions) <= rules.MAX_ACTIONS
        for a in r.actions:
            if a.kind in ("redirect", "mirror"):
                assert a.dev in devs, f"{r.label} targets missing {a.dev}"
                if a.dev in nic.ports:
                    assert a.dev in usable, f"{r.label} sends to unusable port {a.dev}"
        if r not in _ENCODED:
            assert canonical.canonical(r) == r, f"{r.label}: not in the kernel's canonical form (the fast diff uses ==)"
            if rules.CONTINUE not in r.actions:
                codec.pack(r, ifindex.get(r.dev, 0), ifindex.__getitem__)  # the tc layer accepts it
            _ENCODED.add(r)
    # the table
    size = 1 if nic.offload.mode == "active-backup" else mapping.table_size(
        len(nic.ports), nic.offload.buckets if nic.offload.mode == "hash" else 1)
    assert len(plan.table) == size
    assert set(plan.table) <= set(usable) | {None}
    if usable:
        assert None not in plan.table
    else:
        assert set(plan.table) == {None}
    if nic.offload.mode == "active-backup":
        assert plan.table == ((usable[0],) if usable else (None,))
    entries = [r for r in in_block(plan, rules.BLOCK_REPS) if r.chain == rules.CHAIN_TX]
    assert len(entries) == size, "the TX table is held once"
    vf_reps = [vf.rep for vf in nic.vfs if vf.rep in devs]
    reps = Counter((rep, False) for rep in vf_reps)
    # ports: what a frame arriving on each does
    block2 = in_block(plan, rules.BLOCK_PORTS)
    chains2 = by_chain(block2)
    for p in nic.ports:
        if p not in devs:
            assert not on_dev(plan, p, "egress") and not [r for r in block2 if r.match.indev == p]
            continue
        for what, f in frames(nic).items():
            verdict, mirrors = classify(chains2, {**f, "indev": p})
            if what in ("lacp", "arp-bond", "bond", "bond6", "roce4-to-v6"):
                want = ("pass", Counter())
            elif what in ("mcast", "bcast-arp", "ns"):
                want = ("pass", reps if p in receiving else Counter())
            elif what in ("roce", "roce6"):
                if nic.rdma and nic.rdma.rep in devs:
                    want = (("redirect", nic.rdma.rep, False) if p in receiving else "drop", Counter())
                else:
                    want = ("pass", Counter())
            else:  # a VF's unicast
                vf = next(v for v in nic.vfs if v.name == what)
                if vf.rep in devs:
                    want = (("redirect", vf.rep, False) if p in receiving else "drop", Counter())
                else:
                    want = ("pass", Counter())
            assert (verdict, mirrors) == want, f"{what} arriving on {p} ({'' if p in receiving else 'not '}receiving)"
        gate = [r for r in block2 if r.match.indev == p and r.prio == rules.PRIO_GATE]
        assert [r.label for r in gate] == [f"rx-{'on' if p in receiving else 'off'}:{p}"]
        # egress loopback: independent of the port's state
        eg = on_dev(plan, p, "egress")
        lb = {r.label: r for r in eg if r.label.startswith("lb:")}
        for vf in nic.vfs:
            if vf.rep in devs:
                assert lb[f"lb:{vf.name}"].actions == (Action("redirect", vf.rep),)
        if nic.bond.name in devs:
            assert lb["lb:bond"].actions == (Action("redirect", nic.bond.name, ingress=True),)
            assert lb["lb:bond"].match.dst_mac == nic.mac
        if nic.rdma and nic.rdma.rep in devs:
            for name in ("lb:roce", "lb:roce6") if nic.address6 else ("lb:roce",):
                assert lb[name].prio < lb["lb:bond"].prio if "lb:bond" in lb else True
                assert lb[name].actions == (Action("redirect", nic.rdma.rep),) and lb[name].match.dst_mac == nic.mac
            assert ("lb:roce6" in lb) == (nic.address6 is not None)
        host_b = [r for r in eg if r.label.startswith("host-bcast:")]
        if vf_reps:
            check_chain(host_b, reps)
            assert all(r.match.src_mac == nic.mac for r in host_b)
    # representors: every hash value of every function meets exactly its table entry
    block1 = in_block(plan, rules.BLOCK_REPS)
    chains1 = by_chain(block1)
    every_entry = True  # the first function meets every entry; the rest share its table (two samples each)
    for fn in nic.functions:
        mine = [r for r in block1 if r.match.indev == fn.rep]
        if fn.rep not in devs:
            assert not mine
            continue
        tx = [r for r in mine if r.prio == rules.PRIO_TX]
        assert [(r.label, r.actions) for r in tx] == [(f"tx:{fn.name}", (rules.TO_TABLE,))]
        hashes, every_entry = (range(size) if every_entry else (0, size - 1)), False
        for h in hashes:
            unicast = dict(eth_type=0x0800, dst_mac=CLIENT_MAC, src_mac=fn.mac if fn.kind == "vf" else nic.mac,
                           indev=fn.rep, hash=h * 0x10001)
            port = plan.table[(h * 0x10001) & (size - 1)]
            want = ("redirect", port, False) if port else "drop"
            assert classify(chains1, unicast) == (want, Counter())
            verdict, mirrors = classify(chains1, {**unicast, "dst_mac": "ff:ff:ff:ff:ff:ff"})
            assert verdict == want
            if fn.kind == "vf":
                other = Counter((rep, False) for rep in vf_reps if rep != fn.rep)
                if nic.bond.name in devs:
                    other[(nic.bond.name, True)] += 1
                assert mirrors == other
            else:
                assert mirrors == Counter()
        vb = sorted((r for r in mine if r.label.startswith("bc:")), key=lambda r: r.prio)
        if fn.kind == "vf":
            want_m = Counter((rep, False) for rep in vf_reps if rep != fn.rep)
            if nic.bond.name in devs:
                want_m[(nic.bond.name, True)] += 1
            check_chain(vb, want_m, tail=(rules.TO_TABLE,))
        else:
            assert not vb
        assert plan.tx[fn.name] == plan.table


SHAPES = [
    ("active-backup", None, 2), ("active-backup", None, 3), ("active-backup", None, 4),
    ("balance-xor", "hash", 2), ("balance-xor", "hash", 3), ("balance-xor", "hash", 4),
    ("balance-xor", "vf-split", 2), ("balance-xor", "vf-split", 3),
    ("802.3ad", "hash", 2), ("802.3ad", "hash", 3), ("802.3ad", "vf-split", 2),
]


@pytest.mark.parametrize("bond_mode,offload,ports", SHAPES)
@pytest.mark.parametrize("vfs,rdma", [(0, True), (2, True), (2, False), (5, True)])
def test_every_port_state_combination(bond_mode, offload, ports, vfs, rdma):
    nic = make_nic(bond_mode, offload, ports=ports, vfs=vfs, rdma=rdma)
    n = 0
    for conds, active, state in states_for(nic):
        plan = rules.plan(nic, state)
        check_plan(nic, state, plan, oracle_usable(nic, conds, active), oracle_receiving(nic, conds, active))
        assert rules.desired_rules(nic, state) == list(plan.rules)
        assert rules.plan(nic, state) == plan  # pure: same state, same plan
        n += 1
    assert n >= 2 ** ports


@pytest.mark.parametrize("bond_mode,offload,ports", [SHAPES[0], SHAPES[-1], ("balance-xor", "vf-split", 3)])
def test_dual_stack_every_port_state(bond_mode, offload, ports):
    """A dual-stack lab: RoCEv2 over IPv6 to the bond's IPv6 address is steered to the RDMA function (and
    dropped on a port that does not receive) like IPv4; an IPv6-only VF gets its frames by its MAC; neighbour
    solicitations reach every VF as ARP does."""
    nic = make_nic(bond_mode, offload, ports=ports, vfs=3, dual=True)
    assert nic.vfs[-1].address is None and nic.vfs[-1].address6 is not None
    for conds, active, state in states_for(nic):
        plan = rules.plan(nic, state)
        check_plan(nic, state, plan, oracle_usable(nic, conds, active), oracle_receiving(nic, conds, active))
    plan = rules.plan(nic, bond_state(nic, [port(p, "up") for p in nic.ports], active=nic.ports[0]))
    v6 = [r for r in plan.rules if r.label.endswith("roce6")]
    assert sorted(r.label for r in v6) == sorted(["drop:roce6", "rx:roce6"] + ["lb:roce6"] * ports)
    assert all(r.match.dst_ip == str(nic.address6.ip) and r.handle == 2 for r in v6)


def test_dual_stack_failover_changes_as_many_rules_as_ipv4():
    """The IPv6 rules are per function, the same in every state: a failover changes what it changes in an
    IPv4-only lab."""
    def changes(nic: Nic) -> int:
        up = bond_state(nic, [port(p, "up") for p in nic.ports], active="pf0")
        down = bond_state(nic, [port("pf0", "down", active=False)] + [port(p, "up") for p in nic.ports[1:]],
                          active="pf1")
        a, b = set(rules.plan(nic, up).rules), set(rules.plan(nic, down).rules)
        return len(a ^ b)

    assert changes(make_nic("active-backup", vfs=3, dual=True)) == changes(make_nic("active-backup", vfs=3))


@pytest.mark.parametrize("vfs", [31, 32, 33, 40, 64])
def test_many_vfs_chain_replication_within_the_action_limit(vfs):
    nic = make_nic("balance-xor", "hash", vfs=vfs, buckets=16)
    state = bond_state(nic, [port(p, "up") for p in nic.ports])
    plan = rules.plan(nic, state)
    check_plan(nic, state, plan, nic.ports)
    chained = [r for r in plan.rules if rules.CONTINUE in r.actions]
    assert bool(chained) == (vfs > 31)  # a VF's own chain: vfs-1 others + the bond + goto


def test_missing_representor_bond_and_port():
    nic = make_nic("balance-xor", "hash", vfs=3)
    gone = {nic.vfs[1].rep, nic.rdma.rep}
    state = bond_state(nic, [port("pf0", "up"), port("pf1", "missing")], missing=gone)
    plan = rules.plan(nic, state)
    check_plan(nic, state, plan, ("pf0",))
    for r in plan.rules:
        assert r.dev not in gone | {"pf1"} and r.match.indev not in gone | {"pf1"}
        assert not {a.dev for a in r.actions} & (gone | {"pf1"})
    no_bond = bond_state(nic, [port(p, "up") for p in nic.ports], missing={nic.bond.name})
    plan = rules.plan(nic, no_bond)
    check_plan(nic, no_bond, plan, ())
    assert set(plan.table) == {None}


def test_bond_admin_down_uses_no_port():
    nic = make_nic("balance-xor", "hash")
    state = bond_state(nic, [port(p, "up") for p in nic.ports], bond_up=False)
    assert rules.plan(nic, state).usable == ()


# --- transitions -------------------------------------------------------------------------


def changes(before: rules.Plan, after: rules.Plan):
    add, replace, delete = ops.diff(after.rules, before.rules)
    return add, replace, delete


def entries(rs: Iterable[Rule]) -> List[Rule]:
    return [r for r in rs if r.block == rules.BLOCK_REPS and r.chain == rules.CHAIN_TX]


def ab_plan(nic: Nic, active: Optional[str], down: Iterable[str] = ()) -> rules.Plan:
    down = set(down)
    ps = [port(p, "down" if p in down else "up", active=(p == active)) for p in nic.ports]
    return rules.plan(nic, bond_state(nic, ps, active=active))


def test_active_backup_failover_moves_the_table_entry_and_swaps_the_gates():
    nic = make_nic("active-backup", vfs=2, rdma=True)
    before, after = ab_plan(nic, "pf0"), ab_plan(nic, "pf1", down={"pf0"})
    add, replace, delete = changes(before, after)
    # TX: the one table entry, replaced in place, now to pf1
    assert [(r.label, r.actions) for r in replace if r.block == rules.BLOCK_REPS] == [
        ("entry:0", (Action("redirect", "pf1"),))]
    # RX: pf1's gate now leads to delivery, pf0's to the drop chain -- replaced, same keys
    gates = {r.label for r in replace if r.block == rules.BLOCK_PORTS}
    assert gates == {"rx-on:pf1", "rx-off:pf0"}
    # only the ARP pass of the port that stops receiving comes (and the other's goes)
    assert [r.label for r in add] == ["arp:pf0"] and [r.label for r in delete] == ["arp:pf1"]
    assert len(add + replace + delete) == 5


@pytest.mark.parametrize("bond_mode,offload", [("active-backup", None), ("balance-xor", "hash"), ("802.3ad", "hash"),
                                               ("balance-xor", "vf-split")])
def test_failover_changes_do_not_grow_with_the_number_of_functions(bond_mode, offload):
    """What a failover rewrites is O(ports x buckets): the same for 2 VFs and 64 (with and without RDMA)."""
    counts = set()
    good = "cd" if bond_mode == "802.3ad" else "up"
    for vfs, rdma in ((2, False), (2, True), (64, True)):
        nic = make_nic(bond_mode, offload, vfs=vfs, rdma=rdma)
        if bond_mode == "active-backup":
            before, after = ab_plan(nic, "pf0"), ab_plan(nic, "pf1", down={"pf0"})
        else:
            before = rules.plan(nic, bond_state(nic, [port(p, good) for p in nic.ports]))
            after = rules.plan(nic, bond_state(nic, [port("pf0", "down"), port("pf1", good)]))
        there, back = changes(before, after), changes(after, before)
        counts.add((sum(map(len, there)), sum(map(len, back))))
    assert len(counts) == 1, counts
    (there, back), = counts
    # active-backup: the entry, two gates, an ARP pass added and one deleted; hash: pf0's 16 entries (and in
    # 802.3ad pf0's gate and ARP pass: balance-xor still receives on a dead port); vf-split: pf0's entry
    want = {"active-backup": 5, "hash": 16 + (2 if bond_mode == "802.3ad" else 0), "vf-split": 1}
    assert there == back == want[offload or "active-backup"], counts


def test_active_backup_follows_the_bonds_choice_including_primary_reselect():
    """The agent never re-derives the bond's choice: whatever IFLA_BOND_ACTIVE_SLAVE says, TX follows."""
    nic = make_nic("active-backup", ports=3, primary="pf0")
    sequence = [  # (what the bond reports as active, ports down) -- primary_reselect always
        ("pf0", set()), ("pf1", {"pf0"}), ("pf2", {"pf0", "pf1"}), (None, {"pf0", "pf1", "pf2"}),
        ("pf2", {"pf0", "pf1"}), ("pf0", {"pf1"}),  # pf0 back: the bond reselects the primary
        ("pf1", set()),  # primary_reselect failure / an admin's ifenslave -c: still followed
    ]
    for active, down in sequence:
        plan = ab_plan(nic, active, down)
        assert plan.table == (active,)
        assert plan.usable == ((active,) if active else ())
        assert [r.actions for r in entries(plan.rules)] == [(rules._to(active),)]


def test_active_backup_recovery_restores_the_original_rules():
    nic = make_nic("active-backup", vfs=3)
    start = ab_plan(nic, "pf0")
    assert ab_plan(nic, None, down={"pf0", "pf1"}).table == (None,)
    assert ab_plan(nic, "pf0").rules == start.rules


@pytest.mark.parametrize("bond_mode", ["balance-xor", "802.3ad"])
@pytest.mark.parametrize("ports", [2, 3, 4])
def test_hash_failure_moves_only_the_dead_ports_buckets(bond_mode, ports):
    nic = make_nic(bond_mode, "hash", ports=ports, vfs=2, buckets=16)
    good = "up" if bond_mode == "balance-xor" else "cd"
    full = rules.plan(nic, bond_state(nic, [port(p, good) for p in nic.ports]))
    native = full.table
    for dead in nic.ports:
        after = rules.plan(nic, bond_state(nic, [port(p, "down" if p == dead else good) for p in nic.ports]))
        add, replace, delete = changes(full, after)
        moved = {e for e, p in enumerate(native) if p == dead}
        tx = {r.match.hash for r in entries(replace)}
        assert tx == moved, f"replaced entries {sorted(tx)} != the dead port's {sorted(moved)}"
        assert not entries(add + delete)
        # nothing per function changes, ever
        assert not [r for r in add + replace + delete if r.block == rules.BLOCK_REPS and r.chain == 0]
        # port rules: only the dead port's gate and ARP pass -- in 802.3ad; balance-xor still receives on it
        # (the bond does), so its rules stay and a failover is TX entries only
        ports_changed = {r.match.indev for r in add + replace + delete if r.block == rules.BLOCK_PORTS}
        assert ports_changed == ({dead} if bond_mode == "802.3ad" else set())
        assert not [r for r in add + replace + delete if not r.block]  # the loopback never changes
        # recovery: the same entries back, native everywhere
        add2, replace2, delete2 = changes(after, full)
        assert {r.match.hash for r in entries(replace2)} == moved
        assert full.rules == rules.plan(nic, bond_state(nic, [port(p, good) for p in nic.ports])).rules


def test_hash_all_down_drops_then_recovers_native():
    nic = make_nic("balance-xor", "hash", vfs=2)
    up = rules.plan(nic, bond_state(nic, [port(p, "up") for p in nic.ports]))
    down = rules.plan(nic, bond_state(nic, [port(p, "down") for p in nic.ports]))
    assert set(down.table) == {None}
    assert {r.actions for r in entries(down.rules)} == {(Action("drop"),)}
    assert rules.plan(nic, bond_state(nic, [port(p, "up") for p in nic.ports])).rules == up.rules


def test_vf_split_halves_move_to_the_survivor_and_the_same_come_back():
    nic = make_nic("balance-xor", "vf-split", vfs=4, rdma=False)
    both = rules.plan(nic, bond_state(nic, [port("pf0", "up"), port("pf1", "up")]))
    assert both.table == ("pf0", "pf1")
    only1 = rules.plan(nic, bond_state(nic, [port("pf0", "down"), port("pf1", "up")]))
    assert only1.table == ("pf1", "pf1")
    assert {r.match.hash: r.actions[0].dev for r in entries(only1.rules)} == {0: "pf1", 1: "pf1"}
    for vf in nic.vfs:  # every VF's flows go through the one table
        assert [r.actions for r in only1.rules if r.match.indev == vf.rep and r.prio == rules.PRIO_TX] == [
            (rules.TO_TABLE,)]
    _, replace, _ = changes(only1, both)
    assert [(r.label, r.match.hash) for r in replace] == [("entry:0", 0)]


@pytest.mark.parametrize("cond", ["c-only", "sync-only", "backup-cd", "other-aggregator"])
def test_lacp_port_with_carrier_but_not_distributing_is_not_used(cond):
    nic = make_nic("802.3ad", "hash")
    state = bond_state(nic, [port("pf0", cond), port("pf1", "cd")])
    assert state.port("pf0").carrier
    plan = rules.plan(nic, state)
    assert plan.usable == ("pf1",)
    assert set(plan.table) == {"pf1"}


def test_bond_reporting_another_mode_is_followed():
    """If someone switches the bond to active-backup under a hash lab, the table follows its active port."""
    nic = make_nic("balance-xor", "hash")
    state = bond_state(nic, [port("pf0", "up", active=False), port("pf1", "up")], mode="active-backup", active="pf1")
    assert set(rules.plan(nic, state).table) == {"pf1"}


# --- keys and make-before-break --------------------------------------------------------------


@pytest.mark.parametrize("bond_mode,offload,ports", SHAPES)
def test_keys_do_not_depend_on_state_except_the_extras(bond_mode, offload, ports):
    nic = make_nic(bond_mode, offload, ports=ports, vfs=3)
    seen: Dict[tuple, tuple] = {}
    always = None
    for _conds, _active, state in states_for(nic):
        plan = rules.plan(nic, state)
        keys = {r.key for r in plan.rules if not r.label.startswith("arp:")}
        if state.devices == all_devices(nic):
            always = keys if always is None else always
            assert keys == always, "only the ARP passes come and go"
        for r in plan.rules:
            shape = canonical.mask_shape(r.match)
            assert seen.setdefault(r.key, shape) == shape, f"{r.key}: mask shape changes with state"


def test_apply_order_new_path_first_then_tx_then_old_path():
    nic = make_nic("active-backup", vfs=2)
    before, after = ab_plan(nic, "pf0"), ab_plan(nic, "pf1", down={"pf0"})
    add, replace, delete = changes(before, after)
    phases = rules.apply_order(nic, add + replace + delete, after.receiving)
    assert {r.label for r in phases[0]} == {"rx-on:pf1", "arp:pf1"}
    assert {r.label for r in phases[1]} == {"entry:0"}
    assert {r.label for r in phases[2]} == {"rx-off:pf0", "arp:pf0"}
    assert sum(map(len, phases)) == len(add + replace + delete)
    # installing from nothing: a goto's target chain before the goto, in every phase
    for group in rules.apply_order(nic, list(before.rules), before.receiving):
        chains = [r.chain for r in group]
        assert chains == sorted(chains, reverse=True)


def test_balance_xor_port_in_updelay_receives_but_carries_no_tx():
    """The bond takes frames on a balance-xor port during its updelay (it never marks the slave inactive) and
    the switch's LAG already sends there: the port delivers to the VFs, but no TX entry uses it yet."""
    nic = make_nic("balance-xor", "hash", vfs=2)
    plan = rules.plan(nic, bond_state(nic, [port("pf0", "back"), port("pf1", "up")]))
    assert plan.usable == ("pf1",) and plan.receiving == ("pf0", "pf1")
    assert set(plan.table) == {"pf1"}
    pf0 = {r.label for r in plan.rules if r.match.indev == "pf0"}
    assert pf0 == {"rx-on:pf0"}
    # 802.3ad is different: a port that is not collecting+distributing is inactive and drops
    lacp = make_nic("802.3ad", "hash", vfs=2)
    plan = rules.plan(lacp, bond_state(lacp, [port("pf0", "c-only"), port("pf1", "cd")]))
    assert plan.receiving == plan.usable == ("pf1",)
    assert {r.label for r in plan.rules if r.match.indev == "pf0"} == {"rx-off:pf0", "arp:pf0"}


def test_plan_summary_devices_and_bindings():
    nic = make_nic("balance-xor", "hash", vfs=1)
    plan = rules.plan(nic, bond_state(nic, [port("pf0", "down"), port("pf1", "up")]))
    assert plan.summary() == "usable pf1; table 32xpf1"
    assert rules.devices(nic) == ("pf0", "pf1", "vf0-rep", "rdma0-rep")
    assert rules.bindings(nic) == {"pf0": (2, 0), "pf1": (2, 0), "vf0-rep": (1, 0), "rdma0-rep": (1, 0)}
