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

``link_of()`` decodes one raw RTM_NEWLINK (a dump's or an event's) and
``state_of()`` builds the ``BondState`` from those records; both are pure so
unit tests feed them messages built from bytes. ``read_links()`` does the
one RTM_GETLINK dump (``read_state()``: just its state).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Dict, FrozenSet, Iterable, Mapping, Optional, Tuple

from testbed import nlpipe, rawnl
from testbed.bond import options, wire
from testbed.topology import Nic

IFF_UP = 0x1
_U32 = struct.Struct("=I")


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


@dataclass(frozen=True)
class Link:
    """The attributes of one RTM_NEWLINK that a ``BondState`` is built from, decoded from its raw bytes.

    A link dump's messages and the link *events* the agent hears are the same
    messages (``rtnl_fill_ifinfo``: full attributes, the bond's and its
    ports' ``IFLA_LINKINFO`` included), so both go through this one decoder.
    """

    name: str
    index: int
    flags: int = IFF_UP
    carrier: bool = False
    operstate: str = "UNKNOWN"
    master: Optional[int] = None
    kind: Optional[str] = None  # IFLA_INFO_KIND ("bond", "veth", ...)
    data: Optional[bytes] = None  # IFLA_INFO_DATA payload
    slave_kind: Optional[str] = None  # IFLA_INFO_SLAVE_KIND ("bond": a bond's port)
    slave_data: Optional[bytes] = None  # IFLA_INFO_SLAVE_DATA payload


def _text(payload: memoryview) -> str:
    return bytes(payload).split(b"\0", 1)[0].decode(errors="replace")


def link_of(msg: bytes) -> Optional[Link]:
    """Decode a raw RTM_NEWLINK (header included); None when it has no name (pure; cheap under TCG)."""
    _family, _type, index, flags, _change = rawnl.IFINFO.unpack_from(msg, rawnl.HDR.size)
    name: Optional[str] = None
    carrier = False
    operstate = "UNKNOWN"
    master: Optional[int] = None
    nested: Dict[int, Any] = {}
    for kind, payload in rawnl.attrs(msg, rawnl.HDR.size + rawnl.IFINFO.size):
        if kind == rawnl.IFLA_IFNAME:
            name = _text(payload)
        elif kind == rawnl.IFLA_CARRIER and len(payload) >= 1:
            carrier = bool(payload[0])
        elif kind == rawnl.IFLA_OPERSTATE and len(payload) >= 1:
            operstate = rawnl.operstate(payload[0])
        elif kind == rawnl.IFLA_MASTER and len(payload) >= 4:
            master = _U32.unpack_from(payload)[0]
        elif kind == rawnl.IFLA_LINKINFO:
            nested = {k: v for k, v in rawnl.attrs(bytes(payload), 0)}
    if name is None:
        return None

    def text(k: int) -> Optional[str]:
        return _text(nested[k]) if k in nested else None

    def raw(k: int) -> Optional[bytes]:
        return bytes(nested[k]) if k in nested else None

    return Link(name=name, index=index, flags=flags, carrier=carrier, operstate=operstate, master=master,
                kind=text(wire.IFLA_INFO_KIND), data=raw(wire.IFLA_INFO_DATA),
                slave_kind=text(wire.IFLA_INFO_SLAVE_KIND), slave_data=raw(wire.IFLA_INFO_SLAVE_DATA))


@functools.lru_cache(maxsize=256)
def _port(name: str, ln: Optional[Link], bond_index: Optional[int], bond_name: str) -> PortState:
    """A port's state from its link (cached: the agent rebuilds the state on every event, and most of
    its links did not change)."""
    if ln is None:
        return BondState(bond_name).port(name)
    enslaved = bond_index is not None and ln.master == bond_index
    sd: Dict[str, Any] = {}
    if enslaved and ln.slave_kind == "bond" and ln.slave_data is not None:
        sd = wire.decode(ln.slave_data, wire.SLAVE)
    return PortState(
        name=name,
        present=True,
        admin_up=bool(ln.flags & IFF_UP),
        carrier=ln.carrier,
        operstate=ln.operstate,
        enslaved=enslaved,
        slave_state=wire.SLAVE_STATE.get(sd.get("IFLA_BOND_SLAVE_STATE")),  # type: ignore[arg-type]
        mii=wire.MII_STATUS.get(sd.get("IFLA_BOND_SLAVE_MII_STATUS")),  # type: ignore[arg-type]
        ad_actor=sd.get("IFLA_BOND_SLAVE_AD_ACTOR_OPER_PORT_STATE"),
        ad_partner=sd.get("IFLA_BOND_SLAVE_AD_PARTNER_OPER_PORT_STATE"),
        ad_aggregator=sd.get("IFLA_BOND_SLAVE_AD_AGGREGATOR_ID"),
        link_failures=sd.get("IFLA_BOND_SLAVE_LINK_FAILURE_COUNT"),
        options=tuple((k, v) for k, v in options.decode_port(sd).items() if v is not None),
    )


