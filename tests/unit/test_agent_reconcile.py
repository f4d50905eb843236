"""The agent's pure plumbing: the event-path diff, reactions, agent.json / agent.log, the CLI entry."""

from __future__ import annotations

import json
import os

import pytest
from test_agent_rules import bond_state, make_nic, port  # a sibling module (pytest puts tests/unit on sys.path)

from testbed import labstore
from testbed.agent import launcher, rules
from testbed.agent.reconcile import Reaction, fast_diff
from testbed.agent.report import Reporter
from testbed.agent.status import read_raw as read_status
from testbed.bond.state import LinkTable
from testbed.cli import build_parser
from testbed.tc import ops


def _sorted(d):
    return tuple(sorted(x, key=lambda r: r.key) for x in d)


@pytest.mark.parametrize("bond_mode,offload", [("active-backup", None), ("balance-xor", "hash"),
                                               ("802.3ad", "vf-split")])
def test_fast_diff_equals_ops_diff_on_every_transition(bond_mode, offload):
    nic = make_nic(bond_mode, offload, vfs=3)
    good = {"active-backup": "up", "balance-xor": "up", "802.3ad": "cd"}[bond_mode]
    plans = []
    for a in (good, "down"):
        for b in (good, "down"):
            active = "pf0" if a == good else ("pf1" if b == good else None)
            ps = [port("pf0", a, active=active == "pf0"), port("pf1", b, active=active == "pf1")]
            plans.append(rules.plan(nic, bond_state(nic, ps, active=active)))
    for before in plans:
        for after in plans:
            have = {r.key: r for r in before.rules}
            assert _sorted(fast_diff(after.rules, have)) == _sorted(ops.diff(after.rules, before.rules))


def test_fast_diff_deletes_and_adds_when_the_mask_changes():
    nic = make_nic("balance-xor", "hash", vfs=1)
    plan = rules.plan(nic, bond_state(nic, [port("pf0", "up"), port("pf1", "up")]))
    tx = next(r for r in plan.rules if r.prio == rules.PRIO_TX)
    other = type(tx)(dev=tx.dev, prio=tx.prio, handle=tx.handle, match=type(tx.match)(dst_mac="02:00:00:00:00:09"),
                     actions=tx.actions, label=tx.label)
    add, replace, delete = fast_diff((tx,), {tx.key: other})
    assert (add, replace, delete) == ([tx], [], [other])


def test_reaction_text_and_dict():
    r = Reaction(host="server", trigger="pf0,bond0", full=False, mapping="usable pf1; table 1xpf1",
                 usable=("pf1",), added=1, replaced=5, deleted=1, latency_ms=3.25, apply_ms=2.5)
    assert r.text() == ("server: event (pf0,bond0): usable pf1; table 1xpf1: +1 ~5 -1 rules, "
                        "event->applied 3.2 ms (apply 2.5 ms)")
    d = r.as_dict()
    assert d["usable"] == ["pf1"] and d["latency_ms"] == 3.25 and d["text"] == r.text()
    json.dumps(d)
    nothing = Reaction(host="server", trigger="start", full=True, mapping="m")
    assert "rules already right" in nothing.text()
    failed = Reaction(host="server", trigger="start", full=True, error="boom")
    assert failed.text() == "server: resync (start): FAILED: boom"


def test_reporter_writes_log_and_status(tmp_path, monkeypatch):
    monkeypatch.setattr(labstore, "RUN_DIR", str(tmp_path))
    rep = Reporter("lab1", json_log=False)
    for i in range(25):
        rep.reaction(Reaction(host="server", trigger=f"e{i}", full=False, mapping="m", replaced=1))
    rep.ready = True
    rep.write_status([])
    rep.line("agent stopping")
    rep.close()
    data = read_status("lab1")
    assert data["ready"] and data["running"] and data["error"] is None and data["pid"] == os.getpid()
    assert len(data["reactions"]) == 20 and data["reactions"][-1]["trigger"] == "e24"
    lines = (tmp_path / "lab1" / "agent.log").read_text().splitlines()
    assert len(lines) == 26 and "server: event (e0)" in lines[0] and lines[-1].endswith("agent stopping")
    rep = Reporter("lab1", json_log=True)
    rep.reaction(Reaction(host="server", trigger="x", full=True, mapping="m"))
    rep.close()
    last = json.loads((tmp_path / "lab1" / "agent.log").read_text().splitlines()[-1])
    assert last["trigger"] == "x" and last["full"] is True


