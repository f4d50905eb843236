"""The one table of bond options: user name <-> ``IFLA_BOND_*`` <-> value (after ifupdown2's ``addons/bond.py``).

Every layer that touches a bond option goes through ``OPTIONS``:

* set: ``attrs(values)`` -> pyroute2's ``link('add', kind='bond', **attrs)`` keywords for what pyroute2
  can send, ``extra(values)`` -> ``(IFLA_BOND_*, wire value)`` pairs for the rest (``bond.wire.change_bond``),
  ``port_attrs(values)`` -> ``(IFLA_BOND_SLAVE_*, wire value)`` pairs of a port (``bond.wire.change_slave``);
  all used by ``realize``;
* read back: ``decode(bond_data)`` / ``decode_port(slave_data)`` -> ``{"mode": "802.3ad", ...}``
  (``bond.state``, status);
* validate: ``file_values`` are the values a topology file may use (the loader fills the JSON schema's
  enums from them), ``modes`` the bond modes an option applies to (the loader's semantic check),
  ``kernel`` the name the kernel's bonding module knows it by (``kfeatures.bond_options``; ``up`` refuses
  an option the running kernel lacks, see ``kernel_names``);
* change at run time: ``get(ipr, ifname, name)`` / ``change(ipr, ifname, name, value)`` (verify's hash
  policy and updelay setters).

Port options (``port=True``) are the bond's per-port settings, ``IFLA_BOND_SLAVE_*`` inside the port's
``IFLA_INFO_SLAVE_DATA``; a topology file gives them under ``bond.ports.<port>``.

Numbers from ``include/uapi/linux/if_link.h``, ``include/uapi/linux/if_bonding.h`` and
``include/net/bonding.h``; the names are ``drivers/net/bonding/bond_options.c``'s.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from testbed.bond import wire
from testbed.errors import UsageError

Value = Union[str, int, bool, Tuple[str, ...]]


def _enum(*names: str) -> Mapping[str, int]:
    return MappingProxyType({n: i for i, n in enumerate(names)})


MODE = _enum("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb")
XMIT_HASH = _enum("layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4", "vlan+srcmac")
PRIMARY_RESELECT = _enum("always", "better", "failure")
LACP_RATE = _enum("slow", "fast")
ARP_VALIDATE = _enum("none", "active", "backup", "all", "filter", "filter_active", "filter_backup")
ARP_ALL_TARGETS = _enum("any", "all")
AD_SELECT = _enum("stable", "bandwidth", "count", "prio")  # prio: Linux 6.18 (kfeatures.AD_SELECT_PRIO)
FAIL_OVER_MAC = _enum("none", "active", "follow")
LAG_MODES = ("balance-xor", "802.3ad")  # the modes with a transmit hash and a switch-side partner
ARP_MODES = ("active-backup", "balance-xor")  # bond_options.c: the ARP/NS monitor is not for 802.3ad/tlb/alb
MAX_TARGETS = 16  # BOND_MAX_ARP_TARGETS, BOND_MAX_NS_TARGETS
PYROUTE2_LAST = 27  # pyroute2 0.9.7's bond table ends at IFLA_BOND_TLB_DYNAMIC_LB


@dataclass(frozen=True)
class Option:
    """One bond option: its name in a topology file and on the CLI, its netlink attribute, its values."""

    name: str
    ifla: str  # IFLA_BOND_* (IFLA_BOND_SLAVE_* for a port option)
    values: Optional[Mapping[str, int]] = None  # named values <-> kernel numbers; None: see ``kind``
    file_values: Tuple[str, ...] = ()  # the named values a topology file may use (default: all)
    modes: Tuple[str, ...] = ()  # the bond modes it applies to (empty: all)
    kind: str = "int"  # without ``values``: "int" (>= 0), "sint" (signed), "bool", "ip4" / "ip6" (address lists)
    kernel: str = ""  # bond_options.c's name, if not ``name`` (what kfeatures.bond_options reports)
    port: bool = False  # a port's option (IFLA_INFO_SLAVE_DATA)
    value_needs: Mapping[str, str] = field(default_factory=dict)  # value -> another kernel name it needs

    @property
    def keyword(self) -> str:
        """pyroute2's keyword: ``IFLA_BOND_XMIT_HASH_POLICY`` -> ``bond_xmit_hash_policy``."""
        return self.ifla.lower().replace("ifla_", "", 1)

    @property
    def kernel_name(self) -> str:
        return self.kernel or self.name

    @property
    def allowed(self) -> Tuple[str, ...]:
        return self.file_values or tuple(self.values or ())

    @property
    def via_pyroute2(self) -> bool:
        """pyroute2's ``link()`` can send it: a bond scalar its table knows."""
        num, fmt = wire.BOND.get(self.ifla, (0, ""))
        return not self.port and 0 < num <= PYROUTE2_LAST and fmt not in ("ip4", "ip6")

    def encode(self, value: Value) -> Union[int, Tuple[str, ...]]:
        """The value as the kernel takes it: a number, or a tuple of addresses."""
        if self.values is not None:
            if value not in self.values:
                raise UsageError(f"bond option {self.name}: {value!r} is not allowed",
                                 fix=f"one of: {', '.join(self.values)}")
            return self.values[str(value)]
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise UsageError(f"bond option {self.name}: {value!r} is not on/off (true/false)")
            return int(value)
        if self.kind in ("ip4", "ip6"):
            return self._addresses(value)
        if not isinstance(value, int) or isinstance(value, bool) or (value < 0 and self.kind != "sint"):
            raise UsageError(f"bond option {self.name}: {str(value)[:60]!r} is not a "
                             f"{'' if self.kind == 'sint' else 'non-negative '}integer")
        return value

    def _addresses(self, value: Any) -> Tuple[str, ...]:
        version = 4 if self.kind == "ip4" else 6
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not 0 < len(items) <= MAX_TARGETS:
            raise UsageError(f"bond option {self.name}: give 1..{MAX_TARGETS} IPv{version} addresses")
        out = []
        for item in items:
            try:
                ip = ipaddress.ip_address(item) if isinstance(item, str) else None
            except ValueError:
                ip = None
            if ip is None or ip.version != version or ip.is_multicast or ip.is_unspecified or ip.is_loopback:
                raise UsageError(f"bond option {self.name}: {str(item)[:60]!r} is not a unicast IPv{version} address")
            out.append(str(ip))
        return tuple(out)

    def decode(self, number: Any) -> Optional[Value]:
        if number is None:
            return None
        if self.values is not None:
            return next((k for k, v in self.values.items() if v == number), number)
        if self.kind == "bool":
            return bool(number)
        return number

    def not_for(self, mode: str) -> str:
        """The loader's message for an option used with a mode it does not apply to."""
        if len(self.modes) == 1:
            return f"only applies to mode {self.modes[0]} (mode is {mode})"
        return f"does not apply to {mode}; use {' or '.join(self.modes)}"


