"""Install, read back and reconcile flower rules in one namespace.

Every function takes an open rtnetlink socket -- a pyroute2 ``IPRoute``, or a plain non-blocking
``socket`` (``nl.route_socket``: what ``testbed status`` uses, importing no pyroute2); the caller opens it in the
namespace the interfaces live in.  Interface names are resolved there (one
link dump per call).  Requests are pipelined (nlpipe.py): many per sendmsg,
acks matched afterwards, which is what makes ``apply()`` faster than
``tc -batch``.  For bulk work prefer ``IPRoute(groups=0)``: a default IPRoute
also hears a notification for every filter it changes.

What ``dump()`` returns for rules testbed did not write: they are *not*
dropped and do not raise; each comes back as a Rule labelled
``rule.FOREIGN`` with ``InstalledRule.foreign`` naming what was not
understood.  Such a Rule never equals a desired one, so ``diff()`` removes
or rewrites it (by delete + add, since it may be another classifier kind).
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

from testbed import nlpipe, rawnl
from testbed.errors import ConflictError, NetlinkOpError
from testbed.tc import canonical, codec, readback, uapi
from testbed.tc.rule import FOREIGN, InstalledRule, Rule

RTM_NEWQDISC = 36
RTM_DELQDISC = 37
RTM_GETQDISC = 38
RTM_NEWTFILTER = 44
RTM_DELTFILTER = 45
RTM_GETTFILTER = 46
TCA_KIND = 1
TCA_INGRESS_BLOCK = 13
TCA_EGRESS_BLOCK = 14
_TCMSG = struct.Struct("=BxxxIIII")
_U32 = struct.Struct("=I")
Blocks = Tuple[int, int]  # (ingress block, egress block) a clsact is bound to; 0: its own

ADD_FLAGS = nlpipe.NLM_F_CREATE | nlpipe.NLM_F_EXCL
REPLACE_FLAGS = nlpipe.NLM_F_CREATE | nlpipe.NLM_F_REPLACE
WINDOW = 64  # requests per sendmsg; see benchmarks/bench_tc.py


def _links(ipr) -> Dict[str, int]:
    return nlpipe.link_index(ipr)


def _index(links: Dict[str, int], name: Optional[str], what: str) -> int:
    try:
        return links[name]  # type: ignore[index]
    except KeyError:
        raise NetlinkOpError(
            f"{what}: no interface {name!r} in this namespace",
            errno=errno.ENODEV,
            fix="create it first, or open the IPRoute in the namespace that holds it",
        ) from None


def _kind_of(msg: bytes) -> Tuple[int, int, Optional[str]]:
    """(ifindex, handle, TCA_KIND) of a raw tc message."""
    _, index, handle, _, _ = _TCMSG.unpack_from(msg, rawnl.HDR.size)
    return index, handle, rawnl.attr_str(msg, rawnl.HDR.size + _TCMSG.size, TCA_KIND)


def _blocks_of(msg: bytes) -> Blocks:
    """(TCA_INGRESS_BLOCK, TCA_EGRESS_BLOCK) of a dumped qdisc; the kernel omits an unshared (0) one."""
    found = {TCA_INGRESS_BLOCK: 0, TCA_EGRESS_BLOCK: 0}
    for nla_type, payload in rawnl.attrs(msg, rawnl.HDR.size + _TCMSG.size):
        if nla_type in found and len(payload) >= 4:
            found[nla_type] = _U32.unpack_from(payload)[0]
    return found[TCA_INGRESS_BLOCK], found[TCA_EGRESS_BLOCK]


# --- clsact -----------------------------------------------------------------


def _clsact_body(index: int, blocks: Blocks) -> bytes:
    body = _TCMSG.pack(socket.AF_UNSPEC, index, uapi.CLSACT_HANDLE, uapi.TC_H_CLSACT, 0)
    body += struct.pack("=HH", 11, TCA_KIND) + b"clsact\0\0"
    for nla_type, block in ((TCA_INGRESS_BLOCK, blocks[0]), (TCA_EGRESS_BLOCK, blocks[1])):
        if block:
            body += struct.pack("=HHI", 8, nla_type, block)
    return body


def ensure_clsact(ipr, ifname: str, ingress_block: int = 0, egress_block: int = 0,
                  links: Optional[Dict[str, int]] = None) -> None:
    """Give ``ifname`` a clsact qdisc bound to these shared blocks (0: its own) unless it has one (idempotent).

    The kernel cannot rebind a qdisc ("Change of blocks is not supported"): a
    clsact bound otherwise is deleted and added again, and the filters on its
    own hooks go with it (the caller dumps afterwards).  Raises ConflictError
    if another qdisc (e.g. ``ingress``) holds ffff:.  ``links``: name -> ifindex
    if the caller has it (else one link dump).
    """
    index = _index(_links(ipr) if links is None else links, ifname, "ensure_clsact")
    want = (ingress_block, egress_block)
    (reply,) = nlpipe.transact(ipr, [(RTM_NEWQDISC, ADD_FLAGS, _clsact_body(index, want))])
    if reply.errno == 0:
        return
    if reply.errno == errno.EEXIST:
        query = _TCMSG.pack(socket.AF_UNSPEC, index, 0, 0, 0)
        for msg in nlpipe.dump(ipr, RTM_GETQDISC, query, f"qdiscs of {ifname}"):
            q_index, handle, kind = _kind_of(msg)
            if q_index == index and handle == uapi.CLSACT_HANDLE:
                if kind != "clsact":
                    raise ConflictError(
                        f"{ifname}: qdisc ffff: is {kind!r}, not clsact",
                        fix=f"tc qdisc del dev {ifname} handle ffff: (if nothing else needs it)",
                    )
                if _blocks_of(msg) == want:
                    return
                _rebind(ipr, ifname, index, want)
                return
    raise _op_error(f"{ifname}: add clsact qdisc", reply, _qdisc_fix(reply.errno))


def ensure_clsacts(ipr, want: Dict[str, Blocks], have: Dict[str, Blocks]) -> None:
    """``ensure_clsact`` for every device of ``want`` (device -> its blocks) over one link dump: those without a
    clsact in ``have`` (``clsact_blocks``) added in pipelined batches, any other -- bound otherwise, or whose add
    was refused -- then one by one (rebind, or the error that names it). On an empty eswitch of 256 VFs this
    was 259 link dumps of 259 links each, seconds under TCG."""
    if not want:
        return
    links = _links(ipr)
    missing = [dev for dev in want if dev not in have]
    replies = nlpipe.transact(ipr, [(RTM_NEWQDISC, ADD_FLAGS, _clsact_body(_index(links, dev, "ensure_clsact"),
                                                                          want[dev])) for dev in missing])
    added = {dev for dev, reply in zip(missing, replies) if reply.errno == 0}
    for dev, blocks in want.items():
        if dev not in added:
            ensure_clsact(ipr, dev, *blocks, links=links)


def _rebind(ipr, ifname: str, index: int, blocks: Blocks) -> None:
    """Delete ``ifname``'s clsact and add it bound to ``blocks`` (one batch: acks checked in order)."""
    delete = _TCMSG.pack(socket.AF_UNSPEC, index, uapi.CLSACT_HANDLE, uapi.TC_H_CLSACT, 0)
    replies = nlpipe.transact(ipr, [(RTM_DELQDISC, 0, delete), (RTM_NEWQDISC, ADD_FLAGS, _clsact_body(index, blocks))],
                              ack_each=True)
    for what, reply in zip(("delete", "add"), replies):
        if reply.errno:
            raise _op_error(f"{ifname}: rebind clsact to blocks {blocks}: {what}", reply, _qdisc_fix(reply.errno))


