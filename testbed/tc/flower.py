"""Wire format of tc flower filters and the actions we use, as pyroute2 netlink classes.

pyroute2 0.9.7 has no flower classifier, and its action and tcmsg maps stop
before attributes we need (TCA_ACT_COOKIE, TCA_STATS_PKT64, TCA_CHAIN).  This
module only declares formats (the numbers are ``uapi``'s), in the style of pyroute2's
``netlink/rtnl/ifinfmsg/plugins/bond.py``: ``nla_map`` tables whose numbers
come from the kernel's uapi headers (``include/uapi/linux/pkt_cls.h``,
``gen_stats.h``, ``rtnetlink.h``).  Which attributes a Rule becomes lives in
``codec.py`` (and back: ``readback.py``); talking to the kernel lives in
``nlpipe.py`` and ``ops.py``.

Every table is numbered explicitly, so an attribute the kernel adds later
decodes as ``UNKNOWN`` instead of shifting its neighbours.
"""

from __future__ import annotations

from pyroute2.netlink import NLA_F_NESTED, nla, nlmsg
from pyroute2.netlink.rtnl.tcmsg import act_gact, act_mirred
from pyroute2.netlink.rtnl.tcmsg import plugins as tc_plugins

from testbed.tc.uapi import (  # noqa: F401 - the numbers re-exported beside the classes that use them
    CLSACT_HANDLE,
    EGRESS_PARENT,
    FLOWER_OPTIONS,
    INGRESS_PARENT,
    TC_ACT_EXT_VAL_MASK,
    TC_ACT_GOTO_CHAIN,
    TC_ACT_OK,
    TC_ACT_PIPE,
    TC_ACT_SHOT,
    TC_ACT_STOLEN,
    TC_ACT_UNSPEC,
    TC_COOKIE_MAX_SIZE,
    TC_H_CLSACT,
    TC_H_MIN_EGRESS,
    TC_H_MIN_INGRESS,
    TCA_ACT_MAX_PRIO,
    TCA_CLS_FLAGS_IN_HW,
    TCA_CLS_FLAGS_NOT_IN_HW,
    TCA_CLS_FLAGS_SKIP_HW,
    TCA_CLS_FLAGS_SKIP_SW,
    TCA_CLS_FLAGS_VERBOSE,
    TCA_EGRESS_MIRROR,
    TCA_EGRESS_REDIR,
    TCA_INGRESS_MIRROR,
    TCA_INGRESS_REDIR,
    TCM_IFINDEX_MAGIC_BLOCK,
)


class stats2(nla):
    """TCA_ACT_STATS / TCA_STATS2 (gen_stats.h).

    ``TCA_STATS_BASIC`` holds 32-bit packets; the kernel adds
    ``TCA_STATS_PKT64`` when the count no longer fits.
    """

    nla_flags = NLA_F_NESTED
    nla_map = (
        (0, 'TCA_STATS_UNSPEC', 'none'),
        (1, 'TCA_STATS_BASIC', 'basic'),
        (2, 'TCA_STATS_RATE_EST', 'rate_est'),
        (3, 'TCA_STATS_QUEUE', 'queue'),
        (4, 'TCA_STATS_APP', 'hex'),
        (5, 'TCA_STATS_RATE_EST64', 'rate_est64'),
        (6, 'TCA_STATS_PAD', 'none'),
        (7, 'TCA_STATS_BASIC_HW', 'basic'),
        (8, 'TCA_STATS_PKT64', 'uint64'),
    )

    class basic(nla):  # struct gnet_stats_basic (the kernel pads it to 16 bytes)
        fields = (('bytes', 'Q'), ('packets', 'I'))

    class rate_est(nla):
        fields = (('bps', 'I'), ('pps', 'I'))

    class rate_est64(nla):
        fields = (('bps', 'Q'), ('pps', 'Q'))

    class queue(nla):
        fields = (
            ('qlen', 'I'),
            ('backlog', 'I'),
            ('drops', 'I'),
            ('requeues', 'I'),
            ('overlimits', 'I'),
        )


# action kinds whose TCA_ACT_OPTIONS we decode; pyroute2's own classes
ACT_OPTIONS = {
    'gact': act_gact.options,  # TCA_GACT_PARMS: struct tc_gact
    'mirred': act_mirred.options,  # TCA_MIRRED_PARMS: struct tc_mirred
}


