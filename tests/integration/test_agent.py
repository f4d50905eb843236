"""The offload agent on a real kernel (bonding, cls_flower, act_mirred): failover, loopback, restart, hash.

::

    client (198.18.0.100) ── client-eth0 ─┐
                                          br0 (switch ns) ─┬─ server-pf0 ═ pf0 ─┐
                                                           └─ server-pf1 ═ pf1 ─┴─ bond0 198.18.0.1
    server ns:  vf0-rep ═ vf0 (198.18.0.11)   vf1-rep ═ vf1 (198.18.0.12)
                rdma0-rep ═ rdma0 (RoCEv2 on 198.18.0.1, the bond's MAC)
    agent: testbed.agent.launcher.start() -> python -m testbed agent LAB --foreground --ready-fd N

Labs are brought up with ``bringup.up``, as ``testbed up`` does (agent
included); every fixture tears its lab down (which stops the agent).
Traffic is UDP from sockets opened inside the namespaces; what went where is
read from the rules' own counters (``ops.dump``), as the bonding selftests do.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from pyroute2 import netns as pr_netns

from testbed import bringup, labstore, loader, pids, teardown, wire
from testbed.agent import launcher, rules
from testbed.agent.status import read_raw as read_status
from testbed.bond.state import read_state
from testbed.nl import netns_exists, open_ns, wait_until
from testbed.tc import ops
from testbed.tc.rule import Action, Match, Rule
from testbed.topology import Host, Topology

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = 20  # datagrams per direction and phase


@pytest.fixture(scope="module", autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the agent's integration tests need root (run them in the VM lane: testbed vm -- pytest ...)")


def agent_lab(name: str, lab: str) -> Iterator[Topology]:
    """A lab with its agent, brought up the way every front end does (``bringup.up``), removed after."""
    topo = loader.load(os.path.join(ROOT, "topologies", f"{name}.yaml"), lab_name=lab)
    bringup.up(topo, agent=True)
    try:
        yield topo
    finally:
        teardown.down(topo.name)


def nic_host(topo: Topology) -> Host:
    return topo.nic_host()


def client_host(topo: Topology) -> Host:
    return topo.plain_host()


# --- traffic through sockets opened inside namespaces -------------------------------------------

class Udp:
    def __init__(self, netns: str, bind: Optional[Tuple[str, int]] = None) -> None:
        self.sock = pr_netns.create_socket(netns, socket.AF_INET, socket.SOCK_DGRAM, 0, flags=0)
        self.sock.setblocking(False)
        if bind:
            self.sock.bind(bind)
        self.got = 0

    def send(self, dst: str, port: int, n: int = N, ports: int = 1) -> None:
        for i in range(n):
            while True:
                try:
                    self.sock.sendto(b"testbed-agent %d" % i, (dst, port + i % ports))
                    break
                except BlockingIOError:  # the send buffer is full (e.g. datagrams held for ARP): wait
                    if not select.select([], [self.sock], [], 30)[1]:
                        raise

    def drain(self) -> int:
        while True:
            try:
                self.sock.recv(2048)
                self.got += 1
            except BlockingIOError:
                return self.got

    def close(self) -> None:
        self.sock.close()


def deliver(tx: Udp, rx: Udp, dst: str, port: int, n: int = N, what: str = "") -> None:
    """Send n datagrams and wait until all arrived (ARP may eat the very first: resend once)."""
    start = rx.drain()
    tx.send(dst, port, n)
    try:
        wait_until(lambda: rx.drain() >= start + n, 5, f"{n} datagrams {what}")
    except Exception:
        tx.send(dst, port, n)
        wait_until(lambda: rx.drain() >= start + n, 10, f"{n} datagrams {what} (second try)")


# --- rules in the kernel ---------------------------------------------------------------------------

class View:
    """One NIC's rules and bond as the kernel holds them, over one IPRoute kept open (opening one forks)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.ipr = open_ns(host.netns)

    def installed(self):
        return ops.dump(self.ipr, rules.devices(self.host.nic), rules.BLOCKS)

    def counters(self) -> Dict[Tuple[str, str, str], int]:
        """(dev, hook, label) -> packets; the shared blocks' rules have dev "" (their labels are unique)."""
        return {(i.rule.dev, i.rule.hook, i.rule.label): i.packets for i in self.installed()}

    def wrong(self) -> List[str]:
        """What differs between the kernel and the plan for the bond's current state (empty: converged)."""
        state = read_state(self.ipr, self.host.nic)
        add, replace, delete = ops.diff(rules.plan(self.host.nic, state).rules, self.installed())
        return [f"missing {r.dev} {r.label}" for r in add] + [f"wrong {r.dev} {r.label}" for r in replace] + [
            f"extra {r.dev} {r.hook} prio {r.prio} {r.label}" for r in delete]

    def entries(self):
        """The TX table (once, for every function) in the representors' block."""
        return [i for i in ops.dump(self.ipr, [], [rules.BLOCK_REPS]) if i.rule.chain == rules.CHAIN_TX]

    def tx_port(self) -> Optional[str]:
        return next((i.rule.actions[0].dev for i in self.entries() if i.rule.handle == 1), None)

    def tx_table(self) -> Dict[int, Tuple[Optional[str], int]]:
        return {i.rule.match.hash: (i.rule.actions[0].dev, i.packets) for i in self.entries()}

    def table_ports(self) -> set:
        """The ports the TX table's entries point to."""
        return {port for port, _ in self.tx_table().values()}

    def table_packets(self) -> int:
        """Packets counted by all the TX table's entries."""
        return sum(packets for _, packets in self.tx_table().values())

    def active(self) -> Optional[str]:
        return read_state(self.ipr, self.host.nic).active

    def close(self) -> None:
        self.ipr.close()


