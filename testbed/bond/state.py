"""The bond's view of its ports, read over netlink in the NIC's namespace: a frozen ``BondState``.

The agent never guesses what the bond will do; it reads what the bonding
driver reports and follows it:

* ``IFLA_BOND_MODE``, ``IFLA_BOND_ACTIVE_SLAVE`` (ifindex; only sent when the
  bond has an active port) and the active 802.3ad aggregator from the bond's
  ``IFLA_INFO_DATA``;
* per port: ``IFLA_CARRIER``, ``IFLA_OPERSTATE``, ``IFLA_MASTER`` and the
  bond's per-port record ``IFLA_INFO_SLAVE_DATA``: slave state
  (active/backup), MII status (up/fail/down/back) and the 802.3ad actor and
  partner operational port state, the port's aggregator id and its own
  options (``prio``, ``ad_actor_port_prio``) (see ``bond.wire``; pyroute2
  0.9.7 stops short of those).

``parse_links()`` is pure (pyroute2 messages in, ``BondState`` out) so unit
tests feed it messages built from bytes; ``read_state()`` does the one
RTM_GETLINK dump.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, Optional, Tuple

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from testbed import nlpipe, rawnl
from testbed.bond import options, wire
from testbed.errors import NetlinkOpError
from testbed.topology import Nic

IFF_UP = 0x1


@dataclass(frozen=True)
class PortState:
    """One physical port as the kernel and the bond see it."""

    name: str
    present: bool = True
    admin_up: bool = True
    carrier: bool = True
    operstate: str = "UP"
    enslaved: bool = True  # IFLA_MASTER is this NIC's bond
    slave_state: Optional[str] = None  # "active" / "backup" (bond's view)
    mii: Optional[str] = None  # "up" / "fail" / "down" / "back"
    ad_actor: Optional[int] = None  # 802.3ad actor oper port state bits
    ad_partner: Optional[int] = None
    ad_aggregator: Optional[int] = None
    link_failures: Optional[int] = None
    options: Tuple[Tuple[str, Any], ...] = ()  # the port's own bond options the kernel reports (prio, ...)

    @property
    def collecting_distributing(self) -> bool:
        bits = wire.AD_COLLECTING | wire.AD_DISTRIBUTING
        return self.ad_actor is not None and self.ad_actor & bits == bits

    @property
    def distributing(self) -> bool:
        """The 802.3ad actor transmits on this port (``tx_enabled`` in the active aggregator)."""
        return self.ad_actor is not None and bool(self.ad_actor & wire.AD_DISTRIBUTING)

    @property
    def collecting(self) -> bool:
        return self.ad_actor is not None and bool(self.ad_actor & wire.AD_COLLECTING)

    def describe(self) -> str:
        """``pf0 carrier=up bond=active mii=up lacp=collecting,distributing``."""
        if not self.present:
            return f"{self.name} missing"
        parts = [self.name, f"carrier={'up' if self.carrier else 'down'}"]
        if not self.admin_up:
            parts.append("admin=down")
        if not self.enslaved:
            parts.append("not-enslaved")
        if self.slave_state:
            parts.append(f"bond={self.slave_state}")
        if self.mii:
            parts.append(f"mii={self.mii}")
        if self.ad_actor is not None:
            parts.append("lacp=" + (",".join(n for n in wire.ad_state_names(self.ad_actor)
                                             if n in ("collecting", "distributing")) or "-"))
        if self.ad_aggregator is not None:
            parts.append(f"agg={self.ad_aggregator}")
        return " ".join(parts)


@dataclass(frozen=True)
class BondState:
    """Everything the rule computation needs to know about one NIC, at one instant."""

    bond: str
    present: bool = True
    admin_up: bool = True
    mode: Optional[str] = None  # as the kernel reports it: "active-backup", "balance-xor", "802.3ad", ...
    active: Optional[str] = None  # the bond's active port (active-backup), by name
    ad_aggregator: Optional[int] = None  # the bond's active 802.3ad aggregator id
    ports: Tuple[PortState, ...] = ()
    # every interface present in the namespace; None: not known (tests), assume all present
    devices: Optional[FrozenSet[str]] = None
    options: Tuple[Tuple[str, Any], ...] = ()  # the bond's options as the kernel reports them (bond.options)

    def port(self, name: str) -> PortState:
        for p in self.ports:
            if p.name == name:
                return p
        return PortState(name=name, present=False, admin_up=False, carrier=False, operstate="ABSENT",
                         enslaved=False)

    def describe(self) -> str:
        if not self.present:
            return f"{self.bond} missing"
        head = f"{self.bond} {self.mode or '?'}" + ("" if self.admin_up else " admin=down")
        if self.mode == "active-backup":
            head += f" active={self.active or '-'}"
        if self.mode == "802.3ad":
            head += f" agg={self.ad_aggregator if self.ad_aggregator is not None else '-'}"
        return "; ".join([head] + [p.describe() for p in self.ports])


def _linkinfo(link: Any) -> Any:
    return link.get_attr("IFLA_LINKINFO")


def parse_links(links: Iterable[Any], nic: Nic, devices: Optional[Iterable[str]] = None) -> BondState:
    """Build the BondState of ``nic`` from RTM_NEWLINK messages of its namespace.

    ``links`` must hold at least the bond and its ports; ``devices`` names every
    interface present (default: the names in ``links``).
    """
    links = list(links)
    by_index = {ln["index"]: ln.get_attr("IFLA_IFNAME") for ln in links}
    by_name = {ln.get_attr("IFLA_IFNAME"): ln for ln in links}
    present = frozenset(devices) if devices is not None else frozenset(n for n in by_name if n)
    bond_name = nic.bond.name
    bond = by_name.get(bond_name)
    ports = []
    bond_index = bond["index"] if bond is not None else None
    for name in nic.ports:
        ln = by_name.get(name)
        if ln is None:
            ports.append(BondState(bond_name).port(name))
            continue
        info = _linkinfo(ln)
        sd: Dict[str, Any] = {}
        if info is not None and info.get_attr("IFLA_INFO_SLAVE_KIND") == "bond":
            sd = wire.decode_slave(info.get_attr("IFLA_INFO_SLAVE_DATA"))
        enslaved = bond_index is not None and ln.get_attr("IFLA_MASTER") == bond_index
        sd = sd if enslaved else {}
        ports.append(PortState(
            name=name,
            present=True,
            admin_up=bool(ln["flags"] & IFF_UP),
            carrier=bool(ln.get_attr("IFLA_CARRIER")),
            operstate=str(ln.get_attr("IFLA_OPERSTATE") or "UNKNOWN"),
            enslaved=enslaved,
            slave_state=wire.SLAVE_STATE.get(sd.get("IFLA_BOND_SLAVE_STATE")),  # type: ignore[arg-type]
            mii=wire.MII_STATUS.get(sd.get("IFLA_BOND_SLAVE_MII_STATUS")),  # type: ignore[arg-type]
            ad_actor=sd.get("IFLA_BOND_SLAVE_AD_ACTOR_OPER_PORT_STATE"),
            ad_partner=sd.get("IFLA_BOND_SLAVE_AD_PARTNER_OPER_PORT_STATE"),
            ad_aggregator=sd.get("IFLA_BOND_SLAVE_AD_AGGREGATOR_ID"),
            link_failures=sd.get("IFLA_BOND_SLAVE_LINK_FAILURE_COUNT"),
            options=tuple((k, v) for k, v in options.decode_port(sd).items() if v is not None),
        ))
    if bond is None:
        return BondState(bond=bond_name, present=False, admin_up=False, ports=tuple(ports), devices=present)
    info = _linkinfo(bond)
    raw = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    mode = active = aggregator = None
    opts: Tuple[Tuple[str, Any], ...] = ()
    if raw is not None and info.get_attr("IFLA_INFO_KIND") == "bond":
        data = wire.decode_bond(raw)
        opts = tuple(options.decode(data).items())
        mode = dict(opts).get("mode")
        mode = mode if isinstance(mode, str) else None
        active = by_index.get(data.get("IFLA_BOND_ACTIVE_SLAVE"))  # a port of ours, or None
        ad_info = data.get("IFLA_BOND_AD_INFO")
        if isinstance(ad_info, dict):
            aggregator = ad_info.get("IFLA_BOND_AD_INFO_AGGREGATOR")
    return BondState(bond=bond_name, present=True, admin_up=bool(bond["flags"] & IFF_UP), mode=mode,
                     active=active, ad_aggregator=aggregator, ports=tuple(ports), devices=present, options=opts)


# --- reading it --------------------------------------------------------------------


def read_state(ipr: Any, nic: Nic, netns: str = "") -> BondState:
    """One RTM_GETLINK dump of the NIC's namespace (no stats); only the bond and its ports are decoded.

    The dump is raw (``testbed.nlpipe``) and only the messages of interest go
    through pyroute2's decoder: with 64 representors in the namespace the
    full pyroute2 path costs ~20x more under TCG, on the failover path.
    """
    try:
        raw = nlpipe.dump(ipr, rawnl.RTM_GETLINK, rawnl.link_dump_body(), f"{netns or 'netns'}: links")
    except NetlinkError as exc:
        raise NetlinkOpError(f"{netns or 'netns'}: cannot dump links: {errno.errorcode.get(exc.code, exc.code)}",
                             errno=exc.code) from None
    return parse_raw(raw, nic)


def parse_raw(raw: Iterable[bytes], nic: Nic) -> BondState:
    """``parse_links`` from raw RTM_NEWLINK messages; only the bond's and its ports' are fully decoded."""
    wanted = set(nic.ports) | {nic.bond.name}
    devices = []
    links = []
    for msg in raw:
        name = rawnl.link_name(msg)
        if name is None:
            continue
        devices.append(name)
        if name in wanted:
            m = ifinfmsg(msg)
            m.decode()
            links.append(m)
    return parse_links(links, nic, devices)