def test_cli_parses_agent_options():
    args = build_parser().parse_args(["agent", "ab", "--daemon", "--timeout", "5", "--json-log"])
    assert (args.lab, args.daemon, args.foreground, args.timeout, args.json_log) == ("ab", True, False, 5.0, True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent", "ab", "--daemon", "--foreground"])


def test_launcher_argv_and_no_agent_running(tmp_path, monkeypatch):
    monkeypatch.setattr(labstore, "RUN_DIR", str(tmp_path))
    argv = launcher.agent_argv("ab", 7)
    assert argv[1:] == ["-m", "testbed", "agent", "ab", "--foreground", "--ready-fd", "7"]
    assert launcher.running("ab") is None
    os.makedirs(tmp_path / "ab")
    (tmp_path / "ab" / "agent.pid").write_text(f"{os.getpid()}\n")
    assert launcher.running("ab") is None  # ourselves: not another agent


def test_typed_status_reads_reactions_by_integer_ns(tmp_path, monkeypatch):
    """agent.status.read: typed per-NIC status; reactions stamped in epoch ns, compared as integers."""
    from testbed.agent import status

    monkeypatch.setattr(labstore, "RUN_DIR", str(tmp_path))
    assert status.read("lab2") is None and status.nic("lab2", "server").usable == ()
    rep = Reporter("lab2")
    for i, ns in enumerate((1_000_000_000_000_000_001, 1_000_000_000_000_000_002, 1_000_000_000_000_000_900)):
        rep.reaction(Reaction(host="server", trigger=f"e{i}", full=False, mapping="m", usable=("pf1",),
                              replaced=i, latency_ms=1.5, wall_ns=ns))
    rep.write_status([])
    rep.close()
    st = status.read("lab2")
    assert st is not None and st.running and not st.ready and st.pid == os.getpid()
    assert [r.done_ns for r in st.reactions] == [1_000_000_000_000_000_001, 1_000_000_000_000_000_002,
                                                 1_000_000_000_000_000_900]
    # 1 ns apart: a millisecond string could not tell these apart
    since = [r.trigger for r in st.reactions if r.done_ns >= 1_000_000_000_000_000_002]
    assert since == ["e1", "e2"]
    assert st.reactions[-1].usable == ("pf1",) and st.reactions[-1].changed == 2 and st.reactions[-1].text
    assert st.nic("server").usable == () and st.nic("server").reactions == ()  # no NIC entries were written
    nic = status.NicStatus.from_dict("server", {"usable": ["pf0"], "mapping": ["pf0", None],
                                                "reactions": [{"trigger": "a", "done_ns": 5}, {"trigger": "b"}]})
    assert nic.usable == ("pf0",) and nic.mapping == ("pf0", None)
    assert [r.trigger for r in nic.reactions_since(5)] == ["a"]  # no done_ns (an older agent): never "since"


def test_full_resync_binds_every_device_to_its_block_and_a_new_device_triggers_one(monkeypatch):
    """The kernel is faked: what the reconciler binds, dumps and applies is recorded."""
    from testbed import loader
    from testbed.agent import reconcile

    host = loader.loads("""
name: t
hosts:
  server:
    nic: {ports: 2, address: 198.18.0.1/24, bond: {mode: active-backup, miimon: 10}, vfs: 2, rdma: false}
  client: {address: 198.18.0.100/24}
""").host("server")
    nic = host.nic
    ps = [port("pf0", "up", active=True), port("pf1", "up", active=False)]
    now = {"state": bond_state(nic, ps, active="pf0", missing={"vf1-rep"})}
    bound = {"pf0": (0, 0), "vf0-rep": (rules.BLOCK_PORTS, 0)}  # realize's unshared clsact; a wrong binding
    calls = []
    monkeypatch.setattr(reconcile, "read_links",
                        lambda ipr, nic, netns=None: LinkTable(state=now["state"], links={}, index={}))
    monkeypatch.setattr(ops, "clsact_blocks", lambda ipr: dict(bound))

    def ensure(ipr, want, have):
        assert have == bound, "binds against the one qdisc dump it read"
        for dev, (ingress_block, egress_block) in want.items():
            calls.append(("bind", dev, ingress_block, egress_block))
            bound[dev] = (ingress_block, egress_block)

    monkeypatch.setattr(ops, "ensure_clsacts", ensure)
    monkeypatch.setattr(ops, "dump",
                        lambda ipr, devs, blocks=(): calls.append(("dump", tuple(devs), tuple(blocks))) or [])
    monkeypatch.setattr(ops, "apply", lambda ipr, add=(), replace=(), delete=(), links=None: calls.append(
        ("apply", len(add), len(replace), len(delete))))
    rec = reconcile.NicReconciler(host, ipr=None)
    first = rec.reconcile("start", 0.0, full=True)
    assert first.full and first.added == len(rec.plan.rules)
    assert [c for c in calls if c[0] == "bind"] == [("bind", "pf0", 2, 0), ("bind", "pf1", 2, 0),
                                                     ("bind", "vf0-rep", 1, 0)]
    assert ("dump", ("pf0", "pf1", "vf0-rep"), rules.BLOCKS) in calls
    calls.clear()
    now["state"] = bond_state(nic, ps, active="pf0")  # vf1-rep appears
    second = rec.reconcile("vf1-rep", 0.0)
    assert second.full and "devices changed" in second.trigger
    assert [c for c in calls if c[0] == "bind"] == [("bind", "vf1-rep", 1, 0)]
    assert ("dump", ("pf0", "pf1", "vf0-rep", "vf1-rep"), rules.BLOCKS) in calls  # what it then diffs against
    assert any(r.match.indev == "vf1-rep" for r in rec.plan.rules)