def delta(after: Dict, before: Dict, dev: str, label: str, hook: str = "ingress") -> int:
    """How much a rule's counter grew; ``dev`` "" for a rule in a shared block."""
    return after.get((dev, hook, label), 0) - before.get((dev, hook, label), 0)


def start_reaction(lab: str, host: str) -> dict:
    """The newest agent's first reaction (its adoption of what it found)."""
    return [r for r in read_status(lab)["nics"][host]["reactions"] if r["trigger"] == "start"][-1]


def agent_pid(lab: str) -> int:
    pid = launcher.running(lab)
    assert pid, f"agent of {lab} is running"
    return pid


def wait_gone(pid: int, timeout: float = 15) -> None:
    wait_until(lambda: not pids.alive(pid), timeout, f"agent pid {pid} to exit")


# --- active-backup ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ab() -> Iterator[Topology]:
    yield from agent_lab("active-backup", "agab")


@pytest.fixture(scope="module")
def v(ab: Topology) -> Iterator[View]:
    view = View(nic_host(ab))
    yield view
    view.close()


@pytest.fixture(scope="module")
def socks(ab: Topology) -> Iterator[Dict[str, Udp]]:
    server, client = nic_host(ab), client_host(ab)
    vf0, vf1 = server.nic.vfs[0], server.nic.vfs[1]
    bond_ip = str(server.nic.address.ip)
    s = {
        "client": Udp(client.netns, ("0.0.0.0", 9000)),
        "vf0": Udp(vf0.netns, ("0.0.0.0", 9000)),
        "vf1": Udp(vf1.netns, ("0.0.0.0", 9000)),
        "rdma": Udp(server.nic.rdma.netns, (bond_ip, 4791)),
        "bond": Udp(server.netns, (bond_ip, 9000)),
    }
    try:
        yield s
    finally:
        for u in s.values():
            u.close()


def test_agent_is_ready_and_rules_match_the_bond(ab, v):
    server = nic_host(ab)
    status = read_status(ab.name)
    assert status["ready"] and status["running"] and status["pid"] == agent_pid(ab.name)
    nic = status["nics"][server.name]
    assert nic["mapping"] == [v.active()] and nic["usable"] == [v.active()]
    assert v.wrong() == []
    assert v.tx_port() == v.active()


def test_agent_waits_and_reacts_at_realtime_priority(ab):
    """agent.priority: idle in select() at SCHED_FIFO 1 (background work and start-up at normal)."""
    status = read_status(ab.name)
    assert status["priority"] == "realtime (SCHED_FIFO 1) for reactions", status["priority"]
    pid = agent_pid(ab.name)
    wait_until(lambda: os.sched_getscheduler(pid) == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, 30,
               "the agent, idle, at SCHED_FIFO (reset on fork)")
    assert os.sched_getparam(pid).sched_priority == 1