class tca_act(nla):
    """One action (enum TCA_ACT_*, pkt_cls.h); pyroute2's map stops at TCA_ACT_STATS."""

    nla_flags = NLA_F_NESTED
    nla_map = (
        (0, 'TCA_ACT_UNSPEC', 'none'),
        (1, 'TCA_ACT_KIND', 'asciiz'),
        (2, 'TCA_ACT_OPTIONS', 'get_act_options'),
        (3, 'TCA_ACT_INDEX', 'uint32'),
        (4, 'TCA_ACT_STATS', 'stats2'),
        (5, 'TCA_ACT_PAD', 'none'),
        (6, 'TCA_ACT_COOKIE', 'cdata'),
        (7, 'TCA_ACT_FLAGS', 'hex'),  # nla_bitfield32
        (8, 'TCA_ACT_HW_STATS', 'hex'),  # nla_bitfield32
        (9, 'TCA_ACT_USED_HW_STATS', 'hex'),  # nla_bitfield32
        (10, 'TCA_ACT_IN_HW_COUNT', 'uint32'),
    )

    stats2 = stats2

    @staticmethod
    def get_act_options(self, *argv, **kwarg):
        return ACT_OPTIONS.get(self.get_attr('TCA_ACT_KIND'), self.hex)


class tca_act_prio(nla):
    """TCA_FLOWER_ACT: actions nested by order, attribute type = order (1..32)."""

    nla_flags = NLA_F_NESTED
    nla_map = tuple(
        (i, f'TCA_ACT_PRIO_{i}', 'none' if i == 0 else 'tca_act')
        for i in range(TCA_ACT_MAX_PRIO + 1)
    )

    tca_act = tca_act


class options(nla):
    """TCA_OPTIONS of a flower filter (enum TCA_FLOWER_*, pkt_cls.h): ``uapi.FLOWER_OPTIONS``."""

    nla_flags = NLA_F_NESTED
    nla_map = FLOWER_OPTIONS

    tca_act_prio = tca_act_prio


class tcmsg(nlmsg):
    """RTM_{NEW,DEL,GET}TFILTER (struct tcmsg + enum TCA_*, rtnetlink.h).

    Like pyroute2's ``tcmsg`` but with the attributes after TCA_STAB (TCA_CHAIN
    above all) and flower's options; other classifier kinds decode with
    pyroute2's own plugins.  A separate class rather than a subclass: pyroute2
    caches compiled nla tables per class and a subclass could inherit its
    parent's table.
    """

    prefix = 'TCA_'

    fields = (
        ('family', 'B'),
        ('pad1', 'B'),
        ('pad2', 'H'),
        ('index', 'I'),  # the kernel's int; unsigned here so TCM_IFINDEX_MAGIC_BLOCK reads 0xffffffff
        ('handle', 'I'),
        ('parent', 'I'),
        ('info', 'I'),  # prio << 16 | htons(protocol)
    )

    nla_map = (
        (0, 'TCA_UNSPEC', 'none'),
        (1, 'TCA_KIND', 'asciiz'),
        (2, 'TCA_OPTIONS', 'get_options'),
        (3, 'TCA_STATS', 'hex'),
        (4, 'TCA_XSTATS', 'hex'),
        (5, 'TCA_RATE', 'hex'),
        (6, 'TCA_FCNT', 'hex'),
        (7, 'TCA_STATS2', 'stats2'),
        (8, 'TCA_STAB', 'hex'),
        (9, 'TCA_PAD', 'none'),
        (10, 'TCA_DUMP_INVISIBLE', 'flag'),
        (11, 'TCA_CHAIN', 'uint32'),
        (12, 'TCA_HW_OFFLOAD', 'uint8'),
        (13, 'TCA_INGRESS_BLOCK', 'uint32'),
        (14, 'TCA_EGRESS_BLOCK', 'uint32'),
        (15, 'TCA_DUMP_FLAGS', 'hex'),
        (16, 'TCA_EXT_WARN_MSG', 'asciiz'),
    )

    stats2 = stats2

    @staticmethod
    def get_options(self, *argv, **kwarg):
        kind = self.get_attr('TCA_KIND')
        if kind == 'flower':
            return options
        plugin = tc_plugins.get(kind)
        return getattr(plugin, 'options', self.hex)
