"""Rule <-> flower netlink message (pure: no socket, no kernel).

``encode()`` turns a Rule into an RTM_NEWTFILTER payload built on flower.py's
classes, ``pack()`` writes the same bytes fast (readback.py goes the other
way); ``check()`` refuses what flower would not take or would silently widen.
The form rules are compared in is ``canonical.py``.

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
* A rule with ``block`` is addressed to the shared block, not a device:
  tcm_ifindex TCM_IFINDEX_MAGIC_BLOCK, tcm_parent the block index (how
  ``tc filter add block N`` sends it); the kernel refuses filters addressed
  to a device whose hook is bound to a shared block (EOPNOTSUPP).
* ``goto`` is gact with verdict TC_ACT_GOTO_CHAIN | chain; ``Match.indev``
  is TCA_FLOWER_INDEV, the interface *name* (the kernel resolves it when the
  rule is added and prints the name back; a rule whose indev is gone reads
  back without the key).
* Deletes carry no kind and protocol 0, so they find foreign filters too
  (see readback.py); with handle 0 a delete removes the whole (prio,
  protocol) classifier instance, which is how a classifier of another kind
  is read back and removed.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from testbed.tc import uapi
from testbed.tc.canonical import FULL32, ZERO_MAC, invalid, parse_iface, parse_mac
from testbed.tc.rule import ETH_P_ALL, ETH_P_IP, ETH_P_IPV6, FOREIGN, Action, Match, Rule

if TYPE_CHECKING:
    from testbed.tc import flower

IPPROTO_TCP = 6
IPPROTO_UDP = 17
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
HOOKS = {"ingress": uapi.INGRESS_PARENT, "egress": uapi.EGRESS_PARENT}
ACTION_KINDS = ("redirect", "mirror", "drop", "pass", "continue", "goto")
IFNAMSIZ = 16  # with the NUL

# (kind, ingress) -> (mirred eaction, verdict), as tc's m_mirred.c sets them
MIRRED = {
    ("redirect", False): (uapi.TCA_EGRESS_REDIR, uapi.TC_ACT_STOLEN),
    ("mirror", False): (uapi.TCA_EGRESS_MIRROR, uapi.TC_ACT_PIPE),
    ("redirect", True): (uapi.TCA_INGRESS_REDIR, uapi.TC_ACT_STOLEN),
    ("mirror", True): (uapi.TCA_INGRESS_MIRROR, uapi.TC_ACT_PIPE),
}
# gact verdicts; "continue" (TC_ACT_UNSPEC) goes on with the next prio
GACT = {"drop": uapi.TC_ACT_SHOT, "pass": uapi.TC_ACT_OK, "continue": uapi.TC_ACT_UNSPEC}


def gact_verdict(a: Action) -> int:
    """tc_gact.action of a gact Action: GACT's verdict, or TC_ACT_GOTO_CHAIN | chain for ``goto``."""
    if a.kind == "goto":
        return uapi.TC_ACT_GOTO_CHAIN | (a.chain or 0)
    return GACT[a.kind]


def target(rule: Rule, dev_index: int) -> Tuple[int, int]:
    """(tcm_ifindex, tcm_parent) of a rule: its device and clsact hook, or its shared block."""
    if rule.block:
        return uapi.TCM_IFINDEX_MAGIC_BLOCK, rule.block
    return dev_index, HOOKS.get(rule.hook, uapi.INGRESS_PARENT)


# --- encode -----------------------------------------------------------------


def check(rule: Rule) -> None:
    """Refuse (NetlinkOpError EINVAL, naming the rule and the fix) what flower would not take
    or would silently widen; encode() and pack() call it."""
    _check_addresses(rule)
    _check_header(rule)
    _check_actions(rule)
    _check_match(rule)


def _check_addresses(rule: Rule) -> None:
    m = rule.match
    try:  # addresses parse (cached: agents repeat the same few)
        for mac in (m.dst_mac, m.dst_mac_mask, m.src_mac, m.src_mac_mask):
            if mac is not None:
                parse_mac(mac)
        for ip in (m.src_ip, m.dst_ip):
            if ip is not None:
                parse_iface(ip)
    except ValueError as exc:
        raise invalid(
            rule, f"bad address in match: {exc}", "write aa:bb:cc:dd:ee:ff or a.b.c.d[/len]"
        ) from None


