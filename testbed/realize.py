"""Realize a validated ``Topology``: namespaces, veth wires, the real bond, VFs, the RDMA function.

Order: the lab record is written first; each namespace is recorded *before*
it is created; every other object lives inside a lab namespace, so deleting
the namespaces removes it all. A failing step unwinds what was built (in
reverse) and raises ``BuildError`` naming the step.

::

    switch ns: br0 ─┬─ <host>-eth0 ═══ eth0 (plain host)
                    └─ <host>-pfN ═══ pfN ─ bond0 (NIC host; via <host>-lag for balance-xor/802.3ad)
    NIC host ns: <fn>-rep ═══ <fn> (VF / RDMA namespace)
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pyroute2 import IPRoute

from testbed import fnbuild, labstore, naming, nlpipe, nsfs, rawnl, rdma, rtnlmsg
from testbed.bond import options, wire
from testbed.bond.state import read_state
from testbed.errors import BuildError, ConflictError, NetlinkOpError, TestbedError
from testbed.nl import netlink_op, netns_exists, open_ns, wait_until
from testbed.progress import Progress, quiet
from testbed.topology import Bond, Host, Nic, Topology

MIIMON_DELAYS = ("updelay", "downdelay", "peer_notify_delay")  # the kernel refuses them (EPERM) when miimon is 0


def _bond_values(bond: Bond) -> Dict[str, Any]:
    values = {o.name: bond.value(o.name) for o in options.BOND_OPTIONS}
    if not bond.miimon:  # the ARP/NS monitor: the loader allowed no delay, and even 0 would be refused
        values.update(dict.fromkeys(MIIMON_DELAYS))
    return values


def bond_options(bond: Bond) -> Dict[str, int]:
    """IFLA_BOND_* attributes for pyroute2 ``link('add', kind='bond', ...)`` (``primary``: set once enslaved)."""
    return options.attrs(_bond_values(bond))


def bond_extra(bond: Bond) -> List[Tuple[str, Any]]:
    """The bond's options pyroute2 cannot send (``bond.wire.change_bond``), set before any port is enslaved."""
    return options.extra(_bond_values(bond))


def partner_options(bond: Bond) -> Optional[Dict[str, int]]:
    """The switch side of a LAG: a static (balance-xor) or LACP (802.3ad) partner; none for active-backup."""
    if bond.mode not in options.LAG_MODES:
        return None
    return options.attrs({"mode": bond.mode, "miimon": bond.miimon or 100, "xmit_hash_policy": "layer3+4",
                          "lacp_rate": (bond.lacp_rate or "fast") if bond.mode == "802.3ad" else None})


def check_conflicts(topo: Topology) -> None:
    """Refuse before any change if a name the lab needs is taken."""
    if labstore.try_read(topo.name) is not None:
        raise ConflictError(f"lab {topo.name!r} already exists on this machine",
                            fix=f"`testbed down {topo.name}` first, or pick another name with --name")
    for name in topo.netns_names:
        if netns_exists(name):
            raise ConflictError(f"network namespace {name!r} already exists and is not part of a recorded lab",
                                fix=f"remove it (`ip netns del {name}`) if it is a leftover of ours "
                                    "(`testbed clean` does that for marked ones), or rename the lab with --name")


