"""Numbers of the tc netlink interface we use, from the kernel's uapi headers (``pkt_cls.h``,
``pkt_sched.h``, ``rtnetlink.h``, ``tc_act/tc_mirred.h``): plain Python, no netlink library.

``codec`` (write) and ``readback`` (read) work from these alone, so ``testbed status`` and the agent's
event path read and write rules without importing pyroute2 (whose import alone costs ~3.7x a bare
interpreter start in the TCG guest). ``flower`` declares the same formats as pyroute2 classes: the
reference encoder and decoder the unit tests check the fast ones against.
"""

from __future__ import annotations

# --- tc handles (include/uapi/linux/pkt_sched.h) -----------------------------
TC_H_CLSACT = 0xFFFFFFF1  # == TC_H_INGRESS: parent of the clsact/ingress qdisc
TC_H_MIN_INGRESS = 0xFFF2
TC_H_MIN_EGRESS = 0xFFF3
CLSACT_HANDLE = 0xFFFF0000
INGRESS_PARENT = (TC_H_CLSACT & 0xFFFF0000) | TC_H_MIN_INGRESS  # ffff:fff2
EGRESS_PARENT = (TC_H_CLSACT & 0xFFFF0000) | TC_H_MIN_EGRESS  # ffff:fff3
# tcm_ifindex of a filter addressed to a shared block (rtnetlink.h); tcm_parent
# then holds the block index (the union's tcm_block_index)
TCM_IFINDEX_MAGIC_BLOCK = 0xFFFFFFFF

# --- filter flags (TCA_FLOWER_FLAGS, pkt_cls.h) -------------------------------
TCA_CLS_FLAGS_SKIP_HW = 1 << 0
TCA_CLS_FLAGS_SKIP_SW = 1 << 1
TCA_CLS_FLAGS_IN_HW = 1 << 2  # set by the kernel in dumps
TCA_CLS_FLAGS_NOT_IN_HW = 1 << 3  # set by the kernel in dumps
TCA_CLS_FLAGS_VERBOSE = 1 << 4

# --- action verdicts (pkt_cls.h) ----------------------------------------------
TC_ACT_UNSPEC = -1  # "continue": classification goes on with the next filter
TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_PIPE = 3
TC_ACT_STOLEN = 4
# extended verdicts: opcode in the top 4 bits, value below (pkt_cls.h __TC_ACT_EXT)
TC_ACT_EXT_VAL_MASK = (1 << 28) - 1
TC_ACT_GOTO_CHAIN = 2 << 28  # | chain index

# --- mirred (tc_act/tc_mirred.h) ----------------------------------------------
TCA_EGRESS_REDIR = 1
TCA_EGRESS_MIRROR = 2
TCA_INGRESS_REDIR = 3
TCA_INGRESS_MIRROR = 4

TC_COOKIE_MAX_SIZE = 16  # bytes of TCA_ACT_COOKIE
TCA_ACT_MAX_PRIO = 32  # actions per filter