_AD = ("802.3ad",)
_AB = ("active-backup",)
OPTIONS: Tuple[Option, ...] = (
    Option("mode", "IFLA_BOND_MODE", MODE, file_values=("active-backup", "balance-xor", "802.3ad")),
    Option("miimon", "IFLA_BOND_MIIMON"),
    Option("updelay", "IFLA_BOND_UPDELAY"),
    Option("downdelay", "IFLA_BOND_DOWNDELAY"),
    Option("primary", "IFLA_BOND_PRIMARY", modes=_AB),  # a port: set by ifindex (realize)
    Option("primary_reselect", "IFLA_BOND_PRIMARY_RESELECT", PRIMARY_RESELECT, modes=_AB),
    Option("xmit_hash_policy", "IFLA_BOND_XMIT_HASH_POLICY", XMIT_HASH,
           file_values=("layer2", "layer2+3", "layer3+4", "encap2+3", "encap3+4"), modes=LAG_MODES),
    Option("lacp_rate", "IFLA_BOND_AD_LACP_RATE", LACP_RATE, modes=_AD),
    Option("min_links", "IFLA_BOND_MIN_LINKS", modes=_AD),
    Option("arp_interval", "IFLA_BOND_ARP_INTERVAL", modes=ARP_MODES),
    Option("arp_ip_target", "IFLA_BOND_ARP_IP_TARGET", kind="ip4", modes=ARP_MODES),
    Option("arp_validate", "IFLA_BOND_ARP_VALIDATE", ARP_VALIDATE, modes=ARP_MODES),
    Option("arp_all_targets", "IFLA_BOND_ARP_ALL_TARGETS", ARP_ALL_TARGETS, modes=ARP_MODES),
    Option("ns_ip6_target", "IFLA_BOND_NS_IP6_TARGET", kind="ip6", modes=ARP_MODES),
    Option("ad_select", "IFLA_BOND_AD_SELECT", AD_SELECT, modes=_AD, value_needs={"prio": "ad_select prio"}),
    Option("lacp_active", "IFLA_BOND_AD_LACP_ACTIVE", kind="bool", modes=_AD),
    Option("lacp_strict", "IFLA_BOND_LACP_STRICT", kind="bool", modes=_AD),
    Option("coupled_control", "IFLA_BOND_COUPLED_CONTROL", kind="bool", modes=_AD),
    Option("num_grat_arp", "IFLA_BOND_NUM_PEER_NOTIF"),  # num_unsol_na is the same attribute
    Option("num_unsol_na", "IFLA_BOND_NUM_PEER_NOTIF"),
    Option("peer_notify_delay", "IFLA_BOND_PEER_NOTIF_DELAY", kernel="peer_notif_delay"),
    Option("all_slaves_active", "IFLA_BOND_ALL_SLAVES_ACTIVE", kind="bool"),
    Option("fail_over_mac", "IFLA_BOND_FAIL_OVER_MAC", FAIL_OVER_MAC, modes=_AB),
    Option("prio", "IFLA_BOND_SLAVE_PRIO", kind="sint", modes=_AB, port=True),
    Option("ad_actor_port_prio", "IFLA_BOND_SLAVE_ACTOR_PORT_PRIO", modes=_AD, port=True, kernel="actor_port_prio"),
)
BY_NAME: Mapping[str, Option] = MappingProxyType({o.name: o for o in OPTIONS})
BOND_OPTIONS: Tuple[Option, ...] = tuple(o for o in OPTIONS if not o.port)
PORT_OPTIONS: Tuple[Option, ...] = tuple(o for o in OPTIONS if o.port)
FILE_MODES = BY_NAME["mode"].allowed  # the bond modes a lab builds