def test_vf_and_rdma_traffic_follows_the_active_port_through_failover(ab, socks, v):
    server, client = nic_host(ab), client_host(ab)
    vf0 = server.nic.vfs[0]
    bond_ip, vf_ip, client_ip = str(server.nic.address.ip), str(vf0.address.ip), str(client.address.ip)
    first = v.active()
    second = next(p for p in server.nic.ports if p != first)

    def traffic(tag: str) -> None:
        # The switch is a plain bridge: after a failback it may still hold the bond's and the VF's MACs on
        # the other port (the bond's gratuitous ARP is skipped while the new port's link event is pending).
        # Frames from both, first, teach it where they are now -- as on a real switch.
        deliver(socks["bond"], socks["client"], client_ip, 9000, what=f"bond -> client ({tag})")
        deliver(socks["vf0"], socks["client"], client_ip, 9000, what=f"vf0 -> client ({tag})")
        deliver(socks["client"], socks["vf0"], vf_ip, 9000, what=f"client -> vf0 ({tag})")
        deliver(socks["client"], socks["rdma"], bond_ip, 4791, what=f"client -> RDMA RoCEv2 ({tag})")

    traffic("warm-up")  # ARP and the switch's FDB settle here
    c0 = v.counters()
    traffic(f"via {first}")
    c1 = v.counters()
    assert delta(c1, c0, "", "tx:vf0") >= N and delta(c1, c0, "", "entry:0") >= N
    # delivered: through the receiving port's gate into the delivery chain; nothing meets the drop chain
    assert delta(c1, c0, "", f"rx-on:{first}") >= 2 * N
    assert delta(c1, c0, "", "rx:vf0") >= N and delta(c1, c0, "", "rx:roce") >= N
    assert delta(c1, c0, "", "drop:vf0") == 0 and delta(c1, c0, "", "drop:roce") == 0

    t = time.monotonic()
    wire.set_wire(ab.name, server.name, first, up=False)
    wait_until(lambda: v.tx_port() == second, 10, f"the agent to move vf0's TX to {second}")
    moved_ms = (time.monotonic() - t) * 1000
    assert v.active() == second
    assert v.wrong() == []
    status = read_status(ab.name)["nics"][server.name]
    assert status["usable"] == [second] and status["mapping"] == [second]
    reaction = [r for r in status["reactions"] if r["replaced"]][-1]
    assert reaction["error"] is None and reaction["usable"] == [second], reaction

    traffic("after failover (warm-up)")
    c2 = v.counters()
    traffic(f"via {second}")
    c3 = v.counters()
    assert delta(c3, c2, "", "tx:vf0") >= N
    assert delta(c3, c2, "", f"rx-on:{second}") >= 2 * N
    assert delta(c3, c2, "", "rx:vf0") >= N and delta(c3, c2, "", "rx:roce") >= N
    assert delta(c3, c2, "", f"rx-off:{first}") == 0, f"nothing arrives on the dead port {first}"
    for label in ("drop:vf0", "drop:roce"):
        assert delta(c3, c2, "", label) == 0
    print(f"failover: wire down -> TX moved in {moved_ms:.0f} ms (incl. polling); agent: {reaction['text']}")

    wire.set_wire(ab.name, server.name, first, up=True)
    if server.nic.bond.primary:
        wait_until(lambda: v.active() == server.nic.primary, 10,
                   f"the bond to return to its primary {server.nic.primary} "
                   "(is IFLA_BOND_PRIMARY set on bond0?)")
    wait_until(lambda: v.tx_port() == v.active(), 10, "the agent to follow the bond back")
    assert v.wrong() == []
    back = v.active()
    traffic("after restore (warm-up)")
    c4 = v.counters()
    traffic(f"via {back}")
    c5 = v.counters()
    assert delta(c5, c4, "", f"rx-on:{back}") >= 2 * N
    assert delta(c5, c4, "", "rx:vf0") >= N and delta(c5, c4, "", "rx:roce") >= N
    assert delta(c5, c4, "", "drop:vf0") == 0


