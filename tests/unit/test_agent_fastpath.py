"""The agent's event path against a faked kernel: link messages as bytes, tc requests applied to a rule table.

``FakeNs`` builds the RTM_NEWLINK messages a bond and its ports send (the same builders as
``test_agent_state``); ``FakeKernel`` stands in for the IPRoute socket: it decodes every tc request it is
sent (``readback.unpack``, the decoder of real dumps), keeps the filters by key, answers EEXIST / ENOENT
as the kernel does, and records each ``sendmsg``. So the tests see what the agent would leave in the
kernel, and in how many system calls.
"""

from __future__ import annotations

import errno
import itertools
import socket
import struct
from collections import deque
from typing import Dict, List, Optional

import pytest
from test_agent_rules import bond_state, make_nic, port, states_for
from test_agent_state import bond_info, link_msg, slave_info

from testbed import nlpipe, rawnl
from testbed.agent import predict, reconcile, rules
from testbed.bond.state import table_of
from testbed.tc import canonical, flower, ops, readback
from testbed.tc.rule import InstalledRule

MODES = {"active-backup": 1, "balance-xor": 2}


class FakeNs:
    """A NIC namespace as link messages: the bond, its ports (MII up/down), the representors."""

    def __init__(self, nic, active: Optional[str] = None) -> None:
        self.nic = nic
        names = ["lo", nic.bond.name, *nic.ports, *(fn.rep for fn in nic.functions)]
        self.index = {n: i + 1 for i, n in enumerate(names)}
        self.ab = nic.bond.mode == "active-backup"
        self.active = (active or nic.ports[0]) if self.ab else None
        self.mii = {p: 0 for p in nic.ports}  # 0 up, 2 down

    def fail(self, p: str, active: Optional[str] = None) -> None:
        self.mii[p] = 2
        if self.ab:
            self.active = active

    def msg(self, name: str) -> bytes:
        i = self.index[name]
        if name == self.nic.bond.name:
            act = self.index[self.active] if self.active else None
            return link_msg(i, name, linkinfo=bond_info(MODES[self.nic.bond.mode], active=act))
        if name in self.nic.ports:
            backup = 1 if self.ab and name != self.active else 0
            return link_msg(i, name, carrier=self.mii[name] == 0, master=self.index[self.nic.bond.name],
                            linkinfo=slave_info(backup, self.mii[name]))
        return link_msg(i, name)

    def dump(self) -> List[bytes]:
        return [self.msg(n) for n in self.index]

    def events(self, *names: str) -> Dict[str, bytes]:
        return {n: self.msg(n) for n in names}


class FakeKernel:
    """The IPRoute socket: tc requests are decoded and applied to ``rules``; every send is recorded."""

    def __init__(self, index: Dict[str, int]) -> None:
        self.names = {i: n for n, i in index.items()}
        self.rules: Dict[tuple, object] = {}
        self.sends: List[bytes] = []
        self.replies: deque = deque()

    # the socket API nlpipe uses
    def getsockopt(self, level: int, opt: int) -> int:
        return 1 << 20 if opt == socket.SO_RCVBUF else 1

    def setsockopt(self, *args) -> None:
        pass

    def fileno(self) -> int:
        return 0  # registered with poll, never waited on: every reply is queued by send()

    def recv(self, size: int) -> bytes:
        assert self.replies, "nlpipe waited for a reply the fake kernel did not give"
        return self.replies.popleft()

    def send(self, data: bytes) -> None:
        self.sends.append(bytes(data))
        for msg_type, flags, seq, msg in rawnl.messages(data):
            err = self._handle(msg_type, flags, bytes(msg))
            if err or flags & nlpipe.NLM_F_ACK:
                self.replies.append(rawnl.HDR.pack(36, nlpipe.NLMSG_ERROR, nlpipe.NLM_F_CAPPED, seq, 0)
                                    + struct.pack("=i", -err) + bytes(msg[:16]))

    def _handle(self, msg_type: int, flags: int, msg: bytes) -> int:
        if msg_type == ops.RTM_NEWTFILTER:
            rule = readback.unpack(msg, self.names).rule
            if flags & nlpipe.NLM_F_EXCL and rule.key in self.rules:
                return errno.EEXIST
            self.rules[rule.key] = rule
            return 0
        assert msg_type == ops.RTM_DELTFILTER
        _, index, handle, parent, info = ops._TCMSG.unpack_from(msg, rawnl.HDR.size)
        chain = 0
        for t, payload in rawnl.attrs(msg, rawnl.HDR.size + ops._TCMSG.size):
            if t == 11:
                chain = struct.unpack_from("=I", payload)[0]
        if index == flower.TCM_IFINDEX_MAGIC_BLOCK:
            key = ("", "ingress", parent, chain, info >> 16, handle)
        else:
            key = (self.names[index], "ingress" if parent == flower.INGRESS_PARENT else "egress", 0, chain,
                   info >> 16, handle)
        if key not in self.rules:
            return errno.ENOENT
        del self.rules[key]
        return 0

    def holds(self, plan: rules.Plan) -> bool:
        want = {r.key: canonical.canonical(r) for r in plan.rules}
        return {k: canonical.canonical(r) for k, r in self.rules.items()} == want