def clsact_blocks(ipr) -> Dict[str, Blocks]:
    """The interfaces that have a clsact qdisc and the shared blocks it is bound to: one qdisc dump, one
    link dump.

    (``ensure_clsact`` per device costs a link dump, an add and, as the
    qdisc usually exists, a qdisc dump each: seconds for 66 devices under TCG.)
    """
    names = {index: name for name, index in nlpipe.link_index(ipr).items()}
    return {names[index]: blocks for index, blocks in _clsact_by_index(ipr).items() if index in names}


def _clsact_by_index(ipr) -> Dict[int, Blocks]:
    """ifindex -> the shared blocks its clsact is bound to, for every interface with a clsact (one qdisc dump)."""
    out: Dict[int, Blocks] = {}
    body = _TCMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    for msg in nlpipe.dump(ipr, RTM_GETQDISC, body, "qdiscs"):
        index, handle, kind = _kind_of(msg)
        if handle == uapi.CLSACT_HANDLE and kind == "clsact":
            out[index] = _blocks_of(msg)
    return out


def _qdisc_fix(code: int) -> Optional[str]:
    return {
        errno.ENOENT: "modprobe sch_ingress (it provides clsact)",
        errno.EPERM: "run as root (CAP_NET_ADMIN in the namespace)",
    }.get(code)


