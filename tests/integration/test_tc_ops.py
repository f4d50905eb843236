"""testbed.tc.ops against a real kernel: install, display, count, replace, delete, hash split.

Needs root, cls_flower, act_mirred, act_gact, clsact (sch_ingress), RPS and
two CPUs: run it in the VM lane (tests/conftest.py fails it, never skips it,
elsewhere).  One namespace, created and removed by the module fixture::

    ns tbtc<pid>x<n>
    +---------------------------------------------------------------+
    |  a0 ============ veth ============ b0   clsact: the rules under |
    |  (test frames go in here           |    test on b0 ingress     |
    |   through an AF_PACKET socket)     |                           |
    |                                    | mirred redirect / mirror  |
    |                                    v                           |
    |                      r0 ============ veth ============ r0p     |
    |                                         clsact: pass rules     |
    |                                         counting what arrives  |
    +---------------------------------------------------------------+

Everything is checked with counters (flower rules read back by dump()), and
the display with ``tc -s -j filter show``.  Frames are built with struct: the
TCG guest pays ~10 s to import scapy.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import subprocess
from typing import Dict, Iterator, List, Tuple

import pytest
from pyroute2 import IPRoute, netns

from testbed.errors import ConflictError, NetlinkOpError, WaitTimeout
from testbed.nl import wait_until
from testbed.tc import canonical, ops
from testbed.tc.rule import (
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    FOREIGN,
    ROCEV2_PORT,
    Action,
    InstalledRule,
    Match,
    Rule,
)

pytestmark = pytest.mark.integration

M_VF = "02:00:00:00:00:01"  # a VF's MAC: redirected to r0
M_HOST = "02:00:00:00:00:02"  # everything else is sent to this one
M_SRC = "02:00:00:00:00:aa"
ETH_P_EXP = 0x88B5  # IEEE local experimental ethertype: the "drop" traffic
HASH_PORT = 5000

RULES = [
    Rule("b0", 10, 1, Match(dst_mac=M_VF), (Action("redirect", "r0"),), label="vf-rx"),
    Rule("b0", 20, 1, Match(eth_type=ETH_P_IP, ip_proto=17, dst_port=ROCEV2_PORT),
         (Action("mirror", "r0"), Action("continue")), label="roce-copy"),
    Rule("b0", 25, 1, Match(eth_type=ETH_P_IP, ip_proto=17, dst_port=ROCEV2_PORT),
         (Action("pass"),), label="roce-seen"),
    Rule("b0", 30, 1, Match(eth_type=ETH_P_IP, ip_proto=17, dst_port=HASH_PORT, hash=0,
                            hash_mask=1), (Action("pass"),), label="bucket0"),
    Rule("b0", 30, 2, Match(eth_type=ETH_P_IP, ip_proto=17, dst_port=HASH_PORT, hash=1,
                            hash_mask=1), (Action("pass"),), label="bucket1"),
    Rule("b0", 40, 1, Match(eth_type=ETH_P_EXP), (Action("drop"),), label="drop"),
    Rule("b0", 50, 1, Match(eth_type=ETH_P_IP, src_ip="198.18.1.0/24", dst_ip="198.18.2.1"),
         (Action("pass"),), label="ip-pass"),
    Rule("b0", 60, 1, Match(eth_type=ETH_P_IPV6, ip_proto=6, src_ip="2001:db8::/64",
                            dst_port=80), (Action("pass"),), label="v6-tcp"),
    Rule("b0", 70, 1, Match(dst_mac="01:00:5e:00:00:00", dst_mac_mask="ff:ff:ff:80:00:00"),
         (Action("mirror", "r0", ingress=True),), label="mcast", chain=0),
    Rule("b0", 10, 1, Match(eth_type=ETH_P_ARP), (Action("pass"),), hook="egress", label="eg-arp"),
]
R0P_RULES = [
    Rule("r0p", 1, 1, Match(dst_mac=M_VF), (Action("pass"),), label="got-vf"),
    Rule("r0p", 2, 1, Match(eth_type=ETH_P_IP, ip_proto=17, dst_port=ROCEV2_PORT),
         (Action("pass"),), label="got-roce"),
]
_counter = iter(range(1_000_000))


# --- frames -------------------------------------------------------------------------


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _eth(dst: str, ethertype: int, payload: bytes) -> bytes:
    frame = _mac(dst) + _mac(M_SRC) + struct.pack("!H", ethertype) + payload
    return frame + b"\0" * max(0, 60 - len(frame))


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + 18, 0) + b"u" * 18
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return _eth(M_HOST, ETH_P_IP, ip + udp)


# --- fixture ------------------------------------------------------------------------


class Lab:
    def __init__(self, ns: str, ipr: IPRoute, sock: socket.socket) -> None:
        self.ns, self.ipr, self.sock = ns, ipr, sock

    def send(self, frame: bytes, count: int = 1) -> None:
        for _ in range(count):
            self.sock.send(frame)

    def counts(self, devs=("b0", "r0p")) -> Dict[str, int]:
        return {i.rule.label: i.packets for i in ops.dump(self.ipr, devs)}

    def wait_counts(self, before: Dict[str, int], delta: Dict[str, int],
                    timeout: float = 20.0) -> Dict[str, int]:
        """Wait until the counters moved by exactly ``delta`` (others unchanged)."""
        want = {k: before.get(k, 0) + delta.get(k, 0) for k in set(before) | set(delta)}
        seen: List[Dict[str, int]] = [{}]

        def moved_as_wanted() -> bool:
            seen[0] = self.counts()
            return seen[0] == want

        try:
            wait_until(moved_as_wanted, timeout, f"counters to move by {delta}", interval=0.05)
        except WaitTimeout:
            moved = {k: seen[0].get(k, 0) - before.get(k, 0) for k in seen[0]}
            raise WaitTimeout(f"counters moved by {moved}, expected {delta}") from None
        return seen[0]

    def tc_show(self, dev: str, hook: str = "ingress") -> Dict[Tuple[int, int], dict]:
        out = subprocess.run(["tc", "-n", self.ns, "-s", "-j", "filter", "show", "dev", dev,
                              hook], check=True, capture_output=True, text=True).stdout
        return {(e["pref"], e["options"]["handle"]): e for e in json.loads(out) if "options" in e}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    ns = f"tbtc{os.getpid()}x{next(_counter)}"
    netns.create(ns)
    try:
        with IPRoute(netns=ns, groups=0) as ipr:
            ipr.link("add", ifname="a0", kind="veth", peer={"ifname": "b0"})
            ipr.link("add", ifname="r0", kind="veth", peer={"ifname": "r0p"})
            for name in ("a0", "b0", "r0", "r0p"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            sock = netns.create_socket(ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                sock.bind(("a0", 0))
                yield Lab(ns, ipr, sock)
            finally:
                sock.close()
    finally:
        netns.remove(ns)  # takes its veths along


# --- tests (in order: each builds on the rules the previous one left) ------------------


def _expected_display(rule: Rule) -> Tuple[dict, List[dict]]:
    m = rule.match
    keys: dict = {}
    if m.dst_mac:
        keys["dst_mac"] = m.dst_mac + ("/25" if m.dst_mac_mask else "")
    if m.eth_type:
        keys["eth_type"] = {ETH_P_IP: "ipv4", ETH_P_IPV6: "ipv6", ETH_P_ARP: "arp"}.get(
            m.eth_type, f"{m.eth_type:04x}")
    if m.ip_proto:
        keys["ip_proto"] = {6: "tcp", 17: "udp"}[m.ip_proto]
    for name in ("src_ip", "dst_ip", "dst_port"):
        if getattr(m, name) is not None:
            keys[name] = getattr(m, name)
    actions = []
    for order, a in enumerate(rule.actions, 1):
        if a.dev:
            act = {"kind": "mirred", "mirred_action": a.kind, "to_dev": a.dev,
                   "direction": "ingress" if a.ingress else "egress"}
        else:
            act = {"kind": "gact", "control_action": {"type": a.kind}}
        act.update(order=order, cookie=rule.label.encode().hex())
        actions.append(act)
    return keys, actions


def test_install_shows_in_tc_and_reads_back(lab: Lab) -> None:
    ops.ensure_clsact(lab.ipr, "b0")
    ops.ensure_clsact(lab.ipr, "b0")  # idempotent
    ops.ensure_clsact(lab.ipr, "r0p")
    ops.apply(lab.ipr, add=RULES + R0P_RULES)

    for hook in ("ingress", "egress"):
        shown = lab.tc_show("b0", hook)
        mine = [r for r in RULES if r.hook == hook]
        assert sorted(shown) == sorted((r.prio, r.handle) for r in mine)
        for rule in mine:
            entry = shown[(rule.prio, rule.handle)]
            assert (entry["kind"], entry["protocol"], entry["chain"]) == ("flower", "all", 0)
            opts = entry["options"]
            assert opts["skip_hw"] is True and opts["not_in_hw"] is True
            keys, actions = _expected_display(rule)
            assert opts["keys"] == keys, rule.label  # tc 6.1 prints no hash key
            for want, got in zip(actions, opts["actions"]):
                assert {k: got.get(k) for k in want} == want, rule.label
            assert len(opts["actions"]) == len(actions)

    got = ops.dump(lab.ipr, ["b0", "r0p"])
    assert got == [InstalledRule(canonical.canonical(r)) for r in _kernel_order(RULES + R0P_RULES)]


def _kernel_order(rules: List[Rule]) -> List[Rule]:
    """dump()'s order: by dev as asked, ingress before egress, then chain, prio, handle."""
    devs = ["b0", "r0p"]
    return sorted(rules, key=lambda r: (devs.index(r.dev), r.hook != "ingress", r.chain,
                                        r.prio, r.handle))


