"""``testbed status``: what the kernel holds for a lab, read back over netlink (not what the file asked for)."""

from __future__ import annotations

from typing import Any, Dict, List

from testbed import ifread, labstore, naming, rdma
from testbed.agent import status as agent_status
from testbed.bond import wire as bondnl
from testbed.bond.ports import usable_ports
from testbed.bond.state import read_state
from testbed.nl import route_socket
from testbed.topology import Host, Nic, Topology

FUNCTION_KEYS = ("present", "mac", "operstate", "addresses")  # what `status` tells of a function's netdev


def read_bond(ipr: Any, nic: Nic) -> Dict[str, Any]:
    """Mode, active port, options and per-port state of a NIC's bond, as the bonding driver reports it;
    in 802.3ad the bond's active aggregator and each port's aggregator and actor/partner oper state
    (bit names); ``usable_ports``: the ports the bond transmits on by the drivers' rule (``bond.ports``)."""
    st = read_state(ipr, nic)
    out: Dict[str, Any] = {"name": st.bond, "present": st.present, "ports": []}
    if not st.present:
        return out
    out.update(mode=st.mode, active_port=st.active, admin_up=st.admin_up, options=dict(st.options),
               usable_ports=list(usable_ports(nic, st)))
    if st.mode == "802.3ad":
        out["ad_aggregator"] = st.ad_aggregator  # the bond's active aggregator (IFLA_BOND_AD_INFO)
    for p in st.ports:
        entry: Dict[str, Any] = {"name": p.name, "present": p.present}
        if p.present:
            entry.update(carrier=p.carrier, operstate=p.operstate, enslaved=p.enslaved,
                         bond_state=p.slave_state, mii_status=p.mii, options=dict(p.options))
            if st.mode == "802.3ad":
                entry.update(aggregator=p.ad_aggregator, lacp_actor=bondnl.ad_state_names(p.ad_actor),
                             lacp_partner=bondnl.ad_state_names(p.ad_partner))
        out["ports"].append(entry)
    return out


def _rules(ipr: Any, nic: Nic) -> List[Dict[str, Any]]:
    """Every rule on the NIC's devices and in its shared blocks, with counters (``where``: ``pf0 egress``,
    ``block 1 chain 1``)."""
    try:
        from testbed.tc import canonical, ops
    except ImportError:  # the tc layer is not installed in this tree
        return []
    out = []
    for inst in ops.dump(ipr, list(nic.ports) + [fn.rep for fn in nic.functions], naming.ESWITCH_BLOCKS):
        r = inst.rule
        where = canonical.place(r) + (f" chain {r.chain}" if r.chain else "")
        out.append({"dev": r.dev, "hook": r.hook, "block": r.block, "chain": r.chain, "where": where,
                    "prio": r.prio, "handle": r.handle, "label": r.label, "packets": inst.packets,
                    "bytes": inst.bytes})
    return out


def host_status(topo: Topology, host: Host) -> Dict[str, Any]:
    out: Dict[str, Any] = {"name": host.name, "netns": host.netns}
    if host.nic is None:
        found = ifread.iface(host.netns, naming.HOST_IF)
        out["interface"] = {k: v for k, v in found.items() if k == "name" or k in FUNCTION_KEYS}
        return out
    nic = host.nic
    with route_socket(host.netns) as ipr:  # raw rtnetlink: no pyroute2 on status's path (its import: 3.7x)
        out["bond"] = read_bond(ipr, nic)
        out["bond"]["address"] = str(nic.address)
        if nic.address6 is not None:
            out["bond"]["address6"] = str(nic.address6)
        out["offload"] = {"mode": nic.offload.mode, "buckets": nic.offload.buckets}
        out["rules"] = _rules(ipr, nic)
    fns = []
    for fn in nic.functions:  # a raw socket per namespace, no helper process: 257 of them at 256 VFs
        entry = {"kind": fn.kind, "name": fn.name, "netns": fn.netns, "representor": fn.rep}
        entry.update({k: v for k, v in ifread.iface(fn.netns, fn.name).items() if k in FUNCTION_KEYS})
        fns.append(entry)
    out["vfs"] = [f for f in fns if f["kind"] == "vf"]
    rdma = [f for f in fns if f["kind"] == "rdma"]
    out["rdma"] = rdma[0] if rdma else None
    return out


def lab_status(lab: str) -> Dict[str, Any]:
    rec = labstore.read(lab)
    topo = rec.model()
    out = {"lab": lab, "file": rec.file, "state": rec.state, "netns": rec.netns,
           "hosts": [host_status(topo, h) for h in topo.hosts], "agent": agent_status.read_raw(lab),
           "verbs": rdma.status(topo)}
    mark_in_step(out)
    return out


def mark_in_step(status: Dict[str, Any]) -> None:
    """Each NIC host's ``offload_in_step``: the ports the agent programs (``agent.json``) are the ports the bond
    uses now (``bond.usable_ports``); None without an agent's entry for the host."""
    nics = (status.get("agent") or {}).get("nics") or {}
    for h in status["hosts"]:
        if "bond" in h:
            entry = nics.get(h["name"])
            h["offload_in_step"] = (None if entry is None
                                    else list(entry.get("usable") or []) == list(h["bond"].get("usable_ports") or []))
