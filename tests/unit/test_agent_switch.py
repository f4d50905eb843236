"""The switch's resilient port selection (``agent.switch``, pure part): one rule per table entry on the
partner bond's egress, only a dead port's entries move, and the rules encode."""

from __future__ import annotations

from testbed import loader
from testbed.agent import switch
from testbed.tc import canonical, codec
from testbed.tc.rule import Action
from testbed.topology import partner_nics


def partner(ports: int = 4, buckets: int = 8, partners: int = 1):
    text = (f"name: t\nhosts:\n  server:\n    nic: {{ports: {ports}, partners: {partners}, "
            f"partner_select: resilient, bond: {{mode: 802.3ad}}, offload: {{mode: hash, buckets: {buckets}}}}}\n")
    return partner_nics(loader.loads(text).host("server"))


def targets(rules):
    return [r.actions[0].dev if r.actions[0].kind == "redirect" else None for r in rules]


def test_one_rule_per_entry_on_the_partner_bonds_egress():
    (pn,) = partner()
    rules = switch.switch_rules(pn, pn.ports)
    assert len(rules) == 32 and {(r.dev, r.hook, r.chain, r.prio) for r in rules} == {("server-lag", "egress", 0, 1)}
    assert [(r.handle, r.match.hash, r.match.hash_mask) for r in rules] == [(1 + e, e, 31) for e in range(32)]
    assert targets(rules) == [f"server-pf{e // 8}" for e in range(32)]  # native: 8 consecutive entries a port
    index = {name: i for i, name in enumerate(["server-lag"] + list(pn.ports), start=1)}
    for r in rules:
        assert canonical.canonical(r) == r and len(r.label) <= 16
        codec.pack(r, index[r.dev], index.__getitem__)


def test_a_dead_ports_entries_move_and_no_other_and_come_back():
    (pn,) = partner()
    before = targets(switch.switch_rules(pn, pn.ports))
    live = [p for p in pn.ports if p != "server-pf2"]
    after = targets(switch.switch_rules(pn, live))
    moved = [e for e in range(32) if before[e] != after[e]]
    assert moved == [e for e in range(32) if before[e] == "server-pf2"]
    assert "server-pf2" not in after and set(after) == set(live)
    assert targets(switch.switch_rules(pn, pn.ports)) == before  # the same table again: no history
    assert set(targets(switch.switch_rules(pn, []))) == {None}  # nothing live: every entry drops
    assert all(r.actions == (Action("drop"),) for r in switch.switch_rules(pn, []))


def test_two_partners_each_their_own_table():
    a, b = partner(partners=2)
    assert (a.bond.name, a.ports, b.bond.name, b.ports) == ("server-lag", ("server-pf0", "server-pf1"),
                                                            "server-lag1", ("server-pf2", "server-pf3"))
    assert set(targets(switch.switch_rules(b, b.ports))) == {"server-pf2", "server-pf3"}