def test_counters_count_on_exactly_the_matching_rule(lab: Lab) -> None:
    before = lab.counts()
    assert set(before.values()) == {0}
    lab.send(_eth(M_VF, ETH_P_EXP, b"v" * 46), 5)  # dst_mac wins over the drop at prio 40
    before = lab.wait_counts(before, {"vf-rx": 5, "got-vf": 5})
    lab.send(_udp4("198.18.0.1", "198.18.0.2", 1000, ROCEV2_PORT), 7)  # mirror, continue, pass
    before = lab.wait_counts(before, {"roce-copy": 7, "roce-seen": 7, "got-roce": 7})
    lab.send(_eth(M_HOST, ETH_P_EXP, b"d" * 46), 3)
    before = lab.wait_counts(before, {"drop": 3})
    lab.send(_udp4("198.18.1.9", "198.18.2.1", 1000, 9), 4)
    before = lab.wait_counts(before, {"ip-pass": 4})
    # one flow, no RPS: skb->hash was never computed, it is 0 -> bucket 0 only
    lab.send(_udp4("198.18.0.1", "198.18.0.2", 1000, HASH_PORT), 6)
    lab.wait_counts(before, {"bucket0": 6})


def test_replace_in_place_and_delete(lab: Lab) -> None:
    vf_rx, drop = RULES[0], RULES[5]
    blocked = Rule(vf_rx.dev, vf_rx.prio, vf_rx.handle, Match(dst_mac=M_VF), (Action("drop"),),
                   label="vf-blocked")
    ops.apply(lab.ipr, replace=[blocked], delete=[drop])
    shown = lab.tc_show("b0")
    assert (40, 1) not in shown
    act = shown[(10, 1)]["options"]["actions"]
    assert [(a["kind"], a["control_action"]["type"], a["cookie"]) for a in act] == [
        ("gact", "drop", b"vf-blocked".hex())]
    before = lab.counts()
    assert before["vf-blocked"] == 0 and "drop" not in before and "vf-rx" not in before
    lab.send(_eth(M_VF, ETH_P_EXP, b"v" * 46), 4)  # now dropped: r0p sees nothing
    before = lab.wait_counts(before, {"vf-blocked": 4})
    lab.send(_eth(M_HOST, ETH_P_EXP, b"d" * 46), 4)  # the drop rule is gone: nobody counts
    # a marker after them: once it is counted, they went through too (one CPU, in order)
    lab.send(_udp4("198.18.1.9", "198.18.2.1", 1000, 9))
    lab.wait_counts(before, {"ip-pass": 1})