# --- apply ------------------------------------------------------------------


def _filter_fix(op: str, code: int) -> Optional[str]:
    if code == errno.ENOENT and op == "delete":
        return "the rule is already gone: dump() again and re-diff"
    return {
        errno.ENOENT: "modprobe cls_flower act_mirred act_gact",
        errno.EEXIST: "a filter holds this prio/handle, or another one in this prio has the "
        "same match: replace it, or delete it first",
        errno.EINVAL: "check the dev has clsact (ensure_clsact) and that the prio holds only "
        "flower filters of protocol all"
        + ("; flower replaces in place only with the same keys and masks: delete and add "
           "instead (diff() does)" if op == "replace" else ""),
        errno.EPERM: "run as root (CAP_NET_ADMIN in the namespace)",
        errno.EOPNOTSUPP: "the device cannot offload: keep skip_hw=True",
        errno.ENOSPC: "too many filters/actions for the kernel's limits",
    }.get(code)


def _op_error(what: str, reply: nlpipe.Reply, fix: Optional[str]) -> NetlinkOpError:
    text = f": {reply.message}" if reply.message else ""
    return NetlinkOpError(
        f"{what}: {nlpipe.errno_name(reply.errno)}{text}", errno=reply.errno, fix=fix
    )


Job = Tuple[str, Rule, int]  # (op, rule, dev ifindex; 0 for a block's rule)
Phase = Tuple[Iterable[Rule], Iterable[Rule], Iterable[Rule]]  # (add, replace, delete)


def _jobs(links: Dict[str, int], add: Iterable[Rule], replace: Iterable[Rule], delete: Iterable[Rule]) -> List[Job]:
    """Check every rule (and resolve every interface) before anything is sent: deletes, replaces, adds."""
    jobs: List[Job] = []
    for op, rules in (("delete", delete), ("replace", replace), ("add", add)):
        for rule in rules:
            dev = 0 if rule.block else _index(links, rule.dev, canonical.where(rule))
            if op != "delete":
                codec.check(rule)
                for action in rule.actions:  # (the message only on a miss: 66,000 mirrors for 256 VFs)
                    if action.dev is not None and action.dev not in links:
                        _index(links, action.dev, f"{canonical.where(rule)}: mirred target")
            jobs.append((op, rule, dev))
    return jobs


def _requests(links: Dict[str, int], jobs: Iterable[Job]) -> Iterator[nlpipe.Request]:
    """The netlink request of each job, packed when asked for (``apply`` packs window by window)."""

    def ifindex(name: str) -> int:
        return _index(links, name, "mirred target")

    for op, rule, dev in jobs:
        if op == "delete":
            yield RTM_DELTFILTER, 0, codec.pack_delete(rule, dev)
        else:
            flags = REPLACE_FLAGS if op == "replace" else ADD_FLAGS
            yield RTM_NEWTFILTER, flags, codec.pack(rule, dev, ifindex, checked=True)