def option(name: str) -> Option:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown bond option {name!r}", fix=f"one of: {', '.join(BY_NAME)}") from None


def _given(values: Mapping[str, Optional[Value]]) -> Iterable[Tuple[Option, Value]]:
    """The options with a value, ``primary`` left out (an interface: realize sets it by index once enslaved)."""
    return ((option(k), v) for k, v in values.items() if v is not None and k != "primary")


def attrs(values: Mapping[str, Optional[Value]]) -> Dict[str, int]:
    """``{"mode": "802.3ad", "miimon": 100, "primary": None}`` -> pyroute2 keywords of what pyroute2 can send."""
    return {o.keyword: o.encode(v) for o, v in _given(values) if o.via_pyroute2}  # type: ignore[misc]


def extra(values: Mapping[str, Optional[Value]]) -> List[Tuple[str, Any]]:
    """The bond options pyroute2 cannot send, as ``(IFLA_BOND_*, wire value)`` for ``wire.change_bond``."""
    return [(o.ifla, o.encode(v)) for o, v in _given(values) if not o.port and not o.via_pyroute2]


def port_attrs(values: Mapping[str, Optional[Value]]) -> List[Tuple[str, Any]]:
    """A port's options as ``(IFLA_BOND_SLAVE_*, wire value)`` for ``wire.change_slave``."""
    return [(o.ifla, o.encode(v)) for o, v in _given(values) if o.port]


def kernel_names(values: Mapping[str, Optional[Value]]) -> Dict[str, str]:
    """user name -> the kernel option name it needs, for every option given (and a value needing another)."""
    out = {}
    for o, v in _given(values):
        out[o.name] = o.kernel_name
        if isinstance(v, str) and v in o.value_needs:
            out[f"{o.name} {v}"] = o.value_needs[v]
    return out


def decode(bond_data: Mapping[str, Any]) -> Dict[str, Optional[Value]]:
    """A bond's ``IFLA_INFO_DATA`` as ``wire.decode_bond`` returns it -> every bond option by its user name."""
    return {o.name: o.decode(bond_data.get(o.ifla)) for o in BOND_OPTIONS}


def decode_port(slave_data: Mapping[str, Any]) -> Dict[str, Optional[Value]]:
    """A port's ``IFLA_INFO_SLAVE_DATA`` (``wire.decode``'d) -> its port options by user name (None: not sent)."""
    return {o.name: o.decode(slave_data.get(o.ifla)) for o in PORT_OPTIONS}


def schema_enums(schema: Dict[str, Any]) -> Dict[str, Any]:
    """The topology JSON schema with the bond's enums set from the table (the loader validates with it)."""
    props = schema["$defs"]["bond"]["properties"]
    for o in BOND_OPTIONS:
        if o.values is not None and o.name in props:
            props[o.name] = {**props[o.name], "enum": list(o.allowed)}
    return schema


def _info_data(ipr: Any, ifname: str, where: str) -> Dict[str, Any]:
    from testbed.nl import ifindex  # netlink only here: the table itself is plain data (the loader imports it)

    link = ipr.get_links(ifindex(ipr, ifname, where))[0]
    return wire.decode_bond(link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA"))


def get(ipr: Any, ifname: str, name: str, where: str = "") -> Optional[Value]:
    """One option of bond ``ifname`` as the kernel holds it now, by user name."""
    opt = option(name)
    return opt.decode(_info_data(ipr, ifname, where).get(opt.ifla))


def change(ipr: Any, ifname: str, name: str, value: Value, where: str = "") -> Optional[Value]:
    """Change one option of a running bond; returns the previous value (nothing sent if unchanged)."""
    from testbed.nl import ifindex, netlink_op

    opt = option(name)
    number = opt.encode(value)
    old = get(ipr, ifname, name, where)
    if old != value:
        with netlink_op(f"{where + ': ' if where else ''}{ifname}: {name} {value}"):
            ipr.link("set", index=ifindex(ipr, ifname, where), kind="bond", **{opt.keyword: number})
    return old