def test_diff_reconciles_mask_changes_and_foreign_rules(lab: Lab) -> None:
    # a tc-made u32 and a protocol-ip flower rule appear on b0
    for argv in (["prio", "80", "protocol", "all", "u32", "match", "u32", "0", "0",
                  "action", "pass"],
                 ["prio", "81", "handle", "1", "protocol", "ip", "flower", "ip_proto", "tcp",
                  "action", "pass"]):
        subprocess.run(["tc", "-n", lab.ns, "filter", "add", "dev", "b0", "ingress", *argv],
                       check=True)
    installed = ops.dump(lab.ipr, ["b0"])
    foreign = {i.rule.prio: i.foreign for i in installed if i.rule.label == FOREIGN}
    assert foreign[80] == ("kind u32",) and foreign[81] == ("protocol 0x0800",)

    desired = [r for r in RULES if r.label not in ("vf-rx", "drop")]
    desired.append(Rule("b0", 10, 1, Match(dst_mac=M_VF), (Action("redirect", "r0"),),
                        label="vf-rx"))
    wider = Rule("b0", 30, 2, Match(eth_type=ETH_P_IP, ip_proto=17, dst_port=HASH_PORT,
                                    hash=1, hash_mask=3), (Action("pass"),), label="bucket1")
    desired = [wider if r.key == wider.key else r for r in desired]
    desired.append(Rule("b0", 81, 1, Match(eth_type=ETH_P_IP, ip_proto=6), (Action("pass"),),
                        label="tcp"))
    add, replace, delete = ops.diff(desired, installed)
    assert [r.label for r in replace] == ["vf-rx"]
    assert {(r.prio, r.label) for r in delete} >= {(30, "bucket1"), (81, FOREIGN), (80, FOREIGN)}
    assert {r.label for r in add} == {"bucket1", "tcp"}
    with pytest.raises(NetlinkOpError) as info:  # what diff() avoids: replace across masks
        ops.apply(lab.ipr, replace=[wider])
    assert info.value.errno == errno.EINVAL and "same keys and masks" in str(info.value)
    ops.apply(lab.ipr, add=add, replace=replace, delete=delete)
    after = ops.dump(lab.ipr, ["b0"])
    assert sorted((i.rule for i in after), key=lambda r: r.key) == sorted(
        (canonical.canonical(r) for r in desired), key=lambda r: r.key)
    assert ops.diff(desired, after) == ([], [], [])