@functools.lru_cache(maxsize=64)
def _bond_data(raw: Optional[bytes]) -> Tuple[Optional[str], Optional[int], Optional[int], Tuple[Tuple[str, Any], ...]]:
    """(mode, active port's ifindex, active 802.3ad aggregator, options) of a bond's IFLA_INFO_DATA (cached)."""
    if raw is None:
        return None, None, None, ()
    data = wire.decode(raw, wire.BOND)
    opts = tuple(options.decode(data).items())
    mode = dict(opts).get("mode")
    ad_info = data.get("IFLA_BOND_AD_INFO")
    aggregator = ad_info.get("IFLA_BOND_AD_INFO_AGGREGATOR") if isinstance(ad_info, dict) else None
    active = data.get("IFLA_BOND_ACTIVE_SLAVE")
    return (mode if isinstance(mode, str) else None, active if isinstance(active, int) else None,
            aggregator if isinstance(aggregator, int) else None, opts)


def state_of(links: Iterable[Link], nic: Nic, devices: Iterable[str]) -> BondState:
    """Build the BondState of ``nic`` from its links (at least the bond and its ports; others are ignored);
    ``devices`` names every interface present."""
    by_name = {ln.name: ln for ln in links}
    by_index = {ln.index: ln.name for ln in by_name.values()}
    present = frozenset(devices)
    bond_name = nic.bond.name
    bond = by_name.get(bond_name)
    bond_index = bond.index if bond is not None else None
    ports = tuple(_port(name, by_name.get(name), bond_index, bond_name) for name in nic.ports)
    if bond is None:
        return BondState(bond=bond_name, present=False, admin_up=False, ports=ports, devices=present)
    mode, active_index, aggregator, opts = _bond_data(bond.data) if bond.kind == "bond" else (None, None, None, ())
    active = by_index.get(active_index) if active_index is not None else None  # a port, or None
    return BondState(bond=bond_name, present=True, admin_up=bool(bond.flags & IFF_UP), mode=mode,
                     active=active, ad_aggregator=aggregator, ports=ports, devices=present, options=opts)


def parse_links(links: Iterable[Any], nic: Nic, devices: Optional[Iterable[str]] = None) -> BondState:
    """``state_of`` for RTM_NEWLINK messages pyroute2 has parsed (it keeps each message's bytes).

    ``devices`` names every interface present (default: the names in ``links``).
    """
    decoded = [ln for m in links if (ln := link_of(bytes(m.data[m.offset:m.offset + m["header"]["length"]])))]
    return state_of(decoded, nic, devices if devices is not None else [ln.name for ln in decoded])


# --- reading it --------------------------------------------------------------------


@dataclass(frozen=True)
class LinkTable:
    """One reading of a NIC's namespace: the bond state, the decoded links of the bond and its ports (the
    agent overlays link events on them) and every interface's ifindex (to encode rules without a dump)."""

    state: BondState
    links: Mapping[str, Link]  # the bond and its ports, by name
    index: Mapping[str, int]  # every interface present: name -> ifindex


def table_of(raw: Iterable[bytes], nic: Nic) -> LinkTable:
    """A ``LinkTable`` from a raw link dump; only the bond's and its ports' messages are decoded."""
    wanted = set(nic.ports) | {nic.bond.name}
    index: Dict[str, int] = {}
    links: Dict[str, Link] = {}
    for msg in raw:
        name = rawnl.link_name(msg)
        if name is None:
            continue
        index[name] = rawnl.link_index(msg)
        if name in wanted:
            ln = link_of(msg)
            if ln is not None:
                links[name] = ln
    return LinkTable(state=state_of(links.values(), nic, index), links=MappingProxyType(links),
                     index=MappingProxyType(index))


def read_links(ipr: Any, nic: Nic, netns: str = "") -> LinkTable:
    """One RTM_GETLINK dump of the NIC's namespace (no stats) as a ``LinkTable``.

    The dump is raw (``testbed.nlpipe``) and only the bond's and its ports'
    messages are decoded: with 256 representors in the namespace anything
    more costs tens of ms under TCG, on the failover path.
    """
    return table_of(nlpipe.dump(ipr, rawnl.RTM_GETLINK, rawnl.link_dump_body(), f"{netns or 'netns'}: links"), nic)


def read_state(ipr: Any, nic: Nic, netns: str = "") -> BondState:
    """The bond state of ``nic`` now: one link dump (``read_links``)."""
    return read_links(ipr, nic, netns).state


def parse_raw(raw: Iterable[bytes], nic: Nic) -> BondState:
    """``state_of`` a raw link dump (``table_of``)."""
    return table_of(raw, nic).state