def requests(data: bytes) -> List[tuple]:
    """(type, flags without the ack bit, body) of each message: a buffer compared without its seqs."""
    return [(t, f & ~nlpipe.NLM_F_ACK, bytes(m[rawnl.HDR.size:])) for t, f, _s, m in rawnl.messages(data)]


@pytest.fixture
def lab(monkeypatch):
    """``lab(bond_mode, ports)`` -> (nic, FakeNs, FakeKernel, NicReconciler, reads, quiet) after a first full
    reconcile and all background work."""

    def make(bond_mode: str = "active-backup", ports: int = 3, offload: Optional[str] = None):
        nic = make_nic(bond_mode, offload, ports=ports, vfs=2)
        ns = FakeNs(nic)
        kernel = FakeKernel(ns.index)
        reads = []
        quiet = {"now": True}

        def read_links(ipr, nic_, netns=""):
            reads.append(1)
            return table_of(ns.dump(), nic_)

        monkeypatch.setattr(reconcile, "read_links", read_links)
        monkeypatch.setattr(ops, "clsact_blocks", lambda ipr: rules.bindings(nic))
        monkeypatch.setattr(ops, "dump", lambda ipr, devs, blocks=(): [InstalledRule(r) for r in kernel.rules.values()])
        host = type("H", (), {"name": "server", "netns": "t-server", "nic": nic})()
        rec = reconcile.NicReconciler(host, kernel, quiet=lambda: quiet["now"])
        first = rec.reconcile("start", 0.0, full=True)
        assert first.full and kernel.holds(rec.plan)
        while rec.busy():
            assert rec.step() is None
        return nic, ns, kernel, rec, reads, quiet

    return make


def truth(nic, ns) -> rules.Plan:
    return rules.plan(nic, table_of(ns.dump(), nic).state)


# --- event messages -> the bond state ---------------------------------------------


@pytest.mark.parametrize("bond_mode", ["active-backup", "balance-xor"])
def test_events_laid_over_the_last_reading_give_what_a_dump_would(bond_mode):
    nic = make_nic(bond_mode, None if bond_mode == "active-backup" else "hash", ports=3)
    ns = FakeNs(nic)
    before = table_of(ns.dump(), nic)
    ns.fail("pf0", active="pf1")
    got = predict.overlay(before, nic, ns.events("pf0", "pf1", "bond0"), names=["pf0", "pf1", "bond0"])
    after = table_of(ns.dump(), nic)
    assert got is not None and got.state == after.state and got.state != before.state
    want = (("pf1",), ("pf1",)) if bond_mode == "active-backup" else (("pf1", "pf2"), ("pf0", "pf1", "pf2"))
    assert predict.key_of(nic, got.state) == want