def test_errors_name_the_rule_and_the_fix(lab: Lab) -> None:
    gone = Rule("b0", 99, 1, Match(), (Action("pass"),), label="gone")
    with pytest.raises(NetlinkOpError) as info:
        ops.apply(lab.ipr, delete=[gone])
    assert info.value.errno == errno.ENOENT and "b0 ingress prio 99 handle 1" in str(info.value)
    with pytest.raises(NetlinkOpError) as info:
        ops.apply(lab.ipr, add=[RULES[2]])
    assert info.value.errno == errno.EEXIST and "replace" in info.value.fix
    with pytest.raises(NetlinkOpError) as info:  # r0 has no clsact
        ops.apply(lab.ipr, add=[Rule("r0", 1, 1, Match(), (Action("pass"),))])
    assert info.value.errno == errno.EINVAL and "ensure_clsact" in info.value.fix
    assert "Parent Qdisc" in str(info.value)  # the kernel's own words (extended ack)
    with pytest.raises(NetlinkOpError) as info:
        ops.apply(lab.ipr, add=[Rule("b0", 1, 1, Match(), (Action("redirect", "nope"),))])
    assert info.value.errno == errno.ENODEV and "nope" in str(info.value)
    # one bad rule in a batch: the others still go in, the error lists it
    ok = Rule("b0", 90, 1, Match(eth_type=ETH_P_ARP), (Action("pass"),), label="ok")
    with pytest.raises(NetlinkOpError) as info:
        ops.apply(lab.ipr, add=[ok, RULES[2]], window=2)
    assert "prio 25" in str(info.value)
    assert ok.key in {i.rule.key for i in ops.dump(lab.ipr, ["b0"])}


