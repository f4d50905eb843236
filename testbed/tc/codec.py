"""Rule <-> flower netlink message (pure: no socket, no kernel).

``encode()`` turns a Rule into an RTM_NEWTFILTER payload built on flower.py's
classes, ``pack()`` writes the same bytes fast (readback.py goes the other
way).  ``canonical()`` is the form rules are compared in (readback returns
it), because the kernel fills in defaults: a MAC without a mask comes back
with mask ff:ff:ff:ff:ff:ff, a hash without a mask with 0xffffffff.
``mask_shape()`` says whether flower can replace one rule by another in
place.

Wire decisions, checked on Debian's 6.1 kernel (tests/integration/test_tc_ops.py):

* The filter's protocol is ETH_P_ALL and ``Match.eth_type`` goes into
  TCA_FLOWER_KEY_ETH_TYPE, so one prio can hold rules of any ethertype.
  flower dissects every packet itself; ip_proto and L4 ports still match.
* The kernel ignores ip_proto unless eth_type is IPv4/IPv6, and L4 ports
  unless ip_proto is TCP/UDP; both would silently widen a rule, so encode()
  refuses them.
* ``Rule.label`` is the TCA_ACT_COOKIE of every action (at most 16 bytes).
* flower replaces a filter in place only if the new one has the same mask
  (keys present, their masks): ``mask_shape()``; ops.diff() deletes and
  adds otherwise.
* Deletes carry no kind and protocol 0, so they find foreign filters too
  (see readback.py); with handle 0 a delete removes the whole (prio,
  protocol) classifier instance, which is how a classifier of another kind
  is read back and removed.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import replace
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Tuple

from testbed.errors import NetlinkOpError
from testbed.tc import flower
from testbed.tc.rule import ETH_P_ALL, ETH_P_IP, ETH_P_IPV6, FOREIGN, Match, Rule

IPPROTO_TCP = 6
IPPROTO_UDP = 17
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
FULL_MAC = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"
FULL32 = 0xFFFFFFFF
HOOKS = {"ingress": flower.INGRESS_PARENT, "egress": flower.EGRESS_PARENT}
ACTION_KINDS = ("redirect", "mirror", "drop", "pass", "continue")

# (kind, ingress) -> (mirred eaction, verdict), as tc's m_mirred.c sets them
MIRRED = {
    ("redirect", False): (flower.TCA_EGRESS_REDIR, flower.TC_ACT_STOLEN),
    ("mirror", False): (flower.TCA_EGRESS_MIRROR, flower.TC_ACT_PIPE),
    ("redirect", True): (flower.TCA_INGRESS_REDIR, flower.TC_ACT_STOLEN),
    ("mirror", True): (flower.TCA_INGRESS_MIRROR, flower.TC_ACT_PIPE),
}
# gact verdicts; "continue" (TC_ACT_UNSPEC) goes on with the next prio
GACT = {"drop": flower.TC_ACT_SHOT, "pass": flower.TC_ACT_OK, "continue": flower.TC_ACT_UNSPEC}

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
    if m.ip_proto is not None and not 0 <= m.ip_proto <= 0xFF:
        raise _invalid(rule, "ip_proto out of range", "use 0..255")
    versions = {_iface(ip).version for ip in (m.src_ip, m.dst_ip) if ip is not None}
    if len(versions) > 1:
        raise _invalid(rule, "src_ip and dst_ip of different families", "match one family")
    for ip in (m.src_ip, m.dst_ip):
        if ip is None:
            continue
        if _iface(ip).network.prefixlen == 0:
            raise _invalid(rule, f"{ip} matches every address (yet only IP frames)",
                           "leave the key out")
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
NLA_FORMATS = {"be16": ">H", "uint8": "B", "uint32": "=I"}  # pyroute2 type -> struct
_OPT_FMT = {name: NLA_FORMATS.get(fmt) for _, name, fmt in flower.options.nla_map}
MIRRED_PARMS = struct.Struct("=IIiiiiI")  # struct tc_mirred
GACT_PARMS = struct.Struct("=IIiii")  # struct tc_gact


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
            opts = _nla(2 | _NESTED, _nla(2, GACT_PARMS.pack(0, 0, GACT[a.kind], 0, 0)))
        else:
            eaction, verdict = MIRRED[(a.kind, a.ingress)]
            parms = MIRRED_PARMS.pack(0, 0, verdict, 0, 0, eaction, ifindex(a.dev))
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