def test_the_bonds_failover_message_alone_moves_active_backup():
    """bond_change_active_slave notifies the bond (NETDEV_BONDING_FAILOVER) before the ports' lower-state
    work runs: its IFLA_BOND_ACTIVE_SLAVE is enough to know where traffic goes."""
    nic = make_nic("active-backup", ports=3)
    ns = FakeNs(nic)
    before = table_of(ns.dump(), nic)
    ns.fail("pf0", active="pf2")
    got = predict.overlay(before, nic, ns.events("bond0"), names=["bond0"])
    assert got is not None and got.state.active == "pf2"
    assert predict.key_of(nic, got.state) == (("pf2",), ("pf2",))


def test_events_that_cannot_be_laid_over_the_reading():
    nic = make_nic("active-backup", ports=2)
    ns = FakeNs(nic)
    table = table_of(ns.dump(), nic)
    assert predict.overlay(table, nic, ns.events("pf0"), names=["pf0"]) is not None
    assert predict.overlay(table, nic, {}, names=["vf0-rep"], deleted=["vf0-rep"]) is None
    assert predict.overlay(table, nic, {}, names=["vf7-rep"]) is None  # a new interface
    ns.index["pf1"] = 99  # recreated: a new ifindex under the old name
    assert predict.overlay(table, nic, ns.events("pf1"), names=["pf1"]) is None


@pytest.mark.parametrize("bond_mode,offload,ports", [("active-backup", None, 3), ("balance-xor", "hash", 3),
                                                     ("802.3ad", "vf-split", 3)])
def test_next_keys_cover_every_one_port_change(bond_mode, offload, ports):
    """From every state, every state that differs in one port's condition (or, in active-backup, in which
    port is active) has its (usable, receiving) among next_keys -- or changes nothing for the rules."""
    nic = make_nic(bond_mode, offload, ports=ports)
    states = list(states_for(nic))
    for (c1, a1, s1), (c2, a2, s2) in itertools.product(states, states):
        changed = sum(c1[p] != c2[p] for p in nic.ports) + (a1 != a2)
        if changed != 1 or not all(s.present and s.admin_up for s in (s1, s2)):
            continue
        current, after = predict.key_of(nic, s1), predict.key_of(nic, s2)
        assert after == current or after in predict.next_keys(nic, s1, current), (c1, a1, c2, a2)


def test_next_keys_put_a_lost_port_back_first():
    nic = make_nic("balance-xor", "hash", ports=2)
    s = bond_state(nic, [port("pf0", "up"), port("pf1", "down")])
    assert predict.next_keys(nic, s, (("pf0",), ("pf0", "pf1")))[0] == (("pf0", "pf1"), ("pf0", "pf1"))
    ab = make_nic("active-backup", ports=3)
    s = bond_state(ab, [port(p, "up", active=p == "pf0") for p in ab.ports], active="pf0")
    assert predict.next_keys(ab, s, (("pf0",), ("pf0",))) == [(("pf1",), ("pf1",)), (("pf2",), ("pf2",)), ((), ())]


@pytest.mark.parametrize("bond_mode,offload", [("active-backup", None), ("balance-xor", "hash"),
                                               ("802.3ad", "vf-split")])
def test_the_diff_of_the_varying_rules_is_the_whole_diff(bond_mode, offload):
    """reconcile.plan_diff compares only gates and table entries when two plans share their fixed rules:
    the same diff as over every rule, for every pair of states (and every rule either varies or is
    shared)."""
    nic = make_nic(bond_mode, offload, ports=3, vfs=3)
    plans = {}
    for _c, _a, st in states_for(nic):
        if st.devices == states_for_devices(nic):
            p = rules.plan(nic, st)
            plans[(p.usable, p.receiving)] = p
    assert len(plans) > 3
    for old, new in itertools.product(plans.values(), plans.values()):
        assert new.fixed is old.fixed and len(new.varying) + len(new.fixed) == len(new.rules)
        installed = {r.key: r for r in old.rules}
        want = reconcile.fast_diff(new.rules, installed)
        assert tuple(map(sorted_keys, reconcile.plan_diff(old, new, installed))) == tuple(map(sorted_keys, want))