def test_rps_hash_splits_flows_between_two_buckets(lab: Lab) -> None:
    cpus = os.cpu_count() or 1
    assert cpus >= 2, "RPS computes skb->hash only when it can choose among 2+ CPUs"
    path = "/sys/class/net/b0/queues/rx-0/rps_cpus"  # the netns's own sysfs, via ip netns exec
    subprocess.run(["ip", "netns", "exec", lab.ns, "tee", path], input=f"{(1 << cpus) - 1:x}\n",
                   check=True, capture_output=True, text=True)
    buckets = [
        Rule("b0", 35, b + 1, Match(eth_type=ETH_P_IP, ip_proto=17, dst_port=HASH_PORT + 1,
                                    hash=b, hash_mask=1), (Action("pass"),), label=f"rps{b}")
        for b in (0, 1)
    ]
    ops.apply(lab.ipr, add=buckets)
    before = lab.counts()
    for flow in range(200):
        lab.send(_udp4("198.18.0.1", "198.18.0.2", 20000 + flow, HASH_PORT + 1))
    split = [0, 0]

    def all_counted() -> bool:
        now = lab.counts()
        split[:] = [now[f"rps{b}"] - before[f"rps{b}"] for b in (0, 1)]
        return sum(split) == 200

    try:
        wait_until(all_counted, 20, "200 frames counted by the two bucket rules", interval=0.05)
    except WaitTimeout:
        pass  # the assertion below says how many
    print(f"hash split of 200 UDP flows with RPS: {split[0]}/{split[1]}")
    assert sum(split) == 200
    # binomial(200, 1/2): 100 +- 7; 60..140 is far outside chance, inside any real hash
    assert 60 <= split[0] <= 140, split


def test_bulk_apply_on_a_socket_that_hears_notifications(lab: Lab) -> None:
    """A default IPRoute gets a notification per filter: windows must not overrun it."""
    bulk = [Rule("r0", 100, n, Match(dst_mac=f"02:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}"),
                 (Action("pass"),), label=f"bulk{n}") for n in range(1, 301)]
    with IPRoute(netns=lab.ns) as listening:  # RTMGRP_TC among its default groups
        ops.ensure_clsact(listening, "r0")
        ops.apply(listening, add=bulk, window=256)
        assert ops.dump(listening, ["r0"]) == [InstalledRule(r) for r in bulk]
        ops.apply(listening, delete=bulk, window=256)
        assert ops.dump(listening, ["r0"]) == []


# --- shared blocks, chains, indev -----------------------------------------------------------
#
#    s0 ==== veth ==== t0 --+
#                           +-- clsact ingress_block 7:  chain 0  indev t0, ethertype 0x88b5 -> goto chain 5
#    s1 ==== veth ==== t1 --+                                     indev t1, ethertype 0x88b5 -> drop
#                                                        chain 5  ethertype 0x88b5 -> pass
#
# (the ethertype keeps the IPv6 autoconfiguration of the new links out of the counters)

BLOCK = 7
BLOCK_RULES = [
    Rule("", 1, 1, Match(indev="t0", eth_type=ETH_P_EXP), (Action("goto", chain=5),), block=BLOCK, label="from-t0"),
    Rule("", 1, 2, Match(indev="t1", eth_type=ETH_P_EXP), (Action("drop"),), block=BLOCK, label="t1-drop"),
    Rule("", 2, 1, Match(eth_type=ETH_P_EXP), (Action("pass"),), block=BLOCK, chain=5, label="chain5"),
]


def test_ensure_clsacts_binds_many_at_once_rebinds_and_names_a_conflict(lab: Lab) -> None:
    """The agent's resync binds every device with ``ensure_clsacts``: the missing clsacts added in one batch,
    one bound otherwise rebound, a device whose ffff: is another qdisc refused by name."""
    for a, b in (("u0", "v0"), ("u1", "v1"), ("w0", "w1")):
        lab.ipr.link("add", ifname=a, kind="veth", peer={"ifname": b})
    ops.ensure_clsact(lab.ipr, "v0")  # its own blocks: must be rebound
    want = {"u0": (9, 0), "u1": (9, 0), "v0": (9, 0), "v1": (0, 0)}
    ops.ensure_clsacts(lab.ipr, want, ops.clsact_blocks(lab.ipr))
    blocks = ops.clsact_blocks(lab.ipr)
    assert {dev: blocks.get(dev) for dev in want} == want
    ops.ensure_clsacts(lab.ipr, want, blocks)  # idempotent
    assert ops.clsact_blocks(lab.ipr) == blocks
    subprocess.run(["tc", "-n", lab.ns, "qdisc", "add", "dev", "w0", "ingress"], check=True)
    with pytest.raises(ConflictError, match="w0: qdisc ffff: is 'ingress'"):
        ops.ensure_clsacts(lab.ipr, {"w0": (9, 0)}, ops.clsact_blocks(lab.ipr))


