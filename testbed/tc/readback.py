"""Dumped flower filters -> InstalledRule (pure: no socket, no kernel).

Two readers fill one plain form, and one builder turns it into an
InstalledRule, in canonical.canonical() form so that it compares equal to the
Rule that was installed:

* ``decode()`` reads flower.py's pyroute2 classes -- the reference;
* ``unpack()`` walks the raw attributes with struct -- what ops.dump()
  uses, because pyroute2's decoder costs ~190 us per filter on the host and
  far more in the TCG guest (benchmarks/bench_tc.py: 7.7x slower there).

The unit tests check that both agree on kernel-made and encoded messages.
What Rule cannot express makes the rule foreign (label ``FOREIGN``, reasons
in ``InstalledRule.foreign``): another classifier kind, a protocol other
than ALL, an unmodelled key, flag or action, a cookie that is not UTF-8.
Counters are the first action's: every packet the rule matched passes it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Dict, List, Mapping, Optional, Tuple

from testbed.tc import uapi
from testbed.tc.canonical import FULL32, canonical_match
from testbed.tc.codec import (
    GACT,
    GACT_PARMS,
    HOOKS,
    IFNAMSIZ,
    MIRRED,
    MIRRED_PARMS,
    NLA_FORMATS,
    STRING_FORMATS,
)
from testbed.tc.rule import ETH_P_ALL, FOREIGN, Action, InstalledRule, Match, Rule

HDR_SIZE = 16  # struct nlmsghdr
_TCMSG = struct.Struct("=BBHIIII")
_NLA = struct.Struct("=HH")
_HOOK_OF = {parent: hook for hook, parent in HOOKS.items()}
MIRRED_BACK = {v: k for k, v in MIRRED.items()}
GACT_BACK = {v: k for k, v in GACT.items()}

# flower attributes the readers understand; anything else makes a rule foreign
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
    "TCA_FLOWER_INDEV",
}
_KNOWN_FLAGS = (
    uapi.TCA_CLS_FLAGS_SKIP_HW | uapi.TCA_CLS_FLAGS_IN_HW | uapi.TCA_CLS_FLAGS_NOT_IN_HW
)


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

_OPT_NAME = {num: name for num, name, _ in uapi.FLOWER_OPTIONS}
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


def _name_str(buf: bytes, a: int) -> str:
    """An interface name (NUL-terminated, at most IFNAMSIZ bytes with the NUL)."""
    return bytes(buf[a : a + IFNAMSIZ]).split(b"\0", 1)[0].decode(errors="replace")


_OPT_READ = {}
for _num, _name, _fmt in uapi.FLOWER_OPTIONS:
    if _fmt == "l2addr":
        _OPT_READ[_num] = _mac_str
    elif _fmt == "ip4addr":
        _OPT_READ[_num] = _ip_str(socket.AF_INET)
    elif _fmt == "ip6addr":
        _OPT_READ[_num] = _ip_str(socket.AF_INET6)
    elif _fmt in STRING_FORMATS:
        _OPT_READ[_num] = _name_str
    elif _fmt in NLA_FORMATS:
        _OPT_READ[_num] = (lambda st: lambda buf, a: st.unpack_from(buf, a)[0])(
            struct.Struct(NLA_FORMATS[_fmt])
        )
_BASIC = struct.Struct("=QI")
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")
_PARMS_ST = {"gact": GACT_PARMS, "mirred": MIRRED_PARMS}


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
            verdict = parms["action"] & FULL32
            if a["kind"] == "gact" and verdict & ~uapi.TC_ACT_EXT_VAL_MASK == uapi.TC_ACT_GOTO_CHAIN:
                actions.append(Action("goto", chain=verdict & uapi.TC_ACT_EXT_VAL_MASK))
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
        "indev": get("TCA_FLOWER_INDEV"),
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
    block = parent if index == uapi.TCM_IFINDEX_MAGIC_BLOCK else 0
    hook = "ingress" if block else _HOOK_OF.get(parent)
    if hook is None:
        foreign.append(f"parent {parent:#x}")
    base = dict(
        dev="" if block else ifname.get(index, f"#{index}"),
        hook=hook or "ingress",
        block=block,
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
        skip_hw=bool(flags & uapi.TCA_CLS_FLAGS_SKIP_HW),  # type: ignore[operator]
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