def test_eswitch_loopback_vf_bond_vf_rdma(ab, socks, v):
    """Traffic that never touches the wire on real hardware: VF <-> host, VF <-> VF, VF -> RDMA."""
    server = nic_host(ab)
    vf0, vf1 = server.nic.vfs[0], server.nic.vfs[1]
    bond_ip = str(server.nic.address.ip)
    active = v.active()
    c0 = v.counters()
    deliver(socks["vf0"], socks["bond"], bond_ip, 9000, what="vf0 -> bond (host stack)")
    deliver(socks["bond"], socks["vf0"], str(vf0.address.ip), 9000, what="bond -> vf0")
    deliver(socks["vf0"], socks["vf1"], str(vf1.address.ip), 9000, what="vf0 -> vf1")
    deliver(socks["vf0"], socks["rdma"], bond_ip, 4791, what="vf0 -> RDMA function (RoCEv2)")
    c1 = v.counters()
    assert delta(c1, c0, active, "lb:bond", "egress") >= N
    assert delta(c1, c0, active, "lb:vf0", "egress") >= N
    assert delta(c1, c0, active, "lb:vf1", "egress") >= N
    assert delta(c1, c0, active, "lb:roce", "egress") >= N


def test_restart_adopts_rules_without_touching_the_right_ones(ab, socks, v):
    server, client = nic_host(ab), client_host(ab)
    pid = agent_pid(ab.name)
    deliver(socks["vf0"], socks["client"], str(client.address.ip), 9000, what="vf0 -> client")
    before = {(i.rule.key): i for i in v.installed()}
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    assert v.wrong() == [], "a killed agent leaves its rules in place"
    launcher.start(ab.name, timeout=120)
    after = {(i.rule.key): i for i in v.installed()}
    assert set(after) == set(before)
    for key, inst in before.items():
        assert after[key].rule == inst.rule
        assert after[key].packets >= inst.packets, f"{key}: counter reset, so it was replaced"
    start = start_reaction(ab.name, server.name)
    assert start["trigger"] == "start" and (start["added"], start["replaced"], start["deleted"]) == (0, 0, 0), start


def test_restart_after_changes_while_dead_converges(ab, v):
    """SIGKILL, then the bond fails over, a rule is deleted and a foreign one added; the new agent fixes only those."""
    server = nic_host(ab)
    pid = agent_pid(ab.name)
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    first = v.active()
    second = next(p for p in server.nic.ports if p != first)
    wire.set_wire(ab.name, server.name, first, up=False)
    wait_until(lambda: v.active() == second, 10, f"the bond to move to {second}")
    victim = next(i.rule for i in v.installed() if i.rule.label == "tx:vf1")
    foreign = Rule(dev=second, hook="egress", prio=7, handle=1, match=Match(dst_mac="02:99:99:99:99:99"),
                   actions=(Action("drop"),), label="someone-else")
    ops.apply(v.ipr, delete=[victim], add=[foreign])
    wrong = v.wrong()
    assert wrong, "the kernel is out of line while no agent runs"
    untouched = {i.rule.key: i for i in v.installed()}
    launcher.start(ab.name, timeout=120)
    assert v.wrong() == []
    reaction = start_reaction(ab.name, server.name)
    assert reaction["added"] + reaction["replaced"] + reaction["deleted"] == len(wrong), (reaction, wrong)
    now = {i.rule.key: i for i in v.installed()}
    for key, inst in untouched.items():
        if key in now and now[key].rule == inst.rule:
            assert now[key].packets >= inst.packets, f"{key} was right and must not have been replaced"
    wire.set_wire(ab.name, server.name, first, up=True)


def test_deleted_namespace_stops_the_agent_with_a_clear_error(ab, v):
    server = nic_host(ab)
    pid = agent_pid(ab.name)
    rec = labstore.read(ab.name)
    v.close()  # our own handle must not keep the namespace alive
    pr_netns.remove(server.netns)
    wait_gone(pid)
    status = read_status(ab.name)
    assert status["running"] is False
    assert server.netns in status["error"] and "deleted" in status["error"] and "never recreates" in status["error"]
    assert not netns_exists(server.netns), "the agent must not recreate the namespace"
    rec.netns = [n for n in rec.netns if n != server.netns]
    labstore.write(rec)  # the fixture's down removes the rest