def test_shared_block_with_indev_and_goto_chain(lab: Lab) -> None:
    for a, b in (("s0", "t0"), ("s1", "t1")):
        lab.ipr.link("add", ifname=a, kind="veth", peer={"ifname": b})
        for name in (a, b):
            lab.ipr.link("set", index=lab.ipr.link_lookup(ifname=name)[0], state="up")
    ops.ensure_clsact(lab.ipr, "t0")  # unshared first: ensure_clsact rebinds it
    ops.ensure_clsact(lab.ipr, "t0", ingress_block=BLOCK)
    ops.ensure_clsact(lab.ipr, "t1", ingress_block=BLOCK)
    ops.ensure_clsact(lab.ipr, "t1", ingress_block=BLOCK)  # idempotent
    blocks = ops.clsact_blocks(lab.ipr)
    assert blocks["t0"] == blocks["t1"] == (BLOCK, 0) and blocks["b0"] == (0, 0)
    with pytest.raises(NetlinkOpError) as info:  # a bound hook takes no filters of its own
        ops.apply(lab.ipr, add=[Rule("t0", 1, 1, Match(), (Action("pass"),))])
    assert info.value.errno == errno.EOPNOTSUPP
    ops.apply(lab.ipr, add=BLOCK_RULES)

    out = subprocess.run(["tc", "-n", lab.ns, "-s", "-j", "filter", "show", "block", str(BLOCK)],
                         check=True, capture_output=True, text=True).stdout
    shown = {(e["chain"], e["pref"], e["options"]["handle"]): e for e in json.loads(out) if "options" in e}
    assert sorted(shown) == sorted((r.chain, r.prio, r.handle) for r in BLOCK_RULES)
    for rule in BLOCK_RULES:
        opts = shown[(rule.chain, rule.prio, rule.handle)]["options"]
        assert (opts.get("indev") or opts["keys"].get("indev")) == rule.match.indev, rule.label
        (act,) = opts["actions"]
        want = {"type": rule.actions[0].kind}
        if rule.actions[0].kind == "goto":
            want["chain"] = rule.actions[0].chain
        assert act["control_action"] == want and act["cookie"] == rule.label.encode().hex(), rule.label

    # the block's rules come back once, with the block, not through each bound hook
    assert ops.dump(lab.ipr, ["t0", "t1"]) == []
    got = ops.dump(lab.ipr, ["t0", "t1"], [BLOCK])
    assert [i.rule for i in got] == sorted(BLOCK_RULES, key=lambda r: (r.chain, r.prio, r.handle))
    assert ops.diff(BLOCK_RULES, got) == ([], [], [])

    seen: List[Dict[str, int]] = [{}]

    def counts_are(want: Dict[str, int]) -> bool:
        seen[0] = {i.rule.label: i.packets for i in ops.dump(lab.ipr, [], [BLOCK])}
        return seen[0] == want

    sockets = {}
    try:
        for a in ("s0", "s1"):
            sockets[a] = netns.create_socket(lab.ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
            sockets[a].bind((a, 0))
        frame = _eth(M_HOST, ETH_P_EXP, b"b" * 46)
        for _ in range(3):
            sockets["s0"].send(frame)
        for _ in range(2):
            sockets["s1"].send(frame)
        want = {"from-t0": 3, "chain5": 3, "t1-drop": 2}
        try:
            wait_until(lambda: counts_are(want), 20, f"block counters {want} (indev tells the ports apart)",
                       interval=0.05)
        except WaitTimeout:
            raise AssertionError(f"block counters {seen[0]}, expected {want}") from None
        # replace in place: t1 now joins chain 5 too
        joined = Rule("", 1, 2, Match(indev="t1", eth_type=ETH_P_EXP), (Action("goto", chain=5),), block=BLOCK,
                      label="from-t1")
        ops.apply(lab.ipr, replace=[joined])
        sockets["s1"].send(frame)
        want = {"from-t0": 3, "chain5": 4, "from-t1": 1}
        try:
            wait_until(lambda: counts_are(want), 20, f"block counters {want} after the replace", interval=0.05)
        except WaitTimeout:
            raise AssertionError(f"block counters {seen[0]} after the replace, expected {want}") from None
    finally:
        for s in sockets.values():
            s.close()
    # unbinding every device removes the block and its rules
    ops.ensure_clsact(lab.ipr, "t0")
    ops.ensure_clsact(lab.ipr, "t1")
    assert ops.dump(lab.ipr, [], [BLOCK]) == []