def states_for_devices(nic):
    return next(st for _c, _a, st in states_for(nic)).devices


def sorted_keys(rules_):
    return sorted(r.key for r in rules_)


# --- the reaction ----------------------------------------------------------------------


def test_a_foreseen_failover_is_one_sendmsg_of_the_prepared_buffer(lab):
    nic, ns, kernel, rec, reads, _ = lab()
    before = rec.plan
    assert (("pf1",), ("pf1",)) in rec.prepared and (("pf2",), ("pf2",)) in rec.prepared
    sent, read = len(kernel.sends), len(reads)
    slow = []
    rec.slow_path = lambda: slow.append(1)
    ns.fail("pf0", active="pf1")
    r = rec.react("pf0,pf1,bond0", 0.0, ns.events("pf0", "pf1", "bond0"), ["pf0", "pf1", "bond0"])
    assert r is not None and r.path == "precomputed" and not r.full and r.usable == ("pf1",)
    assert slow == []  # the whole reaction at the agent's real-time priority
    assert len(kernel.sends) == sent + 1 and len(reads) == read  # one sendmsg, no dump
    assert kernel.holds(truth(nic, ns)) and rec.plan is truth(nic, ns)
    assert (r.added, r.replaced, r.deleted) == (1, 3, 1) and "[precomputed]" in r.text()
    # the buffer is exactly what ops.apply sends for the same diff, phase after phase
    other = FakeKernel(ns.index)
    other.rules = {rule.key: rule for rule in before.rules}
    add, replace, delete = ops.diff(rec.plan.rules, before.rules)
    for a, p, d in zip(*(rules.apply_order(nic, g, rec.plan.receiving) for g in (add, replace, delete))):
        if a or p or d:
            ops.apply(other, add=a, replace=p, delete=d, links=dict(ns.index))
    assert len(other.sends) == 3  # ops.apply: one sendmsg per phase
    assert requests(kernel.sends[-1]) == [m for data in other.sends for m in requests(data)]
    assert other.holds(rec.plan)


def test_the_buffer_keeps_make_before_break_order(lab):
    nic, ns, kernel, rec, _, _ = lab()
    ns.fail("pf0", active="pf1")
    rec.react("bond0", 0.0, ns.events("bond0"), ["bond0"])
    names = {i: n for n, i in ns.index.items()}
    order = []
    for t, _f, _s, msg in rawnl.messages(kernel.sends[-1]):
        order.append((t, readback.unpack(bytes(msg), names).rule.label if t == ops.RTM_NEWTFILTER else None))
    labels = [label for _t, label in order]
    # pf1 delivers (its gate opens) before TX moves to it, and pf0 closes only after
    assert labels.index("rx-on:pf1") < labels.index("entry:0") < labels.index("rx-off:pf0")
    assert labels.index("arp:pf0") > labels.index("entry:0")  # pf0's ARP pass: with its closing gate
    assert order[0] == (ops.RTM_DELTFILTER, None)  # arp:pf1 goes in phase 0 (pf1 receives now)
    flags = [f for _t, f, _s, _m in rawnl.messages(kernel.sends[-1])]
    assert [bool(f & nlpipe.NLM_F_ACK) for f in flags] == [False] * (len(flags) - 1) + [True]


def test_an_unforeseen_state_is_planned_on_the_spot_and_still_one_sendmsg(lab):
    nic, ns, kernel, rec, reads, _ = lab()
    rec.prepared.clear()
    sent, read = len(kernel.sends), len(reads)
    ns.fail("pf0", active="pf2")
    r = rec.react("bond0", 0.0, ns.events("bond0", "pf0"), ["bond0", "pf0"])
    assert r.path == "planned" and len(kernel.sends) == sent + 1 and len(reads) == read
    assert kernel.holds(truth(nic, ns))