# --- active-active by RX hash ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def aah() -> Iterator[Topology]:
    yield from agent_lab("active-active-hash", "agaah")


def test_hash_failure_moves_only_the_dead_ports_buckets(aah):
    server, client = nic_host(aah), client_host(aah)
    vf0 = server.nic.vfs[0]
    v = View(server)
    tx = Udp(vf0.netns)
    rx = Udp(client.netns, ("0.0.0.0", 9000))
    try:
        # the counts below start from a settled table: in a lab just brought up, a port the bond
        # takes a moment later re-points buckets, and a replaced entry's counter starts again at 0
        wait_until(lambda: v.table_ports() == set(server.nic.ports), 30,
                   "both ports in the TX table of the lab just brought up")
        assert v.wrong() == []
        # vf0 resolves the client's address first: datagrams sent while ARP is pending wait in a
        # queue whose overflow drops the oldest (unres_qlen_bytes), so 256 at once could outrun a
        # slow resolution and never all reach the table
        deliver(tx, rx, str(client.address.ip), 9000, n=1, what="vf0 -> client (ARP)")

        def flows(tag: str) -> None:
            tx.send(str(client.address.ip), 20000, n=256, ports=256)  # 256 flows: one datagram each
            wait_until(lambda: v.table_packets() >= counted + 256, 10,
                       f"256 flows through vf0's TX table ({tag})")

        counted = v.table_packets()
        flows("both ports")
        t0 = v.tx_table()
        native = {e: port for e, (port, _) in t0.items()}
        used = {port for port, packets in t0.values() if packets}
        assert used == set(server.nic.ports), f"both ports carry flows: {t0}"
        dead = server.nic.ports[1]
        wire.set_wire(aah.name, server.name, dead, up=False)
        wait_until(lambda: v.table_ports() == {server.nic.ports[0]}, 10,
                   f"the agent to move {dead}'s buckets")
        t1 = v.tx_table()
        for e, (port, packets) in t1.items():
            if native[e] != dead:
                assert port == native[e] and packets >= t0[e][1], f"bucket {e} on a live port was touched"
        counted = sum(p for _, p in t1.values())
        flows(f"{dead} down")
        t2 = v.tx_table()
        assert all(port != dead for port, _ in t2.values())
        wire.set_wire(aah.name, server.name, dead, up=True)
        wait_until(lambda: {e: p for e, (p, _) in v.tx_table().items()} == native, 15,
                   "the native mapping to come back")
        t3 = v.tx_table()
        for e, (_port, packets) in t3.items():
            if native[e] != dead:
                assert packets >= t2[e][1], f"bucket {e} of the survivor was rewritten on recovery"
        assert v.wrong() == []
        print("buckets per port:", {p: sum(1 for q in native.values() if q == p) for p in server.nic.ports},
              "packets per bucket before failure:", [t0[e][1] for e in sorted(t0)])
    finally:
        tx.close()
        rx.close()
        v.close()


# --- the event plumbing alone ------------------------------------------------------------------------

def test_link_events_report_overrun_and_namespace_removal():
    """ENOBUFS becomes ``lost=True`` (the agent then resyncs fully); a removed namespace name is noticed."""
    from testbed.agent.events import LinkEvents, NetnsWatch

    name = f"agev{os.getpid()}"
    pr_netns.create(name)
    watch = NetnsWatch([name])
    ev = LinkEvents(name)
    try:
        ev.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # tiny: overflow after a few messages
        with open_ns(name) as ipr:
            ipr.link("add", ifname="d0", kind="dummy")
            idx = ipr.link_lookup(ifname="d0")[0]
            for i in range(60):
                ipr.link("set", index=idx, state="up" if i % 2 == 0 else "down")
        batch = ev.drain()
        assert batch.lost, "60 unread link changes must overrun a 4 KiB socket buffer"
        assert ev.drain().messages == 0  # drained
        with open_ns(name) as ipr:
            ipr.link("set", index=idx, state="up")
        wait_until(lambda: "d0" in ev.drain().names, 5, "the next event after the overrun")
        assert watch.missing() == []
        pr_netns.remove(name)
        assert watch.missing() == [name]
    finally:
        ev.close()
        watch.close()
        if netns_exists(name):
            pr_netns.remove(name)
