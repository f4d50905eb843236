"""ops.dump does not dump a clsact hook bound to a shared block (its filters are the block's, reported once)."""

from __future__ import annotations

import struct

from testbed import nlpipe, rawnl
from testbed.tc import flower, ops


def qdisc(index: int, ingress_block: int = 0, egress_block: int = 0) -> bytes:
    """A dumped clsact qdisc as the kernel sends it (an unshared block is omitted)."""
    body = ops._TCMSG.pack(0, index, flower.CLSACT_HANDLE, flower.TC_H_CLSACT, 0)
    body += struct.pack("=HH", 11, ops.TCA_KIND) + b"clsact\0\0"
    for nla_type, block in ((ops.TCA_INGRESS_BLOCK, ingress_block), (ops.TCA_EGRESS_BLOCK, egress_block)):
        if block:
            body += struct.pack("=HHI", 8, nla_type, block)
    return rawnl.header(len(body), ops.RTM_NEWQDISC, 0, 1) + body


def test_dump_skips_hooks_bound_to_a_block(monkeypatch):
    links = {"pf0": 2, "vf0-rep": 3, "vf1-rep": 4}
    asked = []

    def dump(ipr, msg_type, body, what):
        if msg_type == ops.RTM_GETQDISC:
            return [qdisc(2, ingress_block=2), qdisc(3, ingress_block=1)]  # vf1-rep: no clsact
        _, index, _, parent, _ = ops._TCMSG.unpack(body)
        asked.append((index, parent))
        return []

    monkeypatch.setattr(nlpipe, "link_index", lambda ipr: dict(links))
    monkeypatch.setattr(nlpipe, "dump", dump)
    assert ops.dump(None, ["pf0", "vf0-rep", "vf1-rep"], [1, 2]) == []
    magic = flower.TCM_IFINDEX_MAGIC_BLOCK
    assert asked == [(2, flower.EGRESS_PARENT), (3, flower.EGRESS_PARENT),
                     (4, flower.INGRESS_PARENT), (4, flower.EGRESS_PARENT), (magic, 1), (magic, 2)]
    assert ops.clsact_blocks(None) == {"pf0": (2, 0), "vf0-rep": (1, 0)}