def _check_header(rule: Rule) -> None:
    """Where the rule goes and what it is called: hook, block, prio, handle, chain, label."""
    if rule.hook not in HOOKS:
        raise invalid(rule, f"hook {rule.hook!r}", "use 'ingress' or 'egress'")
    if not 0 <= rule.block < uapi.TCM_IFINDEX_MAGIC_BLOCK:
        raise invalid(rule, "block out of range", "use a block index in 1..2^32-2 (0: on the device)")
    if rule.block and (rule.dev or rule.hook != "ingress"):
        raise invalid(rule, "a rule in a shared block has no device or hook (the binding decides)",
                      "leave dev '' and hook 'ingress'")
    if not rule.block and not rule.dev:
        raise invalid(rule, "no device and no block", "set dev, or block for a shared block")
    if not 1 <= rule.prio <= 0xFFFF:
        raise invalid(rule, "prio out of range", "use a prio in 1..65535")
    if not 1 <= rule.handle <= 0x7FFFFFFF:
        raise invalid(rule, "handle out of range", "use a handle in 1..2^31-1")
    if not 0 <= rule.chain <= uapi.TC_ACT_EXT_VAL_MASK:
        raise invalid(rule, "chain out of range", "use a chain in 0..2^28-1 (the kernel's limit)")
    if rule.label == FOREIGN:
        raise invalid(rule, f"label {FOREIGN!r} is reserved for rules read back", "pick a label")
    cookie = rule.label.encode()
    if len(cookie) > uapi.TC_COOKIE_MAX_SIZE:
        raise invalid(
            rule,
            f"label is {len(cookie)} bytes, an action cookie holds {uapi.TC_COOKIE_MAX_SIZE}",
            "shorten the label",
        )


def _check_actions(rule: Rule) -> None:
    if rule.label and not rule.actions:
        raise invalid(rule, "a label needs an action to carry it", "add an action")
    if len(rule.actions) > uapi.TCA_ACT_MAX_PRIO:
        raise invalid(rule, "too many actions", f"at most {uapi.TCA_ACT_MAX_PRIO}")
    for a in rule.actions:
        if a.kind not in ACTION_KINDS:
            raise invalid(rule, f"action {a.kind!r}", f"use one of {', '.join(ACTION_KINDS)}")
        if (a.kind in ("redirect", "mirror")) != (a.dev is not None):
            raise invalid(rule, f"action {a.kind} with dev={a.dev!r}", "only mirred takes a dev")
        if a.ingress and a.kind not in ("redirect", "mirror"):
            raise invalid(rule, f"action {a.kind} with ingress=True", "only mirred has ingress")
        if (a.kind == "goto") != (a.chain is not None):
            raise invalid(rule, f"action {a.kind} with chain={a.chain!r}", "only goto takes a chain")
        if a.kind == "goto" and not rule.chain < a.chain <= uapi.TC_ACT_EXT_VAL_MASK:  # type: ignore[operator]
            raise invalid(rule, f"goto chain {a.chain} from chain {rule.chain}",
                          "jump forward only (no loops): a chain above the rule's, below 2^28")


