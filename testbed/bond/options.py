"""The one table of bond options: user name <-> ``IFLA_BOND_*`` <-> value (after ifupdown2's ``addons/bond.py``).

Every layer that touches a bond option goes through ``OPTIONS``:

* set: ``attrs(bond)`` -> pyroute2's ``link('add', kind='bond', **attrs)`` keywords (``realize``);
* read back: ``decode(info_data)`` -> ``{"mode": "802.3ad", "miimon": 100, ...}`` (``bond.state``, status);
* validate: ``file_values`` are the values a topology file may use (the loader fills the JSON schema's
  enums from them) and ``modes`` the bond modes an option applies to (the loader's semantic check);
* change at run time: ``get(ipr, ifname, name)`` / ``change(ipr, ifname, name, value)`` (verify's hash
  policy and updelay setters).

Numbers from ``include/uapi/linux/if_link.h`` and ``include/net/bonding.h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from testbed.errors import UsageError

Value = Union[str, int]


def _enum(*names: str) -> Mapping[str, int]:
    return MappingProxyType({n: i for i, n in enumerate(names)})


MODE = _enum("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb")
XMIT_HASH = _enum("layer2", "layer3+4", "layer2+3", "encap2+3", "encap3+4", "vlan+srcmac")
PRIMARY_RESELECT = _enum("always", "better", "failure")
LACP_RATE = _enum("slow", "fast")
LAG_MODES = ("balance-xor", "802.3ad")  # the modes with a transmit hash and a switch-side partner


@dataclass(frozen=True)
class Option:
    """One bond option: its name in a topology file and on the CLI, its netlink attribute, its values."""

    name: str
    ifla: str  # IFLA_BOND_*
    values: Optional[Mapping[str, int]] = None  # named values <-> kernel numbers; None: an integer as is
    file_values: Tuple[str, ...] = ()  # the named values a topology file may use (default: all)
    modes: Tuple[str, ...] = ()  # the bond modes it applies to (empty: all)

    @property
    def keyword(self) -> str:
        """pyroute2's keyword: ``IFLA_BOND_XMIT_HASH_POLICY`` -> ``bond_xmit_hash_policy``."""
        return self.ifla.lower().replace("ifla_", "", 1)

    @property
    def allowed(self) -> Tuple[str, ...]:
        return self.file_values or tuple(self.values or ())

    def encode(self, value: Value) -> int:
        if self.values is None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UsageError(f"bond option {self.name}: {value!r} is not a non-negative integer")
            return value
        if value not in self.values:
            raise UsageError(f"bond option {self.name}: {value!r} is not allowed",
                             fix=f"one of: {', '.join(self.values)}")
        return self.values[str(value)]

    def decode(self, number: Optional[int]) -> Optional[Value]:
        if number is None or self.values is None:
            return number
        return next((k for k, v in self.values.items() if v == number), number)

    def not_for(self, mode: str) -> str:
        """The loader's message for an option used with a mode it does not apply to."""
        if len(self.modes) == 1:
            return f"only applies to mode {self.modes[0]} (mode is {mode})"
        return f"does not apply to {mode}; use {' or '.join(self.modes)}"


OPTIONS: Tuple[Option, ...] = (
    Option("mode", "IFLA_BOND_MODE", MODE, file_values=("active-backup", "balance-xor", "802.3ad")),
    Option("miimon", "IFLA_BOND_MIIMON"),
    Option("updelay", "IFLA_BOND_UPDELAY"),
    Option("downdelay", "IFLA_BOND_DOWNDELAY"),
    Option("primary", "IFLA_BOND_PRIMARY", modes=("active-backup",)),  # a port: set by ifindex (realize)
    Option("primary_reselect", "IFLA_BOND_PRIMARY_RESELECT", PRIMARY_RESELECT, modes=("active-backup",)),
    Option("xmit_hash_policy", "IFLA_BOND_XMIT_HASH_POLICY", XMIT_HASH,
           file_values=("layer2", "layer2+3", "layer3+4", "encap2+3", "encap3+4"), modes=LAG_MODES),
    Option("lacp_rate", "IFLA_BOND_AD_LACP_RATE", LACP_RATE, modes=("802.3ad",)),
    Option("min_links", "IFLA_BOND_MIN_LINKS", modes=("802.3ad",)),
)
BY_NAME: Mapping[str, Option] = MappingProxyType({o.name: o for o in OPTIONS})
FILE_MODES = BY_NAME["mode"].allowed  # the bond modes a lab builds


def option(name: str) -> Option:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown bond option {name!r}", fix=f"one of: {', '.join(BY_NAME)}") from None


def attrs(values: Mapping[str, Optional[Value]]) -> Dict[str, int]:
    """``{"mode": "802.3ad", "miimon": 100, "primary": None}`` -> pyroute2 keywords; None and ``primary``
    (an interface, set by index once it exists) are left out."""
    return {option(k).keyword: option(k).encode(v) for k, v in values.items() if v is not None and k != "primary"}


def decode(info_data: Any) -> Dict[str, Optional[Value]]:
    """A bond's ``IFLA_INFO_DATA`` (pyroute2 nla) -> every option of the table by its user name."""
    return {o.name: o.decode(info_data.get_attr(o.ifla)) for o in OPTIONS}


def schema_enums(schema: Dict[str, Any]) -> Dict[str, Any]:
    """The topology JSON schema with the bond's enums set from the table (the loader validates with it)."""
    props = schema["$defs"]["bond"]["properties"]
    for o in OPTIONS:
        if o.values is not None and o.name in props:
            props[o.name] = {**props[o.name], "enum": list(o.allowed)}
    return schema


def _info_data(ipr: Any, ifname: str, where: str) -> Any:
    from testbed.nl import ifindex  # netlink only here: the table itself is plain data (the loader imports it)

    link = ipr.get_links(ifindex(ipr, ifname, where))[0]
    return link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")


def get(ipr: Any, ifname: str, name: str, where: str = "") -> Optional[Value]:
    """One option of bond ``ifname`` as the kernel holds it now, by user name."""
    opt = option(name)
    return opt.decode(_info_data(ipr, ifname, where).get_attr(opt.ifla))


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