def _check_replies(jobs: List[Job], replies: List[nlpipe.Reply]) -> None:
    """One NetlinkOpError for every failed job (the first one's errno), or nothing."""
    failed = [(op, rule, r) for (op, rule, _), r in zip(jobs, replies) if r.errno]
    if not failed:
        return
    op, rule, reply = failed[0]
    err = _op_error(f"{canonical.where(rule)}: {op}", reply, _filter_fix(op, reply.errno))
    if len(failed) > 1:
        more = "; ".join(
            f"{canonical.where(r)}: {o}: {nlpipe.errno_name(x.errno)}" for o, r, x in failed[1:4]
        )
        tail = f" and {len(failed) - 4} more" if len(failed) > 4 else ""
        err = NetlinkOpError(
            f"{err.message} (also failed: {more}{tail})", errno=err.errno, fix=err.fix
        )
    raise err


def apply(
    ipr,
    add: Iterable[Rule] = (),
    replace: Iterable[Rule] = (),
    delete: Iterable[Rule] = (),
    window: int = WINDOW,
    ack_each: bool = False,
    links: Optional[Dict[str, int]] = None,
) -> None:
    """Delete, then replace, then add rules, pipelined ``window`` requests per sendmsg.

    Only the last request of a window asks for an ack (``ack_each=True``:
    all); failures are reported either way (see nlpipe.transact).

    Every rule is checked (and every interface resolved) before anything is
    sent, so a bad rule changes nothing (rules are then packed window by
    window as they are sent).  Kernel failures do not stop the
    batch; afterwards one NetlinkOpError reports them all, carrying the first
    one's errno.  Replace creates a rule that is missing (tc's ``replace``).
    ``links`` (name -> ifindex of the namespace) saves the link dump when the
    caller has just read it.
    """
    links = _links(ipr) if links is None else links
    jobs = _jobs(links, add, replace, delete)
    if not jobs:
        return
    replies = nlpipe.transact(ipr, _requests(links, jobs), window=window, ack_each=ack_each)
    _check_replies(jobs, replies)


@dataclass(frozen=True)
class Change:
    """Rule changes encoded once, in their order, as one netlink buffer: ``send`` is one sendmsg.

    Phases follow each other in the buffer (each one: deletes, replaces,
    adds, as ``apply``), so the kernel handles them in that order -- what
    ``apply`` called once per phase does, without a round trip in between.
    """

    packed: nlpipe.Packed
    jobs: Tuple[Job, ...]

    def __len__(self) -> int:
        return len(self.jobs)


def encode(links: Dict[str, int], phases: Iterable[Phase]) -> Change:
    """The ``Change`` for ``phases``, (add, replace, delete) each, with the namespace's ifindexes ``links``.

    The same checks and encoder as ``apply``: the buffer holds exactly the
    messages ``apply`` would send for these phases, one after the other.
    """
    jobs = [job for add, replace, delete in phases for job in _jobs(links, add, replace, delete)]
    return Change(nlpipe.pack(_requests(links, jobs)), tuple(jobs))


def send(ipr, change: Change) -> None:
    """Send a ``Change`` (one sendmsg) and read its ack; NetlinkOpError as ``apply`` for any failure."""
    if change.jobs:
        _check_replies(list(change.jobs), nlpipe.send_packed(ipr, change.packed))


# --- dump -------------------------------------------------------------------


