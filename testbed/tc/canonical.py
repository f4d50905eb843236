"""The canonical form of a flower rule (pure): what the kernel reports back, what rules are compared in.

``canonical()`` normalizes keys and drops default masks (a MAC without a mask
comes back with ff:ff:ff:ff:ff:ff, a hash without a mask with 0xffffffff);
``mask_shape()`` says whether flower can replace one rule by another in
place; ``where()`` is how messages name a rule.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import replace
from functools import lru_cache
from typing import Optional, Tuple

from testbed.errors import NetlinkOpError
from testbed.tc.rule import ETH_P_ALL, Match, Rule

FULL_MAC = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"
FULL32 = 0xFFFFFFFF


def where(rule: Rule) -> str:
    """How messages name a rule: ``pf0 ingress prio 10 handle 3 [vf0-rx]``, ``block 2 chain 1 prio 3 ...``."""
    chain = f" chain {rule.chain}" if rule.chain else ""
    label = f" [{rule.label}]" if rule.label else ""
    return f"{place(rule)}{chain} prio {rule.prio} handle {rule.handle}{label}"


def place(rule: Rule) -> str:
    """Where a rule sits: ``pf0 ingress`` or ``block 2`` (the one spelling status and messages use)."""
    return f"block {rule.block}" if rule.block else f"{rule.dev} {rule.hook}"


def invalid(rule: Rule, what: str, fix: str) -> NetlinkOpError:
    return NetlinkOpError(f"{where(rule)}: {what}", errno=errno.EINVAL, fix=fix)


# --- canonical form ---------------------------------------------------------


@lru_cache(maxsize=4096)
def parse_mac(value: str) -> str:
    octets = value.split(":")
    if len(octets) != 6:
        raise ValueError(value)
    return ":".join(f"{int(o, 16):02x}" for o in octets)


def _mac_pair(mac: Optional[str], mask: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    if mac is None and mask is None:
        return None, None
    mask = FULL_MAC if mask is None else parse_mac(mask)
    if mask == ZERO_MAC:
        return None, None
    mac = ZERO_MAC if mac is None else parse_mac(mac)
    return mac, (None if mask == FULL_MAC else mask)


@lru_cache(maxsize=4096)
def parse_iface(value: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    return ipaddress.ip_interface(value)


def _ip(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    iface = parse_iface(value)
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
        indev=m.indev,
    )


def canonical(rule: Rule) -> Rule:
    """The rule as the kernel will report it back (keys normalized, default masks dropped).

    Raises NetlinkOpError (EINVAL) if a MAC or IP string does not parse.
    """
    try:
        match = canonical_match(rule.match)
    except ValueError as exc:
        raise invalid(
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
        iface = parse_iface(value)
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
        c.indev is not None,
    )