def _check_match(rule: Rule) -> None:
    """Keys flower would refuse, or ignore and so silently widen the rule."""
    m = rule.match
    eth_type = None if m.eth_type == ETH_P_ALL else m.eth_type  # ALL: not matched
    if eth_type in (ETH_P_8021Q, ETH_P_8021AD):
        raise invalid(rule, "VLAN ethertypes are not supported", "match the inner frame")
    if eth_type is not None and not 0 <= eth_type <= 0xFFFF:
        raise invalid(rule, "eth_type out of range", "use 0..0xffff")
    if m.ip_proto is not None and eth_type not in (ETH_P_IP, ETH_P_IPV6):
        raise invalid(
            rule, "ip_proto without eth_type IPv4/IPv6 is ignored by flower",
            "set eth_type=ETH_P_IP or ETH_P_IPV6",
        )
    if (m.src_port is not None or m.dst_port is not None) and m.ip_proto not in (
        IPPROTO_TCP,
        IPPROTO_UDP,
    ):
        raise invalid(rule, "L4 ports need ip_proto TCP or UDP", "set ip_proto=6 or 17")
    for port in (m.src_port, m.dst_port):
        if port is not None and not 0 <= port <= 0xFFFF:
            raise invalid(rule, f"port {port} out of range", "use 0..65535")
    if m.ip_proto is not None and not 0 <= m.ip_proto <= 0xFF:
        raise invalid(rule, "ip_proto out of range", "use 0..255")
    versions = {parse_iface(ip).version for ip in (m.src_ip, m.dst_ip) if ip is not None}
    if len(versions) > 1:
        raise invalid(rule, "src_ip and dst_ip of different families", "match one family")
    for ip in (m.src_ip, m.dst_ip):
        if ip is None:
            continue
        if parse_iface(ip).network.prefixlen == 0:
            raise invalid(rule, f"{ip} matches every address (yet only IP frames)",
                           "leave the key out")
        version = parse_iface(ip).version
        want = ETH_P_IP if version == 4 else ETH_P_IPV6
        if eth_type is not None and eth_type != want:
            raise invalid(rule, f"IPv{version} address with eth_type {eth_type:#06x}",
                           f"set eth_type={want:#06x}")
    for value in (m.hash, m.hash_mask):
        if value is not None and not 0 <= value <= FULL32:
            raise invalid(rule, "hash/hash_mask out of range", "use 32-bit values")
    if m.indev is not None and not 0 < len(m.indev.encode()) < IFNAMSIZ:
        raise invalid(rule, f"indev {m.indev!r} is not an interface name", "use a name of 1..15 bytes")


@lru_cache(maxsize=4096)
def _ip_attrs(side: str, value: str) -> List[Tuple[str, str]]:
    iface = parse_iface(value)
    fam = "IPV4" if iface.version == 4 else "IPV6"
    return [
        (f"TCA_FLOWER_KEY_{fam}_{side}", str(iface.ip)),
        (f"TCA_FLOWER_KEY_{fam}_{side}_MASK", str(iface.network.netmask)),
    ]


def match_attrs(m: Match) -> List[Tuple[str, object]]:
    """Flower key attributes of a match, in attribute-number order (as tc sends them)."""
    attrs: List[Tuple[str, object]] = []
    if m.indev is not None:
        attrs.append(("TCA_FLOWER_INDEV", m.indev))
    if m.dst_mac is not None or m.dst_mac_mask is not None:
        attrs.append(("TCA_FLOWER_KEY_ETH_DST", parse_mac(m.dst_mac or ZERO_MAC)))
        if m.dst_mac_mask is not None:
            attrs.append(("TCA_FLOWER_KEY_ETH_DST_MASK", parse_mac(m.dst_mac_mask)))
    if m.src_mac is not None or m.src_mac_mask is not None:
        attrs.append(("TCA_FLOWER_KEY_ETH_SRC", parse_mac(m.src_mac or ZERO_MAC)))
        if m.src_mac_mask is not None:
            attrs.append(("TCA_FLOWER_KEY_ETH_SRC_MASK", parse_mac(m.src_mac_mask)))
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
        if a.kind in GACT or a.kind == "goto":
            kind = "gact"
            opts = [("TCA_GACT_PARMS", {"action": gact_verdict(a)})]
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
    """RTM_NEWTFILTER body for ``rule`` on the interface ``dev_index`` (ignored for a block's rule).

    ``ifindex(name)`` resolves mirred targets in the rule's namespace. The
    message header (type, flags, seq) is the sender's business.
    """
    check(rule)
    options: List[Tuple[str, object]] = list(match_attrs(rule.match))
    flags = uapi.TCA_CLS_FLAGS_SKIP_HW if rule.skip_hw else 0
    if flags:
        options.append(("TCA_FLOWER_FLAGS", flags))
    if rule.actions:
        options.append(("TCA_FLOWER_ACT", action_attrs(rule, ifindex)))
    from testbed.tc import flower  # the reference encoder's classes (pyroute2); pack() needs none

    msg = flower.tcmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"], msg["parent"] = target(rule, dev_index)
    msg["handle"] = rule.handle
    msg["info"] = filter_info(rule.prio)
    msg["attrs"] = [("TCA_KIND", "flower")]
    if rule.chain:
        msg["attrs"].append(("TCA_CHAIN", rule.chain))
    msg["attrs"].append(("TCA_OPTIONS", {"attrs": options}))
    return msg