def dump(ipr, ifnames: Iterable[str], blocks: Iterable[int] = ()) -> List[InstalledRule]:
    """Every filter on the clsact ingress and egress hooks of ``ifnames`` and in the shared ``blocks``,
    with counters.

    Interfaces without clsact have no rules; a block nothing is bound to has
    none either.  A hook bound to a shared block lists the block's filters:
    they are reported once, with the block (``blocks``), not per interface
    (such a hook is not dumped at all: ``filter_queries``).
    Order: by interface as given, ingress before egress, then the blocks as
    given, each as the kernel lists it (chain, prio, handle).  A classifier
    of another kind (u32, bpf, ...) comes back as one foreign rule with
    handle 0 per prio; deleting that rule removes it whole.
    """
    links = _links(ipr)
    names = {index: name for name, index in links.items()}
    out: List[InstalledRule] = []
    for what, query in filter_queries(ipr, ifnames, blocks, links):
        is_block = what.startswith("block ")
        for raw in nlpipe.dump(ipr, RTM_GETTFILTER, query, f"{what} filters"):
            # The kernel lists each (prio, protocol) classifier instance
            # first with handle 0, then its filters.  For flower we keep
            # the filters; another kind is kept as that one entry.
            index, handle, kind = _kind_of(raw)
            if (handle == 0) == (kind == "flower"):
                continue
            if (index == uapi.TCM_IFINDEX_MAGIC_BLOCK) != is_block:
                continue  # a shared block's filter seen through a bound hook
            out.append(readback.unpack(raw, names))
    return out


def filter_queries(ipr, ifnames: Iterable[str], blocks: Iterable[int] = (),
                   links: Optional[Dict[str, int]] = None) -> List[Tuple[str, bytes]]:
    """The RTM_GETTFILTER dump requests (what, tcmsg body) that list every filter of ``ifnames``' own clsact
    hooks and of ``blocks`` (``dump()``'s, for callers that read the raw messages themselves).

    A hook bound to a shared block lists only that block's filters, so it is left out (one qdisc dump says
    which are bound): with 257 representors bound to a block of ~2,600 filters, dumping each one's
    ingress moved ~670,000 messages only for them to be dropped.
    """
    links = _links(ipr) if links is None else links
    bound = _clsact_by_index(ipr)
    queries: List[Tuple[str, bytes]] = []
    for ifname in ifnames:
        index = _index(links, ifname, "dump")
        for (hook, parent), block in zip(codec.HOOKS.items(), bound.get(index, (0, 0))):
            if not block:
                queries.append((f"{ifname} {hook}", _TCMSG.pack(socket.AF_UNSPEC, index, 0, parent, 0)))
    for block in blocks:
        queries.append((f"block {block}", _TCMSG.pack(socket.AF_UNSPEC, uapi.TCM_IFINDEX_MAGIC_BLOCK, 0, block, 0)))
    return queries


# --- diff -------------------------------------------------------------------

Installed = Union[InstalledRule, Rule]


def diff(
    desired: Iterable[Rule], installed: Iterable[Installed]
) -> Tuple[List[Rule], List[Rule], List[Rule]]:
    """(add, replace, delete) that turn ``installed`` into ``desired``; pure.

    Rules are matched by ``Rule.key`` and compared in canonical form (the
    kernel reports defaults back, e.g. a full MAC mask).  Everything
    installed that is not desired is deleted: pass only the interfaces you
    own.  A changed rule is replaced in place (atomic: no packet sees the
    key without a rule) when flower allows it, i.e. when its keys and masks
    keep their shape (canonical.mask_shape) -- a new action, MAC or bucket
    value.  Otherwise, and for foreign rules (maybe another classifier or
    protocol), it is deleted and added again.  Lists are sorted by key.
    """
    want: Dict[tuple, Rule] = {}
    for rule in desired:
        if rule.key in want:
            raise ConflictError(
                f"{canonical.where(rule)}: two desired rules share this key",
                fix="give each rule its own prio/handle",
            )
        want[rule.key] = rule
    have: Dict[tuple, Rule] = {}
    for item in installed:
        rule = item.rule if isinstance(item, InstalledRule) else item
        have[rule.key] = rule
    add: List[Rule] = []
    replace: List[Rule] = []
    delete: List[Rule] = []
    for key in sorted(want.keys() | have.keys()):
        new, old = want.get(key), have.get(key)
        if old is None:
            add.append(new)  # type: ignore[arg-type]
        elif new is None:
            delete.append(old)
        elif canonical.canonical(new) != canonical.canonical(old):
            if old.label == FOREIGN or canonical.mask_shape(new.match) != canonical.mask_shape(
                old.match
            ):
                delete.append(old)
                add.append(new)
            else:
                replace.append(new)
    return add, replace, delete