class Builder:
    """Builds a lab's objects through netlink; ``run()`` builds the whole lab.

    The parts that go into namespaces someone else created (the Mininet front
    end creates the hosts, the switch and the wires) are separate methods:
    ``switch_side(host, bridge)`` attaches a host's wires on the switch and
    ``nic(host)`` builds the NIC inside a host namespace whose ports exist.
    ``rec`` lets such a caller share its own lab record.
    """

    def __init__(self, topo: Topology, progress: Progress = quiet,
                 rec: Optional[labstore.LabRecord] = None) -> None:
        self.topo = topo
        self.progress = progress
        self.rec = rec if rec is not None else labstore.LabRecord(name=topo.name, file=topo.file,
                                                                  topology=topo.raw, pid=os.getpid())
        self.handles: Dict[str, IPRoute] = {}
        self.step = "start"
        self.bond_timeout = 60.0

    # -- namespaces -------------------------------------------------------
    def ns(self, name: str) -> IPRoute:
        if name not in self.handles:
            self.handles[name] = open_ns(name)
        return self.handles[name]

    def close(self) -> None:
        for ipr in self.handles.values():
            ipr.close()
        self.handles.clear()

    def create_netns(self, *names: str) -> None:
        """The namespaces, recorded first (one record write: a crash at any instant is still cleanable),
        then made marked and IPv6-quiet by one thread of this process (``nsfs.create_marked_netns_many``)."""
        self.rec.netns.extend(names)
        labstore.write(self.rec)
        sw = self.topo.switch_netns  # L2 only: IPv6 stays off there even in a dual-stack lab
        ipv6 = nsfs.lab_ipv6_writes() if self.topo.subnet6 else nsfs.quiet_ipv6_writes()
        for group, writes in (([n for n in names if n == sw], nsfs.quiet_ipv6_writes()),
                              ([n for n in names if n != sw], ipv6)):
            nsfs.create_marked_netns_many(group, naming.mark(self.topo.name), writes,
                                          on_each=lambda name: self.progress(f"created namespace {name}"))

    # -- links ------------------------------------------------------------
    def veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str, mac_a: Optional[str] = None,
             mac_b: Optional[str] = None) -> None:
        ipr = self.ns(ns_a)
        fd = os.open(os.path.join("/run/netns", ns_b), os.O_RDONLY)
        try:
            with netlink_op(f"{ns_a}: veth {name_a} <-> {ns_b}: {name_b}"):
                ipr.link("add", ifname=name_a, kind="veth", peer={"ifname": name_b, "net_ns_fd": fd})
        finally:
            os.close(fd)
        mark = naming.mark(self.topo.name)
        with netlink_op(f"{ns_a}: {name_a}"):
            idx = ipr.link_lookup(ifname=name_a)[0]
            attrs = {"ifalias": mark}
            if mac_a:
                attrs["address"] = mac_a
            ipr.link("set", index=idx, **attrs)
        ipr_b = self.ns(ns_b)
        attrs_b = {"ifalias": mark, **({"address": mac_b} if mac_b else {})}
        with netlink_op(f"{ns_b}: {name_b}"):
            ipr_b.link("set", index=ipr_b.link_lookup(ifname=name_b)[0], **attrs_b)

    def link_set(self, ns: str, ifname: str, **attrs: object) -> int:
        ipr = self.ns(ns)
        with netlink_op(f"{ns}: {ifname}: set {', '.join(attrs)}"):
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                raise BuildError(f"{ns}: {ifname}: vanished while building")
            ipr.link("set", index=idx[0], **attrs)
        return idx[0]

    def addr(self, ns: str, ifname: str, *addresses: Any) -> None:
        """Each of ``addresses`` (IPv4 or IPv6 interfaces; None skipped) on ``ifname``."""
        ipr = self.ns(ns)
        for address in addresses:
            if address is not None:
                with netlink_op(f"{ns}: {ifname}: address {address}"):
                    index = ipr.link_lookup(ifname=ifname)[0]
                self.raw(ns, f"{ifname}: address {address}", rtnlmsg.RTM_NEWADDR, rtnlmsg.CREATE,
                         rtnlmsg.addr(index, address))

    def bond(self, ns: str, name: str, opts: Dict[str, int], mac: str, slaves: List[str],
             extra: Sequence[Tuple[str, Any]] = ()) -> None:
        ipr = self.ns(ns)
        with netlink_op(f"{ns}: {name}: create bond ({', '.join(f'{k}={v}' for k, v in opts.items())})"):
            ipr.link("add", ifname=name, kind="bond", address=mac, ifalias=naming.mark(self.topo.name), **opts)
        master = ipr.link_lookup(ifname=name)[0]
        if extra:
            self.raw_link(ns, f"{name}: set {', '.join(f'{k}={v}' for k, v in extra)}", wire.change_bond(master, extra))
        for slave in slaves:
            with netlink_op(f"{ns}: {name}: cannot enslave {slave}"):
                ipr.link("set", index=ipr.link_lookup(ifname=slave)[0], master=master)

    def raw_link(self, ns: str, what: str, body: bytes) -> None:
        """One RTM_NEWLINK built by ``bond.wire`` (what pyroute2 cannot encode)."""
        self.raw(ns, what, rawnl.RTM_NEWLINK, 0, body)

    def raw(self, ns: str, what: str, msg_type: int, flags: int, body: bytes) -> None:
        """One request built by this project; NetlinkOpError with the kernel's own text when it refuses."""
        reply = nlpipe.transact(self.ns(ns), [(msg_type, flags, body)])[0]
        if reply.errno:
            raise NetlinkOpError(f"{ns}: {what}: {nlpipe.errno_name(reply.errno)}"
                                 + (f" ({reply.message})" if reply.message else ""), errno=reply.errno)

    def port_options(self, ns: str, bond: Bond, ports: Sequence[str]) -> None:
        """The ports' own bond options (``prio``, ``ad_actor_port_prio``), once they are enslaved."""
        for port in ports:
            values = options.port_attrs(bond.port_values(port))
            if values:
                index = self.ns(ns).link_lookup(ifname=port)[0]
                self.raw_link(ns, f"{port}: set {', '.join(f'{k}={v}' for k, v in values)}",
                              wire.change_slave(index, values))

    # -- the lab ------------------------------------------------------------
    def run(self) -> labstore.LabRecord:
        topo = self.topo
        labstore.write(self.rec)
        sw = topo.switch_netns
        self.step = f"create namespaces ({len(topo.netns_names)})"
        self.progress(self.step)
        self.create_netns(*topo.netns_names)
        self.step = f"{sw}: bridge {naming.BRIDGE}"
        ipr = self.ns(sw)
        with netlink_op(self.step):
            ipr.link("add", ifname=naming.BRIDGE, kind="bridge", ifalias=naming.mark(topo.name))
            self.link_set(sw, naming.BRIDGE, state="up")
        for host in topo.hosts:
            self.progress(f"host {host.name}")
            if host.nic:
                self.nic_host(host, host.nic)
            else:
                self.plain_host(host)
        if any(h.nic and h.nic.resilient_switch for h in topo.hosts):
            # the switch's resilient tables match skb->hash: RPS computes it as frames enter the switch
            self.step = f"{sw}: RPS on the switch's ports (resilient partner selection)"
            nsfs.write_in_netns(sw, nsfs.rps_writes([naming.switch_port(h.name, p) for h in topo.hosts
                                                      for p in h.uplinks]))
        self.step = "wait for the bonds"
        self.progress(self.step)
        self.wait_bonds(self.bond_timeout)
        self.step = "Soft-RoCE devices"
        rdma.create_all(topo, self.progress)
        return self.rec  # still "building": bringup.finish marks it up once the agent is confirmed

    def plain_host(self, host: Host) -> None:
        sw, swp = self.topo.switch_netns, naming.switch_port(host.name, naming.HOST_IF)
        self.step = f"{host.netns}: wire {naming.HOST_IF} <-> {sw}: {swp}"
        self.veth(host.netns, naming.HOST_IF, sw, swp, mac_a=host.mac)
        self.switch_side(host)
        self.addr(host.netns, naming.HOST_IF, host.address, host.address6)
        self.link_set(host.netns, naming.HOST_IF, state="up")

    def nic_host(self, host: Host, nic: Nic) -> None:
        sw, ns = self.topo.switch_netns, host.netns
        for port in nic.ports:
            self.step = f"{ns}: wire {port} <-> {sw}: {naming.switch_port(host.name, port)}"
            self.veth(ns, port, sw, naming.switch_port(host.name, port))
        self.switch_side(host)
        self.nic(host)

    def switch_side(self, host: Host, bridge: str = naming.BRIDGE) -> None:
        """Attach a host's wires (``<host>-eth0`` / ``<host>-pfN``, already in the switch namespace) to
        ``bridge``: directly, or through the partner bond ``<host>-lag`` for balance-xor/802.3ad (with two
        partner switches, ``<host>-lag`` and ``<host>-lag1``, each over its half of the wires)."""
        sw = self.topo.switch_netns
        br = self.ns(sw).link_lookup(ifname=bridge)[0]
        if host.nic is None:
            self.link_set(sw, naming.switch_port(host.name, naming.HOST_IF), master=br, state="up")
            return
        nic = host.nic
        popts = partner_options(nic.bond)
        if popts is not None:  # one partner bond per partner switch, each its own LACP system (its MAC)
            for i, group in enumerate(nic.partner_groups):
                swports = [naming.switch_port(host.name, p) for p in group]
                lag = naming.partner_bond(host.name, i)
                self.step = f"{sw}: partner bond {lag}"
                mac = naming.stable_mac(self.topo.name, host.name, "partner" + (str(i) if i else ""))
                self.bond(sw, lag, popts, mac, swports)
                for p in swports:
                    self.link_set(sw, p, state="up")
                self.link_set(sw, lag, master=br, state="up")
        else:
            for p in (naming.switch_port(host.name, p) for p in nic.ports):
                self.link_set(sw, p, master=br, state="up")

    def nic(self, host: Host) -> None:
        """The NIC inside ``host.netns``, whose ports (down, not enslaved) already exist: the bond with the
        file's options and address, the VFs and the RDMA function with their representors and namespaces,
        clsact and RPS on ports and representors."""
        nic, ns = host.nic, host.netns
        assert nic is not None, f"{host.name} has no NIC"
        self.step = f"{ns}: {nic.bond.name}"
        self.bond(ns, nic.bond.name, bond_options(nic.bond), nic.mac, list(nic.ports), bond_extra(nic.bond))
        self.port_options(ns, nic.bond, nic.ports)
        if nic.bond.primary:
            self.link_set(ns, nic.bond.name, kind="bond",
                          bond_primary=self.ns(ns).link_lookup(ifname=nic.bond.primary)[0])
        for port in nic.ports:
            self.link_set(ns, port, state="up")
        self.addr(ns, nic.bond.name, nic.address, nic.address6)
        self.link_set(ns, nic.bond.name, state="up")
        self.functions(host)
        self.step = f"{ns}: RPS on ports and representors"
        nsfs.write_in_netns(ns, nsfs.rps_writes(list(nic.ports) + [fn.rep for fn in nic.functions]))

    def functions(self, host: Host) -> None:
        """The VFs and the RDMA function with their representors, and clsact on ports and representors:
        batched (``fnbuild``), a few sendmsg calls for hundreds of functions."""
        nic, ns, mark = host.nic, host.netns, naming.mark(self.topo.name)
        assert nic is not None, f"{host.name} has no NIC"
        # The representor carries the bond's MAC: a VF's frame to the bond, looped by mirred into bond0's
        # ingress, keeps the packet type it got on the representor, and only PACKET_HOST reaches ip_rcv.
        self.step = f"{ns}: {len(nic.functions)} functions' veths"
        self.progress(self.step)
        fnbuild.veths(self.ns(ns), ns, nic, nic.functions, mark)
        self.step = f"{ns}: the functions' netdevs (mark, up, address, RDMA neighbours)"
        self.progress(self.step)
        fnbuild.configure(nic.functions, mark, lambda fn: self.rdma_peers() if fn.kind == "rdma" else ())
        self.step = f"{ns}: clsact on ports and representors"
        self.progress(self.step)
        fnbuild.clsact(self.ns(ns), ns, list(nic.ports) + [fn.rep for fn in nic.functions])

    def rdma_peers(self) -> List[fnbuild.Peer]:
        """The RDMA function shares the bond's MAC, so ARP replies go to the bond: it pins its peers
        (plain hosts and every VF) statically."""
        peers = []
        for h in self.topo.hosts:
            for owner in [h] if not h.nic else h.nic.vfs:
                peers += [(a.ip, owner.mac) for a in (owner.address, owner.address6) if a is not None]
        return peers

    def wait_bonds(self, timeout: float) -> None:
        """Until every bond is usable: a chosen active port, slaves up, or LACP collecting+distributing."""
        for host in self.topo.hosts:
            if not host.nic:
                continue
            nic, ipr = host.nic, self.ns(host.netns)

            def ready(nic: Nic = nic, ipr: IPRoute = ipr, ns: str = host.netns) -> bool:
                st = read_state(ipr, nic, ns)
                if nic.bond.mode == "active-backup":
                    return bool(st.active)
                if nic.bond.mode == "802.3ad" and nic.partners > 1:  # an aggregator per partner: the active one's
                    mine = [p for p in st.ports if p.ad_aggregator is not None and p.ad_aggregator == st.ad_aggregator]
                    return bool(mine) and all(p.present and p.collecting_distributing for p in mine)
                if nic.bond.mode == "802.3ad":
                    return all(p.present and p.collecting_distributing for p in st.ports)
                return all(p.present and p.mii == "up" for p in st.ports)

            what = f"{host.netns}: {nic.bond.name} ({nic.bond.mode}) to become usable"
            wait_until(ready, timeout, what, interval=0.05,
                       fix="check `testbed status` for the ports' carrier and LACP state")


def up(topo: Topology, *, progress: Progress = quiet) -> labstore.LabRecord:
    """Build the lab (its record stays ``building``: ``bringup`` marks it up); on any failure remove what was
    built and raise BuildError."""
    check_conflicts(topo)
    builder = Builder(topo, progress)
    try:
        rec = builder.run()
    except BaseException as exc:
        builder.close()
        from testbed.teardown import remove_lab

        try:
            remove_lab(builder.rec, progress=quiet)
        except TestbedError as cleanup_exc:
            progress(f"cleanup after failure also failed: {cleanup_exc}")
        if isinstance(exc, TestbedError):
            raise BuildError(f"lab {topo.name}: step '{builder.step}' failed: {exc.message}", fix=exc.fix) from exc
        if isinstance(exc, OSError):
            raise BuildError(f"lab {topo.name}: step '{builder.step}' failed: {exc}") from exc
        raise
    builder.close()
    return rec