def test_verify_finds_a_right_guess_right(lab):
    nic, ns, kernel, rec, reads, _ = lab()
    ns.fail("pf0", active="pf1")
    rec.react("bond0", 0.0, ns.events("bond0", "pf0", "pf1"), ["bond0", "pf0", "pf1"])
    sent, read = len(kernel.sends), len(reads)
    assert rec.busy()
    assert rec.step() is None  # the verify: a dump, nothing to correct
    assert len(reads) == read + 1 and len(kernel.sends) == sent
    assert rec.stats["verified"] == 1 and rec.stats["corrected"] == 0
    while rec.busy():  # then the next states are prepared again, from the new rules
        rec.step()
    assert (("pf0",), ("pf0",)) in rec.prepared and kernel.holds(truth(nic, ns))


def test_verify_corrects_a_wrong_guess(lab):
    """The events said pf1 took over; by the time the agent reads, the bond has moved on to pf2 (a stale
    notification): the verify dump sees it and fixes the rules."""
    nic, ns, kernel, rec, _, _ = lab()
    ns.fail("pf0", active="pf1")
    stale = ns.events("bond0", "pf0", "pf1")
    ns.fail("pf1", active="pf2")
    r = rec.react("bond0", 5.0, stale, list(stale))
    assert r.usable == ("pf1",) and not kernel.holds(truth(nic, ns))
    fixed = rec.step()
    assert fixed is not None and fixed.path == "verify" and fixed.usable == ("pf2",) and fixed.changed
    assert "verify" in fixed.trigger and kernel.holds(truth(nic, ns))
    assert rec.stats["corrected"] == 1


def test_events_after_a_busy_reading_take_the_read_path(lab):
    """The socket held events when the links were dumped: they may be older than the dump, so they are not
    laid over it; the agent reads again."""
    nic, ns, kernel, rec, reads, quiet = lab()
    quiet["now"] = False
    rec.reconcile("SIGHUP", 0.0, full=True)
    quiet["now"] = True
    read = len(reads)
    slow = []
    rec.slow_path = lambda: slow.append(1)
    ns.fail("pf0", active="pf1")
    r = rec.react("bond0", 0.0, ns.events("bond0"), ["bond0"])
    assert r.path == "read" and len(reads) == read + 1 and kernel.holds(truth(nic, ns))
    assert slow == [1]  # told before the read path: the agent leaves real-time priority for it


def test_a_new_interface_falls_back_to_the_read_path(lab):
    nic, ns, kernel, rec, reads, _ = lab()
    read = len(reads)
    r = rec.react("vf9-rep", 0.0, {}, ["vf9-rep"])
    assert len(reads) == read + 1 and (r is None or r.path in ("read", "full"))


def test_a_kernel_error_on_the_fast_path_resyncs(lab):
    """Someone deleted pf1's ARP rule by hand: the prepared delete fails (ENOENT) -> full resync."""
    nic, ns, kernel, rec, _, _ = lab()
    key = next(k for k, r in kernel.rules.items() if r.label == "arp:pf1")
    del kernel.rules[key]
    slow = []
    rec.slow_path = lambda: slow.append(1)
    ns.fail("pf0", active="pf1")
    r = rec.react("bond0", 0.0, ns.events("bond0"), ["bond0"])
    assert r.full and "resync after" in r.trigger and "ENOENT" in r.trigger and slow == [1]
    assert kernel.holds(truth(nic, ns)) and rec.resyncs == 2


def test_no_rule_change_no_reaction(lab):
    """A backup port goes down: nothing for the rules, no dump; the state is still followed. No verify
    either: its dump would race the bond's own next notifications."""
    nic, ns, kernel, rec, reads, _ = lab()
    sent, read = len(kernel.sends), len(reads)
    ns.mii["pf1"] = 2
    assert rec.react("pf1", 0.0, ns.events("pf1"), ["pf1"]) is None
    assert len(kernel.sends) == sent and len(reads) == read and not rec.busy()
    assert rec.state == table_of(ns.dump(), nic).state


