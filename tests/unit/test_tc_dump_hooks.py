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


def test_ensure_clsacts_adds_the_missing_in_one_batch_over_one_link_dump(monkeypatch):
    """The missing clsacts go in one pipelined transact; a device bound otherwise, or whose add was refused,
    goes through ensure_clsact (rebind, or its error) with the same link table -- one link dump in all."""
    links = {"pf0": 2, "vf0-rep": 3, "vf1-rep": 4, "vf2-rep": 5}
    dumps, batches, single = [], [], []
    monkeypatch.setattr(nlpipe, "link_index", lambda ipr: dumps.append(1) or dict(links))

    def transact(ipr, requests, window=64, ack_each=False):
        batch = list(requests)
        batches.append([ops._TCMSG.unpack_from(body)[1] for _, _, body in batch])
        return [nlpipe.Reply(17 if ops._TCMSG.unpack_from(body)[1] == 5 else 0, "") for _, _, body in batch]

    monkeypatch.setattr(nlpipe, "transact", transact)
    monkeypatch.setattr(ops, "ensure_clsact", lambda ipr, dev, i=0, e=0, links=None: single.append((dev, i, e, links)))
    want = {"pf0": (2, 0), "vf0-rep": (1, 0), "vf1-rep": (1, 0), "vf2-rep": (1, 0)}
    ops.ensure_clsacts(None, want, {"pf0": (0, 0)})  # pf0 bound otherwise; vf2-rep's add is refused (EEXIST)
    assert dumps == [1] and batches == [[3, 4, 5]]
    assert single == [("pf0", 2, 0, links), ("vf2-rep", 1, 0, links)]
    ops.ensure_clsacts(None, {}, {})
    assert dumps == [1], "nothing to bind: no dump at all"
