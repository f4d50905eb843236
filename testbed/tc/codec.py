"""Rule <-> flower netlink message (pure: no socket, no kernel).

``encode()`` turns a Rule into an RTM_NEWTFILTER payload built on flower.py's
classes; ``decode()`` turns a dumped filter back into an InstalledRule;
``canonical()`` is the form both sides are compared in (``decode()`` returns
it), because the kernel fills in defaults: a MAC without a mask comes back
with mask ff:ff:ff:ff:ff:ff, a hash without a mask with 0xffffffff.

Wire decisions, checked against the 6.1 and 6.12 kernels (tests/integration):

* The filter's protocol is ETH_P_ALL and ``Match.eth_type`` goes into
  TCA_FLOWER_KEY_ETH_TYPE, so one prio can hold rules of any ethertype.
  flower dissects every packet itself; ip_proto and L4 ports still match.
* The kernel ignores ip_proto unless eth_type is IPv4/IPv6, and L4 ports
  unless ip_proto is TCP/UDP; both would silently widen a rule, so encode()
  refuses them.
* ``Rule.label`` is the TCA_ACT_COOKIE of every action (at most 16 bytes).
* A dumped filter this module cannot reproduce exactly (another classifier,
  a protocol other than ALL, an unmodelled key, flag or action) decodes to a
  Rule labelled ``FOREIGN`` with the reasons in ``InstalledRule.foreign``.
  A classifier of another kind is one such rule per (prio, protocol) with
  handle 0 (ops.dump() keeps only the kernel's per-prio entry for it), and
  deleting it removes that classifier instance whole.
* Deletes carry no kind and protocol 0, so they find foreign filters too.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import replace
from functools import lru_cache
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from testbed.errors import NetlinkOpError
from testbed.tc import flower
from testbed.tc.rule import (
    ETH_P_ALL,
    ETH_P_IP,
    ETH_P_IPV6,
    FOREIGN,
    Action,
    InstalledRule,
    Match,
    Rule,
)

IPPROTO_TCP = 6
IPPROTO_UDP = 17
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
FULL_MAC = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"
FULL32 = 0xFFFFFFFF
HOOKS = {"ingress": flower.INGRESS_PARENT, "egress": flower.EGRESS_PARENT}
_HOOK_OF = {parent: hook for hook, parent in HOOKS.items()}
HDR_SIZE = 16  # struct nlmsghdr
ACTION_KINDS = ("redirect", "mirror", "drop", "pass", "continue")

# (kind, ingress) -> (mirred eaction, verdict), as tc's m_mirred.c sets them
MIRRED = {
    ("redirect", False): (flower.TCA_EGRESS_REDIR, flower.TC_ACT_STOLEN),
    ("mirror", False): (flower.TCA_EGRESS_MIRROR, flower.TC_ACT_PIPE),
    ("redirect", True): (flower.TCA_INGRESS_REDIR, flower.TC_ACT_STOLEN),
    ("mirror", True): (flower.TCA_INGRESS_MIRROR, flower.TC_ACT_PIPE),
}
MIRRED_BACK = {v: k for k, v in MIRRED.items()}
# gact verdicts; "continue" (TC_ACT_UNSPEC) goes on with the next prio
GACT = {"drop": flower.TC_ACT_SHOT, "pass": flower.TC_ACT_OK, "continue": flower.TC_ACT_UNSPEC}
GACT_BACK = {v: k for k, v in GACT.items()}

# flower attributes decode() understands; anything else makes a rule foreign
_KNOWN_OPTIONS = {
    "TCA_FLOWER_ACT",
    "TCA_FLOWER_FLAGS",
    "TCA_FLOWER_IN_HW_COUNT",
    "TCA_FLOWER_KEY_ETH_DST",
    "TCA_FLOWER_KEY_ETH_DST_MASK",
    "TCA_FLOWER_KEY_ETH_SRC",
    "TCA_FLOWER_KEY_ETH_SRC_MASK",
    "TCA_FLOWER_KEY_ETH_TYPE",
    "TCA_FLOWER_KEY_IP_PROTO",
    "TCA_FLOWER_KEY_IPV4_SRC",
    "TCA_FLOWER_KEY_IPV4_SRC_MASK",
    "TCA_FLOWER_KEY_IPV4_DST",
    "TCA_FLOWER_KEY_IPV4_DST_MASK",
    "TCA_FLOWER_KEY_IPV6_SRC",
    "TCA_FLOWER_KEY_IPV6_SRC_MASK",
    "TCA_FLOWER_KEY_IPV6_DST",
    "TCA_FLOWER_KEY_IPV6_DST_MASK",
    "TCA_FLOWER_KEY_TCP_SRC",
    "TCA_FLOWER_KEY_TCP_SRC_MASK",
    "TCA_FLOWER_KEY_TCP_DST",
    "TCA_FLOWER_KEY_TCP_DST_MASK",
    "TCA_FLOWER_KEY_UDP_SRC",
    "TCA_FLOWER_KEY_UDP_SRC_MASK",
    "TCA_FLOWER_KEY_UDP_DST",
    "TCA_FLOWER_KEY_UDP_DST_MASK",
    "TCA_FLOWER_KEY_HASH",
    "TCA_FLOWER_KEY_HASH_MASK",
}
_KNOWN_FLAGS = (
    flower.TCA_CLS_FLAGS_SKIP_HW | flower.TCA_CLS_FLAGS_IN_HW | flower.TCA_CLS_FLAGS_NOT_IN_HW
)


def where(rule: Rule) -> str:
    """How messages name a rule: ``pf0 ingress prio 10 handle 3 [vf0-rx]``."""
    chain = f" chain {rule.chain}" if rule.chain else ""
    label = f" [{rule.label}]" if rule.label else ""
    return f"{rule.dev} {rule.hook}{chain} prio {rule.prio} handle {rule.handle}{label}"


def _invalid(rule: Rule, what: str, fix: str) -> NetlinkOpError:
    return NetlinkOpError(f"{where(rule)}: {what}", errno=errno.EINVAL, fix=fix)


# --- canonical form ---------------------------------------------------------


@lru_cache(maxsize=4096)
def _mac(value: str) -> str:
    octets = value.split(":")
    if len(octets) != 6:
        raise ValueError(value)
    return ":".join(f"{int(o, 16):02x}" for o in octets)


def _mac_pair(mac: Optional[str], mask: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    if mac is None and mask is None:
        return None, None
    mask = FULL_MAC if mask is None else _mac(mask)
    if mask == ZERO_MAC:
        return None, None
    mac = ZERO_MAC if mac is None else _mac(mac)
    return mac, (None if mask == FULL_MAC else mask)


@lru_cache(maxsize=4096)
def _iface(value: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    return ipaddress.ip_interface(value)


def _ip(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    iface = _iface(value)
    if iface.network.prefixlen == 0:
        return None
    if iface.network.prefixlen == iface.max_prefixlen:
        return str(iface.ip)
    return f"{iface.ip}/{iface.network.prefixlen}"


def _hash_pair(value: Optional[int], mask: Optional[int]) -> Tuple[Optional[int], Optional[int]]:
    if value is None and mask is None:
        return None, None
    mask = FULL32 if mask is None else mask
    if mask == 0:
        return None, None
    return (0 if value is None else value), (None if mask == FULL32 else mask)


def canonical_match(m: Match) -> Match:
    dst_mac, dst_mac_mask = _mac_pair(m.dst_mac, m.dst_mac_mask)
    src_mac, src_mac_mask = _mac_pair(m.src_mac, m.src_mac_mask)
    hash_, hash_mask = _hash_pair(m.hash, m.hash_mask)
    return Match(
        eth_type=None if m.eth_type == ETH_P_ALL else m.eth_type,
        dst_mac=dst_mac,
        dst_mac_mask=dst_mac_mask,
        src_mac=src_mac,
        src_mac_mask=src_mac_mask,
        ip_proto=m.ip_proto,
        src_ip=_ip(m.src_ip),
        dst_ip=_ip(m.dst_ip),
        src_port=m.src_port,
        dst_port=m.dst_port,
        hash=hash_,
        hash_mask=hash_mask,
    )


def canonical(rule: Rule) -> Rule:
    """The rule as the kernel will report it back (keys normalized, default masks dropped).

    Raises NetlinkOpError (EINVAL) if a MAC or IP string does not parse.
    """
    try:
        match = canonical_match(rule.match)
    except ValueError as exc:
        raise _invalid(
            rule, f"bad address in match: {exc}", "write aa:bb:cc:dd:ee:ff or a.b.c.d[/len]"
        ) from None
    return rule if match == rule.match else replace(rule, match=match)


def mask_shape(m: Match) -> tuple:
    """Which bits flower's mask of ``m`` covers (keys present, their masks), not the values.

    The kernel replaces a flower filter in place only if the new filter has
    the very same mask (cls_flower.c fl_check_assign_mask: EINVAL otherwise);
    rules of different shapes must be deleted and added.
    """
    c = canonical_match(m)

    def ip(value: Optional[str]) -> Optional[Tuple[int, int]]:
        if value is None:
            return None
        iface = _iface(value)
        return iface.version, iface.network.prefixlen

    return (
        c.eth_type is not None,
        None if c.dst_mac is None else (c.dst_mac_mask or FULL_MAC),
        None if c.src_mac is None else (c.src_mac_mask or FULL_MAC),
        c.ip_proto is not None,
        ip(c.src_ip),
        ip(c.dst_ip),
        c.src_port is not None,
        c.dst_port is not None,
        None if c.hash is None else (c.hash_mask if c.hash_mask is not None else FULL32),
    )


# --- encode -----------------------------------------------------------------


def check(rule: Rule) -> None:
    """Refuse (NetlinkOpError EINVAL, naming the rule and the fix) what flower would not take
    or would silently widen; encode() and pack() call it."""
    m = rule.match
    eth_type = None if m.eth_type == ETH_P_ALL else m.eth_type  # ALL: not matched
    try:  # addresses parse (cached: agents repeat the same few)
        for mac in (m.dst_mac, m.dst_mac_mask, m.src_mac, m.src_mac_mask):
            if mac is not None:
                _mac(mac)
        for ip in (m.src_ip, m.dst_ip):
            if ip is not None:
                _iface(ip)
    except ValueError as exc:
        raise _invalid(
            rule, f"bad address in match: {exc}", "write aa:bb:cc:dd:ee:ff or a.b.c.d[/len]"
        ) from None
    if rule.hook not in HOOKS:
        raise _invalid(rule, f"hook {rule.hook!r}", "use 'ingress' or 'egress'")
    if not 1 <= rule.prio <= 0xFFFF:
        raise _invalid(rule, "prio out of range", "use a prio in 1..65535")
    if not 1 <= rule.handle <= 0x7FFFFFFF:
        raise _invalid(rule, "handle out of range", "use a handle in 1..2^31-1")
    if not 0 <= rule.chain <= FULL32:
        raise _invalid(rule, "chain out of range", "use a chain in 0..2^32-1")
    if rule.label == FOREIGN:
        raise _invalid(rule, f"label {FOREIGN!r} is reserved for rules read back", "pick a label")
    cookie = rule.label.encode()
    if len(cookie) > flower.TC_COOKIE_MAX_SIZE:
        raise _invalid(
            rule,
            f"label is {len(cookie)} bytes, an action cookie holds {flower.TC_COOKIE_MAX_SIZE}",
            "shorten the label",
        )
    if rule.label and not rule.actions:
        raise _invalid(rule, "a label needs an action to carry it", "add an action")
    if len(rule.actions) > flower.TCA_ACT_MAX_PRIO:
        raise _invalid(rule, "too many actions", f"at most {flower.TCA_ACT_MAX_PRIO}")
    for a in rule.actions:
        if a.kind not in ACTION_KINDS:
            raise _invalid(rule, f"action {a.kind!r}", f"use one of {', '.join(ACTION_KINDS)}")
        if (a.kind in ("redirect", "mirror")) != (a.dev is not None):
            raise _invalid(rule, f"action {a.kind} with dev={a.dev!r}", "only mirred takes a dev")
        if a.ingress and a.kind not in ("redirect", "mirror"):
            raise _invalid(rule, f"action {a.kind} with ingress=True", "only mirred has ingress")
    if eth_type in (ETH_P_8021Q, ETH_P_8021AD):
        raise _invalid(rule, "VLAN ethertypes are not supported", "match the inner frame")
    if eth_type is not None and not 0 <= eth_type <= 0xFFFF:
        raise _invalid(rule, "eth_type out of range", "use 0..0xffff")
    if m.ip_proto is not None and eth_type not in (ETH_P_IP, ETH_P_IPV6):
        raise _invalid(
            rule, "ip_proto without eth_type IPv4/IPv6 is ignored by flower",
            "set eth_type=ETH_P_IP or ETH_P_IPV6",
        )
    if (m.src_port is not None or m.dst_port is not None) and m.ip_proto not in (
        IPPROTO_TCP,
        IPPROTO_UDP,
    ):
        raise _invalid(rule, "L4 ports need ip_proto TCP or UDP", "set ip_proto=6 or 17")
    for port in (m.src_port, m.dst_port):
        if port is not None and not 0 <= port <= 0xFFFF:
            raise _invalid(rule, f"port {port} out of range", "use 0..65535")
    for ip in (m.src_ip, m.dst_ip):
        if ip is None:
            continue
        version = _iface(ip).version
        want = ETH_P_IP if version == 4 else ETH_P_IPV6
        if eth_type is not None and eth_type != want:
            raise _invalid(rule, f"IPv{version} address with eth_type {eth_type:#06x}",
                           f"set eth_type={want:#06x}")
    for value in (m.hash, m.hash_mask):
        if value is not None and not 0 <= value <= FULL32:
            raise _invalid(rule, "hash/hash_mask out of range", "use 32-bit values")


@lru_cache(maxsize=4096)
def _ip_attrs(side: str, value: str) -> List[Tuple[str, str]]:
    iface = _iface(value)
    fam = "IPV4" if iface.version == 4 else "IPV6"
    return [
        (f"TCA_FLOWER_KEY_{fam}_{side}", str(iface.ip)),
        (f"TCA_FLOWER_KEY_{fam}_{side}_MASK", str(iface.network.netmask)),
    ]


def match_attrs(m: Match) -> List[Tuple[str, object]]:
    """Flower key attributes of a match, in attribute-number order (as tc sends them)."""
    attrs: List[Tuple[str, object]] = []
    if m.dst_mac is not None or m.dst_mac_mask is not None:
        attrs.append(("TCA_FLOWER_KEY_ETH_DST", _mac(m.dst_mac or ZERO_MAC)))
        if m.dst_mac_mask is not None:
            attrs.append(("TCA_FLOWER_KEY_ETH_DST_MASK", _mac(m.dst_mac_mask)))
    if m.src_mac is not None or m.src_mac_mask is not None:
        attrs.append(("TCA_FLOWER_KEY_ETH_SRC", _mac(m.src_mac or ZERO_MAC)))
        if m.src_mac_mask is not None:
            attrs.append(("TCA_FLOWER_KEY_ETH_SRC_MASK", _mac(m.src_mac_mask)))
    if m.eth_type is not None and m.eth_type != ETH_P_ALL:
        attrs.append(("TCA_FLOWER_KEY_ETH_TYPE", m.eth_type))
    if m.ip_proto is not None:
        attrs.append(("TCA_FLOWER_KEY_IP_PROTO", m.ip_proto))
    if m.src_ip is not None:
        attrs.extend(_ip_attrs("SRC", m.src_ip))
    if m.dst_ip is not None:
        attrs.extend(_ip_attrs("DST", m.dst_ip))
    l4 = "TCP" if m.ip_proto == IPPROTO_TCP else "UDP"
    if m.src_port is not None:
        attrs.append((f"TCA_FLOWER_KEY_{l4}_SRC", m.src_port))
    if m.dst_port is not None:
        attrs.append((f"TCA_FLOWER_KEY_{l4}_DST", m.dst_port))
    if m.hash is not None or m.hash_mask is not None:
        # the kernel ignores a mask whose key attribute is absent
        attrs.append(("TCA_FLOWER_KEY_HASH", m.hash or 0))
        if m.hash_mask is not None:
            attrs.append(("TCA_FLOWER_KEY_HASH_MASK", m.hash_mask))
    return attrs


def action_attrs(rule: Rule, ifindex: Callable[[str], int]) -> Dict[str, list]:
    """TCA_FLOWER_ACT: one nested action per Rule action, cookie = label."""
    cookie = rule.label.encode()
    prios = []
    for order, a in enumerate(rule.actions, start=1):
        if a.kind in GACT:
            kind = "gact"
            opts = [("TCA_GACT_PARMS", {"action": GACT[a.kind]})]
        else:
            kind = "mirred"
            eaction, verdict = MIRRED[(a.kind, a.ingress)]
            parms = {"eaction": eaction, "action": verdict, "ifindex": ifindex(a.dev)}
            opts = [("TCA_MIRRED_PARMS", parms)]
        act = [("TCA_ACT_KIND", kind), ("TCA_ACT_OPTIONS", {"attrs": opts})]
        if cookie:
            act.append(("TCA_ACT_COOKIE", cookie))
        prios.append((f"TCA_ACT_PRIO_{order}", {"attrs": act}))
    return {"attrs": prios}


def filter_info(prio: int, protocol: int = ETH_P_ALL) -> int:
    """tcmsg.info of a filter: prio in the high half, protocol (network order) in the low.

    Protocol 0 in a delete or dump means any protocol.
    """
    return (prio << 16) | socket.htons(protocol)


def encode(rule: Rule, dev_index: int, ifindex: Callable[[str], int]) -> flower.tcmsg:
    """RTM_NEWTFILTER body for ``rule`` on the interface ``dev_index``.

    ``ifindex(name)`` resolves mirred targets in the rule's namespace. The
    message header (type, flags, seq) is the sender's business.
    """
    check(rule)
    options: List[Tuple[str, object]] = list(match_attrs(rule.match))
    flags = flower.TCA_CLS_FLAGS_SKIP_HW if rule.skip_hw else 0
    if flags:
        options.append(("TCA_FLOWER_FLAGS", flags))
    if rule.actions:
        options.append(("TCA_FLOWER_ACT", action_attrs(rule, ifindex)))
    msg = flower.tcmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = dev_index
    msg["handle"] = rule.handle
    msg["parent"] = HOOKS[rule.hook]
    msg["info"] = filter_info(rule.prio)
    msg["attrs"] = [("TCA_KIND", "flower")]
    if rule.chain:
        msg["attrs"].append(("TCA_CHAIN", rule.chain))
    msg["attrs"].append(("TCA_OPTIONS", {"attrs": options}))
    return msg


def encode_delete(rule: Rule, dev_index: int) -> flower.tcmsg:
    """RTM_DELTFILTER body: identity only (dev, hook, chain, prio, handle).

    No TCA_KIND and protocol 0 ("any"): the kernel then finds the filter by
    prio and handle whatever its classifier and protocol, so foreign rules
    can be deleted too.  Handle 0 deletes the whole (prio, protocol)
    classifier instance -- how dump() reports classifiers of another kind.
    """
    msg = flower.tcmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = dev_index
    msg["handle"] = rule.handle
    msg["parent"] = HOOKS.get(rule.hook, flower.INGRESS_PARENT)
    msg["info"] = filter_info(rule.prio, protocol=0)
    msg["attrs"] = [("TCA_CHAIN", rule.chain)] if rule.chain else []
    return msg


# --- fast packer --------------------------------------------------------------
#
# pyroute2's generic encoder spends ~280 us per filter message on the host
# (13x that in a TCG guest), which alone would make us slower than
# ``tc -batch``.  pack() writes the very same bytes directly; the unit tests
# assert byte equality with encode() for every key and action kind.

_NESTED = 0x8000  # NLA_F_NESTED
_OPT_TYPE = {name: num for num, name, _ in flower.options.nla_map}
_TCMSG = struct.Struct("=BBHiIII")
_NLA = struct.Struct("=HH")
_FMT = {"be16": ">H", "uint8": "B", "uint32": "=I"}
_OPT_FMT = {name: _FMT.get(fmt) for _, name, fmt in flower.options.nla_map}
_MIRRED_PARMS = struct.Struct("=IIiiiiI")  # struct tc_mirred
_GACT_PARMS = struct.Struct("=IIiii")  # struct tc_gact


def _nla(nla_type: int, payload: bytes) -> bytes:
    pad = -len(payload) % 4
    return _NLA.pack(4 + len(payload), nla_type) + payload + b"\0" * pad


@lru_cache(maxsize=8192)
def _addr_opt(name: str, value: str) -> bytes:
    if name.startswith("TCA_FLOWER_KEY_ETH_"):
        payload = bytes.fromhex(value.replace(":", ""))
    else:  # IPv4/IPv6 address or mask
        payload = ipaddress.ip_address(value).packed
    return _nla(_OPT_TYPE[name], payload)


def _opt(name: str, value: object) -> bytes:
    fmt = _OPT_FMT[name]
    if fmt is None:
        return _addr_opt(name, value)  # type: ignore[arg-type]
    return _nla(_OPT_TYPE[name], struct.pack(fmt, value))


def _pack_actions(rule: Rule, ifindex: Callable[[str], int]) -> bytes:
    cookie = _nla(6, rule.label.encode()) if rule.label else b""
    out = []
    for order, a in enumerate(rule.actions, start=1):
        if a.kind in GACT:
            kind = _nla(1, b"gact\0")
            opts = _nla(2 | _NESTED, _nla(2, _GACT_PARMS.pack(0, 0, GACT[a.kind], 0, 0)))
        else:
            eaction, verdict = MIRRED[(a.kind, a.ingress)]
            parms = _MIRRED_PARMS.pack(0, 0, verdict, 0, 0, eaction, ifindex(a.dev))
            kind = _nla(1, b"mirred\0")
            opts = _nla(2 | _NESTED, _nla(2, parms))
        out.append(_nla(order | _NESTED, kind + opts + cookie))
    return _nla(_OPT_TYPE["TCA_FLOWER_ACT"] | _NESTED, b"".join(out))


def pack(
    rule: Rule, dev_index: int, ifindex: Callable[[str], int], checked: bool = False
) -> bytes:
    """The body (after the nlmsghdr) of encode(rule, ...), built directly.

    ``checked=True`` skips check() for a rule the caller has already checked.
    """
    if not checked:
        check(rule)
    parts = [_opt(name, value) for name, value in match_attrs(rule.match)]
    if rule.skip_hw:
        parts.append(_opt("TCA_FLOWER_FLAGS", flower.TCA_CLS_FLAGS_SKIP_HW))
    if rule.actions:
        parts.append(_pack_actions(rule, ifindex))
    head = _TCMSG.pack(
        socket.AF_UNSPEC, 0, 0, dev_index, rule.handle, HOOKS[rule.hook], filter_info(rule.prio)
    )
    chain = _nla(11, struct.pack("=I", rule.chain)) if rule.chain else b""
    return head + _nla(1, b"flower\0") + chain + _nla(2 | _NESTED, b"".join(parts))


def pack_delete(rule: Rule, dev_index: int) -> bytes:
    """The body of encode_delete(rule, ...), built directly."""
    head = _TCMSG.pack(
        socket.AF_UNSPEC, 0, 0, dev_index, rule.handle,
        HOOKS.get(rule.hook, flower.INGRESS_PARENT), filter_info(rule.prio, protocol=0),
    )
    return head + (_nla(11, struct.pack("=I", rule.chain)) if rule.chain else b"")


# --- decode -----------------------------------------------------------------
#
# Two readers fill one plain form, and one builder turns it into an
# InstalledRule: _from_nla() reads flower.py's pyroute2 classes (the
# reference), _from_bytes() walks the attributes with struct -- pyroute2's
# decoder costs ~190 us per filter on the host and ~25 ms in the TCG guest,
# too slow for an agent reading thousands of counters.  The unit tests
# check that both readers agree on kernel-made and encoded messages.
#
# The plain form: (hdr, kind, chain, options, actions) where hdr is
# (ifindex, handle, parent, info), options a list of (attr number, value)
# with values as pyroute2 decodes them (MACs and IPs as strings, ints) and
# actions a list of dicts (kind, parms, extra attr numbers, cookie, bytes,
# packets).

_OPT_NAME = {num: name for num, name, _ in flower.options.nla_map}
_OPT_NUM = {name: num for num, name in _OPT_NAME.items()}
_KNOWN_NUMS = {_OPT_NUM[name] for name in _KNOWN_OPTIONS}
_ACT_OPTIONAL = {"gact": {1, 4}, "mirred": {1, 3}}  # TM and PAD: ignorable
_PARMS = {"gact": ("index", "capab", "action", "refcnt", "bindcnt"),
          "mirred": ("index", "capab", "action", "refcnt", "bindcnt", "eaction", "ifindex")}
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER


def _nla_num(slot) -> int:
    nla = slot.nla
    return struct.unpack_from("=H", nla.data, nla.offset + 2)[0] & _NLA_TYPE_MASK


def _from_nla(msg) -> tuple:
    hdr = (msg["index"], msg["handle"], msg["parent"], msg["info"])
    kind = msg.get_attr("TCA_KIND")
    chain = msg.get_attr("TCA_CHAIN", 0)
    opts = msg.get_attr("TCA_OPTIONS") if kind == "flower" else None
    options: List[Tuple[int, object]] = []
    actions: List[dict] = []
    for slot in opts["attrs"] if opts is not None else ():
        num = _nla_num(slot)
        if num != _OPT_NUM["TCA_FLOWER_ACT"]:
            options.append((num, slot[1]))
            continue
        for act_slot in slot[1]["attrs"]:
            act = act_slot[1]
            a_kind = act.get_attr("TCA_ACT_KIND")
            a_opts = act.get_attr("TCA_ACT_OPTIONS")
            parms = None
            extra = []
            if a_kind in _PARMS and a_opts is not None:
                for o_slot in a_opts["attrs"]:
                    o_num = _nla_num(o_slot)
                    if o_num == 2:
                        parms = {k: o_slot[1][k] for k in _PARMS[a_kind]}
                    elif o_num not in _ACT_OPTIONAL[a_kind]:
                        extra.append(o_num)
            stats = act.get_attr("TCA_ACT_STATS")
            basic = stats.get_attr("TCA_STATS_BASIC") if stats is not None else None
            nbytes, packets = (basic["bytes"], basic["packets"]) if basic else (0, 0)
            if stats is not None:
                packets = stats.get_attr("TCA_STATS_PKT64", packets)
            actions.append(
                dict(kind=a_kind, parms=parms, extra=extra,
                     cookie=act.get_attr("TCA_ACT_COOKIE"), bytes=nbytes, packets=packets)
            )
    return hdr, kind, chain, options, actions


def _walk(buf: bytes, start: int, end: int):
    """(type without flags, payload start, payload end) of each attribute in buf[start:end]."""
    while start + 4 <= end:
        length, nla_type = _NLA.unpack_from(buf, start)
        if length < 4:
            return
        yield nla_type & _NLA_TYPE_MASK, start + 4, start + length
        start += (length + 3) & ~3


def _mac_str(buf: bytes, a: int) -> str:
    return buf[a : a + 6].hex(":")


def _ip_str(family: int):
    return lambda buf, a: socket.inet_ntop(family, buf[a : a + (4 if family == socket.AF_INET else 16)])


_OPT_READ = {}
for _num, _name, _fmt in flower.options.nla_map:
    if _fmt == "l2addr":
        _OPT_READ[_num] = _mac_str
    elif _fmt == "ip4addr":
        _OPT_READ[_num] = _ip_str(socket.AF_INET)
    elif _fmt == "ip6addr":
        _OPT_READ[_num] = _ip_str(socket.AF_INET6)
    elif _fmt in _FMT:
        _OPT_READ[_num] = (lambda st: lambda buf, a: st.unpack_from(buf, a)[0])(
            struct.Struct(_FMT[_fmt])
        )
_BASIC = struct.Struct("=QI")
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")
_PARMS_ST = {"gact": _GACT_PARMS, "mirred": _MIRRED_PARMS}


def _from_bytes(raw: bytes) -> tuple:
    base = HDR_SIZE
    _, _, _, index, handle, parent, info = _TCMSG.unpack_from(raw, base)
    kind = None
    chain = 0
    options: List[Tuple[int, object]] = []
    actions: List[dict] = []
    opts_at = None
    for t, a, b in _walk(raw, base + _TCMSG.size, len(raw)):
        if t == 1:
            kind = raw[a:b].rstrip(b"\0").decode()
        elif t == 11:
            chain = _U32.unpack_from(raw, a)[0]
        elif t == 2:
            opts_at = (a, b)
    if kind == "flower" and opts_at:
        for t, a, b in _walk(raw, *opts_at):
            if t != _OPT_NUM["TCA_FLOWER_ACT"]:
                read = _OPT_READ.get(t)
                options.append((t, read(raw, a) if read and b - a >= 1 else raw[a:b]))
                continue
            for _, pa, pb in _walk(raw, a, b):
                act = dict(kind=None, parms=None, extra=[], cookie=None, bytes=0, packets=0)
                a_opts = None
                for at, aa, ab in _walk(raw, pa, pb):
                    if at == 1:
                        act["kind"] = raw[aa:ab].rstrip(b"\0").decode()
                    elif at == 2:
                        a_opts = (aa, ab)
                    elif at == 6:
                        act["cookie"] = bytes(raw[aa:ab])
                    elif at == 4:
                        for st, sa, _sb in _walk(raw, aa, ab):
                            if st == 1:
                                act["bytes"], act["packets"] = _BASIC.unpack_from(raw, sa)
                            elif st == 8:
                                act["packets"] = _U64.unpack_from(raw, sa)[0]
                a_kind = act["kind"]
                if a_kind in _PARMS and a_opts:
                    for ot, oa, _ob in _walk(raw, *a_opts):
                        if ot == 2:
                            values = _PARMS_ST[a_kind].unpack_from(raw, oa)
                            act["parms"] = dict(zip(_PARMS[a_kind], values))
                        elif ot not in _ACT_OPTIONAL[a_kind]:
                            act["extra"].append(ot)
                actions.append(act)
    return (index, handle, parent, info), kind, chain, options, actions


def _prefix(addr: str, mask: str) -> Optional[str]:
    """('198.18.0.0', '255.255.255.0') -> '198.18.0.0/24'; None if the mask has holes."""
    netmask = ipaddress.ip_address(mask)
    bits = netmask.max_prefixlen
    host = ~int(netmask) & ((1 << bits) - 1)
    if host & (host + 1):
        return None
    return f"{addr}/{bits - host.bit_length()}"


def _build_actions(
    acts: List[dict], ifname: Mapping[int, str], foreign: List[str]
) -> Tuple[Tuple[Action, ...], Optional[bytes]]:
    actions: List[Action] = []
    cookies = {a["cookie"] for a in acts}
    for a in acts:
        parms = a["parms"]
        if parms is not None and not a["extra"]:
            if a["kind"] == "gact" and parms["action"] in GACT_BACK:
                actions.append(Action(GACT_BACK[parms["action"]]))
                continue
            key = (parms.get("eaction"), parms["action"])
            if a["kind"] == "mirred" and key in MIRRED_BACK:
                akind, ingress = MIRRED_BACK[key]
                # a target that vanished reads back as ifindex 0: dev None
                actions.append(Action(akind, ifname.get(parms["ifindex"]), ingress))
                continue
        foreign.append(f"action {a['kind']}")
    if len(cookies) > 1:
        foreign.append("cookies differ between actions")
    return tuple(actions), (next(iter(cookies)) if len(cookies) == 1 else None)


def _build_match(options: Dict[str, object], foreign: List[str]) -> Match:
    get = options.get
    values: Dict[str, object] = {
        "eth_type": get("TCA_FLOWER_KEY_ETH_TYPE"),
        "dst_mac": get("TCA_FLOWER_KEY_ETH_DST"),
        "dst_mac_mask": get("TCA_FLOWER_KEY_ETH_DST_MASK"),
        "src_mac": get("TCA_FLOWER_KEY_ETH_SRC"),
        "src_mac_mask": get("TCA_FLOWER_KEY_ETH_SRC_MASK"),
        "ip_proto": get("TCA_FLOWER_KEY_IP_PROTO"),
        "hash": get("TCA_FLOWER_KEY_HASH"),
        "hash_mask": get("TCA_FLOWER_KEY_HASH_MASK"),
    }
    for side in ("SRC", "DST"):
        for fam, full in (("IPV4", "255.255.255.255"), ("IPV6", "ffff:" * 7 + "ffff")):
            addr = get(f"TCA_FLOWER_KEY_{fam}_{side}")
            if addr is None:
                continue
            mask = get(f"TCA_FLOWER_KEY_{fam}_{side}_MASK", full)
            value = _prefix(addr, mask)  # type: ignore[arg-type]
            if value is None:
                foreign.append(f"TCA_FLOWER_KEY_{fam}_{side}_MASK {mask}")
            values[f"{side.lower()}_ip"] = value
        for l4 in ("TCP", "UDP"):
            port = get(f"TCA_FLOWER_KEY_{l4}_{side}")
            if port is None:
                continue
            mask = get(f"TCA_FLOWER_KEY_{l4}_{side}_MASK", 0xFFFF)
            if mask != 0xFFFF:
                foreign.append(f"TCA_FLOWER_KEY_{l4}_{side}_MASK {mask:#x}")
            values[f"{side.lower()}_port"] = port
    return canonical_match(Match(**values))  # type: ignore[arg-type]


def _build(plain: tuple, ifname: Mapping[int, str]) -> InstalledRule:
    (index, handle, parent, info), kind, chain, options, acts = plain
    foreign: List[str] = []
    hook = _HOOK_OF.get(parent)
    if hook is None:
        foreign.append(f"parent {parent:#x}")
    base = dict(
        dev=ifname.get(index, f"#{index}"),
        hook=hook or "ingress",
        chain=chain,
        prio=info >> 16,
        handle=handle,
    )
    if kind != "flower":
        rule = Rule(match=Match(), actions=(), skip_hw=False, label=FOREIGN, **base)
        return InstalledRule(rule, foreign=(f"kind {kind}",))
    protocol = socket.ntohs(info & 0xFFFF)
    if protocol != ETH_P_ALL:
        foreign.append(f"protocol {protocol:#06x}")
    named: Dict[str, object] = {}
    for num, value in options:
        name = _OPT_NAME.get(num, f"TCA_FLOWER attribute {num}")
        named[name] = value
        if num not in _KNOWN_NUMS:
            foreign.append(name)
    flags = named.get("TCA_FLOWER_FLAGS", 0)
    if flags & ~_KNOWN_FLAGS:  # type: ignore[operator]
        foreign.append(f"TCA_FLOWER_FLAGS {flags:#x}")
    match = _build_match(named, foreign)
    actions, cookie = _build_actions(acts, ifname, foreign)
    label = ""
    if cookie:
        try:
            label = cookie.decode()
        except UnicodeDecodeError:
            foreign.append(f"cookie {cookie.hex()}")
    if foreign or label == FOREIGN:
        label = FOREIGN
        foreign = foreign or ["cookie 'foreign'"]
    rule = Rule(
        match=match,
        actions=actions,
        skip_hw=bool(flags & flower.TCA_CLS_FLAGS_SKIP_HW),  # type: ignore[operator]
        label=label,
        **base,
    )
    # counters: the first action's (every packet the rule matched passes it)
    first = acts[0] if acts else {"packets": 0, "bytes": 0}
    return InstalledRule(
        rule, packets=first["packets"], bytes=first["bytes"], foreign=tuple(foreign)
    )


def decode(msg, ifname: Mapping[int, str]) -> InstalledRule:
    """A dumped RTM_NEWTFILTER, decoded with flower.py's classes (flower.tcmsg), as an InstalledRule.

    ``ifname`` maps ifindex -> name in the dumped namespace (for the filter's
    dev and mirred targets).
    """
    return _build(_from_nla(msg), ifname)


def unpack(raw: bytes, ifname: Mapping[int, str]) -> InstalledRule:
    """decode() of a raw RTM_NEWTFILTER message (header included), without pyroute2's decoder."""
    return _build(_from_bytes(raw), ifname)
