"""Flower rules as plain data: what the agent decides and the tc layer installs.

A rule sits on the ingress (or egress) hook of a clsact qdisc of one interface, in the
namespace of that interface -- or, with ``block`` set, in a shared filter block
that the clsact hooks of many interfaces are bound to (``ingress_block N``; the
kernel then refuses filters addressed to the interfaces themselves).  Its identity
in the kernel is (dev, hook, block, chain, prio, handle); everything else is its
content.  Comparing two ``Rule`` objects with
``==`` tells whether the kernel's copy needs replacing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_SLOW = 0x8809  # LACPDU
ROCEV2_PORT = 4791

# A rule's identity in the kernel: (dev, hook, block, chain, prio, handle)
Key = Tuple[str, str, int, int, int, int]

# Label of a rule read back from the kernel that testbed cannot reproduce
# (another classifier, a key or action it does not model).  Never a valid
# label for a rule to install, so such a rule never equals a desired one.
FOREIGN = "foreign"


@dataclass(frozen=True)
class Match:
    """Flower keys.  ``None`` means "not matched"."""

    eth_type: int | None = None
    dst_mac: str | None = None
    dst_mac_mask: str | None = None
    src_mac: str | None = None
    src_mac_mask: str | None = None
    ip_proto: int | None = None
    src_ip: str | None = None  # "198.18.0.1" or "198.18.0.0/24" (v4 or v6)
    dst_ip: str | None = None
    src_port: int | None = None
    dst_port: int | None = None
    hash: int | None = None  # skb->hash & hash_mask == hash
    hash_mask: int | None = None
    indev: str | None = None  # the interface the frame arrived on (a shared block's filters)


@dataclass(frozen=True)
class Action:
    """One tc action: ``redirect``/``mirror`` (mirred to ``dev``), ``drop``, ``pass``,
    ``continue`` (gact TC_ACT_UNSPEC: go on with the next prio), ``goto`` (gact
    TC_ACT_GOTO_CHAIN: classification goes on in ``chain`` of the same block).

    ``ingress=True`` makes mirred deliver into ``dev``'s ingress (as if received
    there) instead of transmitting from it: the eswitch loopback into the bond.
    """

    kind: str
    dev: str | None = None
    ingress: bool = False
    chain: int | None = None  # ``goto`` only


@dataclass(frozen=True)
class Rule:
    dev: str  # "" for a rule in a shared block
    prio: int
    handle: int
    match: Match
    actions: Tuple[Action, ...]
    chain: int = 0
    hook: str = "ingress"  # clsact hook: "ingress" or "egress"; a block's rules: "ingress" (the binding decides)
    block: int = 0  # > 0: the rule lives in shared block ``block`` (dev ""), not on a device
    skip_hw: bool = True
    # human label, stored in the kernel as the action cookie so a dump reads it back
    label: str = field(default="", compare=True)

    @property
    def key(self) -> Key:
        return (self.dev, self.hook, self.block, self.chain, self.prio, self.handle)


@dataclass(frozen=True)
class InstalledRule:
    """A rule as read back from the kernel, with its counters."""

    rule: Rule
    packets: int = 0
    bytes: int = 0
    # what the kernel's copy holds that Rule cannot express ("kind u32",
    # "TCA_FLOWER_KEY_VLAN_ID", "action vlan", ...); empty for our own rules.
    # Non-empty exactly when rule.label == FOREIGN.
    foreign: Tuple[str, ...] = ()