def test_the_read_path_sends_a_prepared_change_too(lab):
    """Events queued during a dump send the agent down the read path; a foreseen state is still one
    sendmsg after the dump."""
    nic, ns, kernel, rec, reads, quiet = lab()
    rec.trusted = False
    sent = len(kernel.sends)
    ns.fail("pf0", active="pf2")
    r = rec.react("bond0", 0.0, ns.events("bond0"), ["bond0"])
    assert r.path == "read" and len(kernel.sends) == sent + 1 and kernel.holds(truth(nic, ns))
    assert (r.added, r.replaced, r.deleted) == (1, 3, 1)


def test_the_bonds_own_intermediate_state_is_not_acted_on(lab, monkeypatch):
    """pf0's notification (MII down) arrives while the bond still names pf0 active: the bond is selecting
    pf1 under the same RTNL hold. No reaction to that (it would drop everything first); the bond's
    message follows and is one prepared sendmsg."""
    nic, ns, kernel, rec, _, _ = lab()
    sent = len(kernel.sends)
    ns.fail("pf0", active="pf0")  # the port is down, the bond has not moved yet
    assert predict.in_failover(nic, table_of(ns.dump(), nic).state)
    assert rec.react("pf0", 0.0, ns.events("pf0"), ["pf0"]) is None
    assert len(kernel.sends) == sent and not rec.busy() and 0 < rec.due_in() <= 0.1
    ns.active = "pf1"
    r = rec.react("bond0,pf1", 0.0, ns.events("bond0", "pf1"), ["bond0", "pf1"])
    assert r.path == "precomputed" and r.usable == ("pf1",) and len(kernel.sends) == sent + 1
    assert kernel.holds(truth(nic, ns))


def test_an_intermediate_state_nothing_follows_is_read_when_due(lab, monkeypatch):
    nic, ns, kernel, rec, _, _ = lab()
    ns.fail("pf0", active="pf0")
    rec.react("pf0", 0.0, ns.events("pf0"), ["pf0"])
    ns.active = "pf2"  # the bond moved; its notification got lost
    assert rec.step() is None and kernel.holds(rules.plan(nic, rec.state))  # not due: nothing done
    rec._verify_at = 0.0
    fixed = rec.step()
    assert fixed is not None and fixed.path == "verify" and fixed.usable == ("pf2",)
    assert kernel.holds(truth(nic, ns))


def test_the_last_port_lost_is_followed_at_once(lab):
    """No other port up: the bond keeps none active, a final state -- applied (drop) at once."""
    nic, ns, kernel, rec, _, _ = lab("active-backup", ports=2)
    ns.fail("pf1")
    rec.react("pf1", 0.0, ns.events("pf1"), ["pf1"])
    ns.fail("pf0", active="pf0")
    assert not predict.in_failover(nic, table_of(ns.dump(), nic).state)
    r = rec.react("pf0", 0.0, ns.events("pf0"), ["pf0"])
    assert r is not None and r.usable == () and kernel.holds(truth(nic, ns))


# --- the buffer ------------------------------------------------------------------------


def test_a_packed_buffer_acks_once_and_gets_new_seqs_each_send():
    reqs = [(ops.RTM_DELTFILTER, 0, b"\1" * 20), (ops.RTM_NEWTFILTER, 0, b"\2" * 22)]
    packed = nlpipe.pack(reqs)
    msgs = list(rawnl.messages(packed.data))
    assert [(t, f) for t, f, _s, _m in msgs] == [(ops.RTM_DELTFILTER, nlpipe.NLM_F_REQUEST),
                                                 (ops.RTM_NEWTFILTER, nlpipe.NLM_F_REQUEST | nlpipe.NLM_F_ACK)]
    assert bytes(msgs[1][3][16:]) == b"\2" * 22 and len(packed.data) % 4 == 0
    kernel = FakeKernel({})
    kernel._handle = lambda *a: 0
    assert nlpipe.send_packed(kernel, packed) == [nlpipe.OK, nlpipe.OK]
    nlpipe.send_packed(kernel, packed)
    seqs = [[s for _t, _f, s, _m in rawnl.messages(d)] for d in kernel.sends]
    assert len(set(seqs[0] + seqs[1])) == 4