def encode_delete(rule: Rule, dev_index: int) -> flower.tcmsg:
    """RTM_DELTFILTER body: identity only (dev or block, hook, chain, prio, handle).

    No TCA_KIND and protocol 0 ("any"): the kernel then finds the filter by
    prio and handle whatever its classifier and protocol, so foreign rules
    can be deleted too.  Handle 0 deletes the whole (prio, protocol)
    classifier instance -- how dump() reports classifiers of another kind.
    """
    from testbed.tc import flower

    msg = flower.tcmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"], msg["parent"] = target(rule, dev_index)
    msg["handle"] = rule.handle
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
_OPT_TYPE = {name: num for num, name, _ in uapi.FLOWER_OPTIONS}
_TCMSG = struct.Struct("=BBHIIII")
_NLA = struct.Struct("=HH")
NLA_FORMATS = {"be16": ">H", "uint8": "B", "uint32": "=I"}  # pyroute2 type -> struct
STRING_FORMATS = ("asciiz",)
_OPT_FMT = {name: NLA_FORMATS.get(fmt) for _, name, fmt in uapi.FLOWER_OPTIONS}
_STRING_OPTS = {name for _, name, fmt in uapi.FLOWER_OPTIONS if fmt in STRING_FORMATS}
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
    if name in _STRING_OPTS:
        return _nla(_OPT_TYPE[name], value.encode() + b"\0")  # type: ignore[attr-defined]
    if fmt is None:
        return _addr_opt(name, value)  # type: ignore[arg-type]
    return _nla(_OPT_TYPE[name], struct.pack(fmt, value))


@lru_cache(maxsize=8192)
def _action_body(kind: str, ingress: bool, chain: Optional[int], dev_index: int) -> bytes:
    """TCA_ACT_KIND + TCA_ACT_OPTIONS of one action (``dev_index``: its mirred target's, else 0).

    Cached: a 256-VF plan holds ~66,000 mirror actions but only a few hundred distinct ones (keyed by
    plain values: an Action's generated hash and == are Python-level, ~10x a tuple's).
    """
    if kind in GACT or kind == "goto":
        verdict = gact_verdict(Action(kind, chain=chain))
        return _nla(1, b"gact\0") + _nla(2 | _NESTED, _nla(2, GACT_PARMS.pack(0, 0, verdict, 0, 0)))
    eaction, verdict = MIRRED[(kind, ingress)]
    parms = MIRRED_PARMS.pack(0, 0, verdict, 0, 0, eaction, dev_index)
    return _nla(1, b"mirred\0") + _nla(2 | _NESTED, _nla(2, parms))


def _pack_actions(rule: Rule, ifindex: Callable[[str], int]) -> bytes:
    cookie = _nla(6, rule.label.encode()) if rule.label else b""
    head = _NLA.pack
    out = []
    for order, a in enumerate(rule.actions, start=1):
        body = _action_body(a.kind, a.ingress, a.chain, 0 if a.dev is None else ifindex(a.dev)) + cookie
        out.append(head(4 + len(body), order | _NESTED) + body)  # every part is 4-aligned: no padding
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
        parts.append(_opt("TCA_FLOWER_FLAGS", uapi.TCA_CLS_FLAGS_SKIP_HW))
    if rule.actions:
        parts.append(_pack_actions(rule, ifindex))
    index, parent = target(rule, dev_index)
    head = _TCMSG.pack(socket.AF_UNSPEC, 0, 0, index, rule.handle, parent, filter_info(rule.prio))
    chain = _nla(11, struct.pack("=I", rule.chain)) if rule.chain else b""
    return head + _nla(1, b"flower\0") + chain + _nla(2 | _NESTED, b"".join(parts))


def pack_delete(rule: Rule, dev_index: int) -> bytes:
    """The body of encode_delete(rule, ...), built directly."""
    index, parent = target(rule, dev_index)
    head = _TCMSG.pack(socket.AF_UNSPEC, 0, 0, index, rule.handle, parent, filter_info(rule.prio, protocol=0))
    return head + (_nla(11, struct.pack("=I", rule.chain)) if rule.chain else b"")