# TCA_OPTIONS of a flower filter (enum TCA_FLOWER_*, pkt_cls.h): (number, name, format). Typed entries are
# the keys codec.py reads and writes; ``hex`` entries are only named so that a dump of someone else's rule
# says what it holds. Byte order: ``be16``/``be32`` keys are network order on the wire, the ``uint32`` ones
# (flags, hash) host order, as the kernel's policy says. Numbered explicitly, so an attribute the kernel adds
# later decodes as unknown instead of shifting its neighbours. (The formats are pyroute2's type names:
# ``flower.options`` is this table.)
FLOWER_OPTIONS = (
    (0, 'TCA_FLOWER_UNSPEC', 'none'),
    (1, 'TCA_FLOWER_CLASSID', 'uint32'),
    (2, 'TCA_FLOWER_INDEV', 'asciiz'),
    (3, 'TCA_FLOWER_ACT', 'tca_act_prio'),
    (4, 'TCA_FLOWER_KEY_ETH_DST', 'l2addr'),
    (5, 'TCA_FLOWER_KEY_ETH_DST_MASK', 'l2addr'),
    (6, 'TCA_FLOWER_KEY_ETH_SRC', 'l2addr'),
    (7, 'TCA_FLOWER_KEY_ETH_SRC_MASK', 'l2addr'),
    (8, 'TCA_FLOWER_KEY_ETH_TYPE', 'be16'),
    (9, 'TCA_FLOWER_KEY_IP_PROTO', 'uint8'),
    (10, 'TCA_FLOWER_KEY_IPV4_SRC', 'ip4addr'),
    (11, 'TCA_FLOWER_KEY_IPV4_SRC_MASK', 'ip4addr'),
    (12, 'TCA_FLOWER_KEY_IPV4_DST', 'ip4addr'),
    (13, 'TCA_FLOWER_KEY_IPV4_DST_MASK', 'ip4addr'),
    (14, 'TCA_FLOWER_KEY_IPV6_SRC', 'ip6addr'),
    (15, 'TCA_FLOWER_KEY_IPV6_SRC_MASK', 'ip6addr'),
    (16, 'TCA_FLOWER_KEY_IPV6_DST', 'ip6addr'),
    (17, 'TCA_FLOWER_KEY_IPV6_DST_MASK', 'ip6addr'),
    (18, 'TCA_FLOWER_KEY_TCP_SRC', 'be16'),
    (19, 'TCA_FLOWER_KEY_TCP_DST', 'be16'),
    (20, 'TCA_FLOWER_KEY_UDP_SRC', 'be16'),
    (21, 'TCA_FLOWER_KEY_UDP_DST', 'be16'),
    (22, 'TCA_FLOWER_FLAGS', 'uint32'),
    (23, 'TCA_FLOWER_KEY_VLAN_ID', 'hex'),
    (24, 'TCA_FLOWER_KEY_VLAN_PRIO', 'hex'),
    (25, 'TCA_FLOWER_KEY_VLAN_ETH_TYPE', 'hex'),
    (26, 'TCA_FLOWER_KEY_ENC_KEY_ID', 'hex'),
    (27, 'TCA_FLOWER_KEY_ENC_IPV4_SRC', 'hex'),
    (28, 'TCA_FLOWER_KEY_ENC_IPV4_SRC_MASK', 'hex'),
    (29, 'TCA_FLOWER_KEY_ENC_IPV4_DST', 'hex'),
    (30, 'TCA_FLOWER_KEY_ENC_IPV4_DST_MASK', 'hex'),
    (31, 'TCA_FLOWER_KEY_ENC_IPV6_SRC', 'hex'),
    (32, 'TCA_FLOWER_KEY_ENC_IPV6_SRC_MASK', 'hex'),
    (33, 'TCA_FLOWER_KEY_ENC_IPV6_DST', 'hex'),
    (34, 'TCA_FLOWER_KEY_ENC_IPV6_DST_MASK', 'hex'),
    (35, 'TCA_FLOWER_KEY_TCP_SRC_MASK', 'be16'),
    (36, 'TCA_FLOWER_KEY_TCP_DST_MASK', 'be16'),
    (37, 'TCA_FLOWER_KEY_UDP_SRC_MASK', 'be16'),
    (38, 'TCA_FLOWER_KEY_UDP_DST_MASK', 'be16'),
    (39, 'TCA_FLOWER_KEY_SCTP_SRC_MASK', 'hex'),
    (40, 'TCA_FLOWER_KEY_SCTP_DST_MASK', 'hex'),
    (41, 'TCA_FLOWER_KEY_SCTP_SRC', 'hex'),
    (42, 'TCA_FLOWER_KEY_SCTP_DST', 'hex'),
    (43, 'TCA_FLOWER_KEY_ENC_UDP_SRC_PORT', 'hex'),
    (44, 'TCA_FLOWER_KEY_ENC_UDP_SRC_PORT_MASK', 'hex'),
    (45, 'TCA_FLOWER_KEY_ENC_UDP_DST_PORT', 'hex'),
    (46, 'TCA_FLOWER_KEY_ENC_UDP_DST_PORT_MASK', 'hex'),
    (47, 'TCA_FLOWER_KEY_FLAGS', 'hex'),
    (48, 'TCA_FLOWER_KEY_FLAGS_MASK', 'hex'),
    (49, 'TCA_FLOWER_KEY_ICMPV4_CODE', 'hex'),
    (50, 'TCA_FLOWER_KEY_ICMPV4_CODE_MASK', 'hex'),
    (51, 'TCA_FLOWER_KEY_ICMPV4_TYPE', 'hex'),
    (52, 'TCA_FLOWER_KEY_ICMPV4_TYPE_MASK', 'hex'),
    (53, 'TCA_FLOWER_KEY_ICMPV6_CODE', 'hex'),
    (54, 'TCA_FLOWER_KEY_ICMPV6_CODE_MASK', 'hex'),
    (55, 'TCA_FLOWER_KEY_ICMPV6_TYPE', 'hex'),
    (56, 'TCA_FLOWER_KEY_ICMPV6_TYPE_MASK', 'hex'),
    (57, 'TCA_FLOWER_KEY_ARP_SIP', 'hex'),
    (58, 'TCA_FLOWER_KEY_ARP_SIP_MASK', 'hex'),
    (59, 'TCA_FLOWER_KEY_ARP_TIP', 'hex'),
    (60, 'TCA_FLOWER_KEY_ARP_TIP_MASK', 'hex'),
    (61, 'TCA_FLOWER_KEY_ARP_OP', 'hex'),
    (62, 'TCA_FLOWER_KEY_ARP_OP_MASK', 'hex'),
    (63, 'TCA_FLOWER_KEY_ARP_SHA', 'hex'),
    (64, 'TCA_FLOWER_KEY_ARP_SHA_MASK', 'hex'),
    (65, 'TCA_FLOWER_KEY_ARP_THA', 'hex'),
    (66, 'TCA_FLOWER_KEY_ARP_THA_MASK', 'hex'),
    (67, 'TCA_FLOWER_KEY_MPLS_TTL', 'hex'),
    (68, 'TCA_FLOWER_KEY_MPLS_BOS', 'hex'),
    (69, 'TCA_FLOWER_KEY_MPLS_TC', 'hex'),
    (70, 'TCA_FLOWER_KEY_MPLS_LABEL', 'hex'),
    (71, 'TCA_FLOWER_KEY_TCP_FLAGS', 'hex'),
    (72, 'TCA_FLOWER_KEY_TCP_FLAGS_MASK', 'hex'),
    (73, 'TCA_FLOWER_KEY_IP_TOS', 'hex'),
    (74, 'TCA_FLOWER_KEY_IP_TOS_MASK', 'hex'),
    (75, 'TCA_FLOWER_KEY_IP_TTL', 'hex'),
    (76, 'TCA_FLOWER_KEY_IP_TTL_MASK', 'hex'),
    (77, 'TCA_FLOWER_KEY_CVLAN_ID', 'hex'),
    (78, 'TCA_FLOWER_KEY_CVLAN_PRIO', 'hex'),
    (79, 'TCA_FLOWER_KEY_CVLAN_ETH_TYPE', 'hex'),
    (80, 'TCA_FLOWER_KEY_ENC_IP_TOS', 'hex'),
    (81, 'TCA_FLOWER_KEY_ENC_IP_TOS_MASK', 'hex'),
    (82, 'TCA_FLOWER_KEY_ENC_IP_TTL', 'hex'),
    (83, 'TCA_FLOWER_KEY_ENC_IP_TTL_MASK', 'hex'),
    (84, 'TCA_FLOWER_KEY_ENC_OPTS', 'hex'),
    (85, 'TCA_FLOWER_KEY_ENC_OPTS_MASK', 'hex'),
    (86, 'TCA_FLOWER_IN_HW_COUNT', 'uint32'),
    (87, 'TCA_FLOWER_KEY_PORT_SRC_MIN', 'hex'),
    (88, 'TCA_FLOWER_KEY_PORT_SRC_MAX', 'hex'),
    (89, 'TCA_FLOWER_KEY_PORT_DST_MIN', 'hex'),
    (90, 'TCA_FLOWER_KEY_PORT_DST_MAX', 'hex'),
    (91, 'TCA_FLOWER_KEY_CT_STATE', 'hex'),
    (92, 'TCA_FLOWER_KEY_CT_STATE_MASK', 'hex'),
    (93, 'TCA_FLOWER_KEY_CT_ZONE', 'hex'),
    (94, 'TCA_FLOWER_KEY_CT_ZONE_MASK', 'hex'),
    (95, 'TCA_FLOWER_KEY_CT_MARK', 'hex'),
    (96, 'TCA_FLOWER_KEY_CT_MARK_MASK', 'hex'),
    (97, 'TCA_FLOWER_KEY_CT_LABELS', 'hex'),
    (98, 'TCA_FLOWER_KEY_CT_LABELS_MASK', 'hex'),
    (99, 'TCA_FLOWER_KEY_MPLS_OPTS', 'hex'),
    (100, 'TCA_FLOWER_KEY_HASH', 'uint32'),
    (101, 'TCA_FLOWER_KEY_HASH_MASK', 'uint32'),
    (102, 'TCA_FLOWER_KEY_NUM_OF_VLANS', 'hex'),
    (103, 'TCA_FLOWER_KEY_PPPOE_SID', 'hex'),
    (104, 'TCA_FLOWER_KEY_PPP_PROTO', 'hex'),
    (105, 'TCA_FLOWER_KEY_L2TPV3_SID', 'hex'),
)
