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
             buckets: int = 16, primary: Optional[str] = None) -> Nic:
    bond = f"{{mode: {bond_mode}, miimon: 10" + (f", primary: {primary}" if primary else "") + "}"
    off = f"{{mode: {offload}, buckets: {buckets}}}" if offload else "{}"
    text = f"""
name: t
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


# --- the invariants ------------------------------------------------------------------------

def by_dev(plan: rules.Plan) -> Dict[Tuple[str, str], List[Rule]]:
    out: Dict[Tuple[str, str], List[Rule]] = {}
    for r in plan.rules:
        out.setdefault((r.dev, r.hook), []).append(r)
    for v in out.values():
        v.sort(key=lambda r: (r.prio, r.handle))
    return out


def targets(rule: Rule, kind: str) -> List[Tuple[str, bool]]:
    return [(a.dev, a.ingress) for a in rule.actions if a.kind == kind]


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
        got.update(targets(r, "mirror"))
        assert not [a for a in r.actions[:-1] if a.kind in ("redirect", "drop")], "a verdict before the end"
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
    # identity: unique keys, short labels, encodable
    keys = [r.key for r in plan.rules]
    assert len(keys) == len(set(keys)), "duplicate rule keys"
    ifindex = {name: i for i, name in enumerate(sorted(devs), start=1)}
    for r in plan.rules:
        assert r.dev in devs, f"rule on missing {r.dev}"
        assert r.label and len(r.label.encode()) <= 16, r.label
        assert 1 <= len(r.actions) <= rules.MAX_ACTIONS
        for a in r.actions:
            if a.kind in ("redirect", "mirror"):
                assert a.dev in devs, f"{r.label} on {r.dev} targets missing {a.dev}"
                if a.dev in nic.ports:
                    assert a.dev in usable, f"{r.dev} {r.label} sends to unusable port {a.dev}"
        if r not in _ENCODED:
            assert canonical.canonical(r) == r, f"{r.label}: not in the kernel's canonical form (the fast diff uses ==)"
            if rules.CONTINUE not in r.actions:
                codec.pack(r, ifindex[r.dev], ifindex.__getitem__)  # the tc layer accepts it
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
    groups = by_dev(plan)
    vf_reps = [vf.rep for vf in nic.vfs if vf.rep in devs]
    # ports
    for p in nic.ports:
        if p not in devs:
            assert (p, "ingress") not in groups and (p, "egress") not in groups
            continue
        ing = groups[(p, "ingress")]
        labels = {r.label: r for r in ing}
        assert labels["lacp"].match.eth_type == ETH_P_SLOW and labels["lacp"].actions == (Action("pass"),)
        assert ("arp-backup" in labels) == (p not in receiving)
        if p not in receiving:
            assert labels["arp-backup"].match.eth_type == ETH_P_ARP
        for i, vf in enumerate(nic.vfs):
            rx = [r for r in ing if r.prio == rules.PRIO_RX_VF and r.handle == 1 + i]
            if vf.rep not in devs:
                assert not rx
                continue
            (r,) = rx
            assert r.match.dst_mac == vf.mac
            assert r.actions == ((Action("redirect", vf.rep),) if p in receiving else (Action("drop"),))
        roce = [r for r in ing if r.prio == rules.PRIO_RX_ROCE]
        if nic.rdma and nic.rdma.rep in devs:
            (r,) = roce
            assert (r.match.dst_port, r.match.dst_ip) == (4791, str(nic.address.ip))
            assert r.actions == ((Action("redirect", nic.rdma.rep),) if p in receiving else (Action("drop"),))
        else:
            assert not roce
        bcast = [r for r in ing if r.label.startswith("bcast:")]
        if p in receiving and vf_reps:
            check_chain(bcast, Counter((rep, False) for rep in vf_reps))
        else:
            assert not bcast
        # egress loopback: independent of the port's state
        eg = groups[(p, "egress")]
        lb = {r.label: r for r in eg if r.label.startswith("lb:")}
        for vf in nic.vfs:
            if vf.rep in devs:
                assert lb[f"lb:{vf.name}"].actions == (Action("redirect", vf.rep),)
        if nic.bond.name in devs:
            assert lb["lb:bond"].actions == (Action("redirect", nic.bond.name, ingress=True),)
            assert lb["lb:bond"].match.dst_mac == nic.mac
        if nic.rdma and nic.rdma.rep in devs:
            assert lb["lb:roce"].prio < lb["lb:bond"].prio if "lb:bond" in lb else True
        host_b = [r for r in eg if r.label.startswith("host-bcast:")]
        if vf_reps:
            check_chain(host_b, Counter((rep, False) for rep in vf_reps))
            assert all(r.match.src_mac == nic.mac for r in host_b)
    # representors: exactly one TX decision per hash value
    for fn in nic.functions:
        if fn.rep not in devs:
            assert (fn.rep, "ingress") not in groups
            continue
        ing = groups[(fn.rep, "ingress")]
        tx = [r for r in ing if r.prio == rules.PRIO_TX]
        assert all(r.prio > rules.PRIO_VF_BCAST for r in tx)
        if nic.offload.mode == "active-backup":
            (r,) = tx
            assert r.match == type(r.match)()
            assert r.actions == (rules._to(plan.table[0]),)
        else:
            assert sorted(r.match.hash for r in tx) == list(range(size))
            assert {r.match.hash_mask for r in tx} == {size - 1}
            for r in tx:
                assert r.actions == (rules._to(plan.table[r.match.hash]),)
        vb = [r for r in ing if r.label.startswith("vf-bcast:")]
        if fn.kind == "vf":
            want = Counter((rep, False) for rep in vf_reps if rep != fn.rep)
            if nic.bond.name in devs:
                want[(nic.bond.name, True)] += 1
            check_chain(vb, want, tail=(rules._to(plan.table[0]),))
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


@pytest.mark.parametrize("vfs", [31, 32, 33, 40, 64])
def test_many_vfs_chain_replication_within_the_action_limit(vfs):
    nic = make_nic("balance-xor", "hash", vfs=vfs, buckets=16)
    state = bond_state(nic, [port(p, "up") for p in nic.ports])
    plan = rules.plan(nic, state)
    check_plan(nic, state, plan, nic.ports)
    chained = [r for r in plan.rules if rules.CONTINUE in r.actions]
    assert bool(chained) == (vfs > 31)


def test_missing_representor_bond_and_port():
    nic = make_nic("balance-xor", "hash", vfs=3)
    gone = {nic.vfs[1].rep, nic.rdma.rep}
    state = bond_state(nic, [port("pf0", "up"), port("pf1", "missing")], missing=gone)
    plan = rules.plan(nic, state)
    check_plan(nic, state, plan, ("pf0",))
    for r in plan.rules:
        assert r.dev not in gone | {"pf1"}
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


def ab_plan(nic: Nic, active: Optional[str], down: Iterable[str] = ()) -> rules.Plan:
    down = set(down)
    ps = [port(p, "down" if p in down else "up", active=(p == active)) for p in nic.ports]
    return rules.plan(nic, bond_state(nic, ps, active=active))


def test_active_backup_failover_moves_tx_and_swaps_rx_by_replace():
    nic = make_nic("active-backup", vfs=2, rdma=True)
    before, after = ab_plan(nic, "pf0"), ab_plan(nic, "pf1", down={"pf0"})
    add, replace, delete = changes(before, after)
    reps = {fn.rep for fn in nic.functions}
    # TX: every representor's rule replaced in place, now to pf1
    tx = [r for r in replace if r.prio == rules.PRIO_TX]
    assert {r.dev for r in tx} == reps
    assert all(r.actions == (Action("redirect", "pf1"),) for r in tx)
    # RX: pf1 now delivers, pf0 drops -- replaced, same keys
    rx = {(r.dev, r.label) for r in replace if r.prio in (rules.PRIO_RX_VF, rules.PRIO_RX_ROCE)}
    assert rx == {("pf1", "rx:vf0"), ("pf1", "rx:vf1"), ("pf1", "rx:roce"),
                  ("pf0", "drop:vf0"), ("pf0", "drop:vf1"), ("pf0", "drop:roce")}
    # only the state-dependent extras come and go
    assert {(r.dev, r.label) for r in add} == {("pf0", "arp-backup"), ("pf1", "bcast:0")}
    assert {(r.dev, r.label) for r in delete} == {("pf1", "arp-backup"), ("pf0", "bcast:0")}
    # the egress loopback never changes
    assert not [r for r in add + replace + delete if r.hook == "egress"]


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
        for r in plan.rules:
            if r.prio == rules.PRIO_TX:
                assert r.actions == (rules._to(active),)


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
        for fn in nic.functions:
            tx = {r.match.hash for r in replace if r.dev == fn.rep and r.prio == rules.PRIO_TX}
            assert tx == moved, f"{fn.rep}: replaced entries {sorted(tx)} != the dead port's {sorted(moved)}"
        assert not [r for r in add + delete if r.prio == rules.PRIO_TX]
        # port rules: only the dead port's change -- in 802.3ad; balance-xor still receives on it (the bond
        # does), so its port rules stay and a failover is TX entries only
        want = {dead} if bond_mode == "802.3ad" else set()
        assert {r.dev for r in add + replace + delete if r.dev in nic.ports} == want
        # recovery: the same entries back, native everywhere
        add2, replace2, delete2 = changes(after, full)
        for fn in nic.functions:
            back = {r.match.hash for r in replace2 if r.dev == fn.rep and r.prio == rules.PRIO_TX}
            assert back == moved
        assert full.rules == rules.plan(nic, bond_state(nic, [port(p, good) for p in nic.ports])).rules


def test_hash_all_down_drops_then_recovers_native():
    nic = make_nic("balance-xor", "hash", vfs=2)
    up = rules.plan(nic, bond_state(nic, [port(p, "up") for p in nic.ports]))
    down = rules.plan(nic, bond_state(nic, [port(p, "down") for p in nic.ports]))
    assert set(down.table) == {None}
    for r in down.rules:
        if r.prio == rules.PRIO_TX:
            assert r.actions == (Action("drop"),)
    assert rules.plan(nic, bond_state(nic, [port(p, "up") for p in nic.ports])).rules == up.rules


def test_vf_split_halves_move_to_the_survivor_and_the_same_come_back():
    nic = make_nic("balance-xor", "vf-split", vfs=4, rdma=False)
    both = rules.plan(nic, bond_state(nic, [port("pf0", "up"), port("pf1", "up")]))
    assert both.table == ("pf0", "pf1")
    only1 = rules.plan(nic, bond_state(nic, [port("pf0", "down"), port("pf1", "up")]))
    assert only1.table == ("pf1", "pf1")
    for vf in nic.vfs:
        tx = {r.match.hash: r.actions[0].dev for r in only1.rules if r.dev == vf.rep and r.prio == rules.PRIO_TX}
        assert tx == {0: "pf1", 1: "pf1"}
    _, replace, _ = changes(only1, both)
    assert {(r.dev, r.match.hash) for r in replace if r.prio == rules.PRIO_TX} == {(vf.rep, 0) for vf in nic.vfs}


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
    extras = ("arp-backup", "bcast:")
    seen: Dict[tuple, Tuple[str, tuple]] = {}
    for _conds, _active, state in states_for(nic):
        for r in rules.plan(nic, state).rules:
            ident = (r.label.split(":")[0] if r.label.startswith(("rx:", "drop:")) else r.label,
                     canonical.mask_shape(r.match))
            if r.key in seen and not r.label.startswith(extras):
                assert seen[r.key][1] == ident[1], f"{r.key}: mask shape changes with state"
            seen[r.key] = ident


def test_apply_order_new_path_first_then_tx_then_old_path():
    nic = make_nic("active-backup", vfs=2)
    before, after = ab_plan(nic, "pf0"), ab_plan(nic, "pf1", down={"pf0"})
    add, replace, delete = changes(before, after)
    phases = rules.apply_order(nic, add + replace + delete, after.receiving)
    assert {r.dev for r in phases[0]} == {"pf1"}
    assert {r.dev for r in phases[1]} == {fn.rep for fn in nic.functions}
    assert {r.dev for r in phases[2]} == {"pf0"}
    assert sum(map(len, phases)) == len(add + replace + delete)


def test_balance_xor_port_in_updelay_receives_but_carries_no_tx():
    """The bond takes frames on a balance-xor port during its updelay (it never marks the slave inactive) and
    the switch's LAG already sends there: the port delivers to the VFs, but no TX entry uses it yet."""
    nic = make_nic("balance-xor", "hash", vfs=2)
    plan = rules.plan(nic, bond_state(nic, [port("pf0", "back"), port("pf1", "up")]))
    assert plan.usable == ("pf1",) and plan.receiving == ("pf0", "pf1")
    assert set(plan.table) == {"pf1"}
    pf0 = {r.label: r for r in plan.rules if r.dev == "pf0" and r.hook == "ingress"}
    assert pf0["rx:vf0"].actions == (Action("redirect", "vf0-rep"),)
    assert pf0["rx:roce"].actions == (Action("redirect", "rdma0-rep"),)
    assert "arp-backup" not in pf0 and not [k for k in pf0 if k.startswith("drop:")]
    # 802.3ad is different: a port that is not collecting+distributing is inactive and drops
    lacp = make_nic("802.3ad", "hash", vfs=2)
    plan = rules.plan(lacp, bond_state(lacp, [port("pf0", "c-only"), port("pf1", "cd")]))
    assert plan.receiving == plan.usable == ("pf1",)


def test_plan_summary_and_devices():
    nic = make_nic("balance-xor", "hash", vfs=1)
    plan = rules.plan(nic, bond_state(nic, [port("pf0", "down"), port("pf1", "up")]))
    assert plan.summary() == "usable pf1; table 32xpf1"
    assert rules.devices(nic) == ("pf0", "pf1", "vf0-rep", "rdma0-rep")
