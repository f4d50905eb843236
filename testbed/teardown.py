"""Remove what a lab owns — exactly that, idempotently — and wait until the kernel has let go of it.

A namespace is deleted only if it is recorded by the lab *and* carries the
lab's mark (the ifalias of its ``lo``), so a namespace of the same name made
by someone else is never touched.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Dict, List, Optional

from pyroute2 import netns

from testbed import labstore, naming, nlpipe, rawnl, rdma, rtnlmsg
from testbed.errors import ConflictError, WaitTimeout
from testbed.labstore import crashed, held_elsewhere  # judged from the record alone (`list` needs no netlink)
from testbed.nl import NETNS_DIR, netns_exists, ns_sockets, wait_until
from testbed.nswait import NetnsDeletion
from testbed.progress import Progress, quiet


def netns_mark(name: str) -> Optional[str]:
    """The lab mark on ``lo`` inside namespace ``name``, or None if unmarked/unreadable."""
    return netns_marks([name])[name]


def netns_marks(names: List[str], chunk: int = 64) -> Dict[str, Optional[str]]:
    """name -> the lab mark on ``lo`` inside that namespace (None: unmarked or unreadable): one RTM_GETLINK
    each over raw sockets this process makes there, ``chunk`` at a time by one thread (``nl.ns_sockets``;
    no helper process, no thread per namespace)."""
    out: Dict[str, Optional[str]] = {}
    for start in range(0, len(names), chunk):
        part = names[start:start + chunk]
        socks = ns_sockets(part, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        for name, sock in zip(part, socks):
            out[name] = None
            if sock is None:
                continue
            try:
                sock.setblocking(False)
                msg = nlpipe.get(sock, rawnl.RTM_GETLINK, rtnlmsg.getlink("lo"), f"{name}: lo")
                out[name] = rawnl.attr_str(msg, rawnl.HDR.size + rawnl.IFINFO.size, rtnlmsg.IFLA_IFALIAS)
            except Exception:  # noqa: BLE001 - an unreadable namespace is simply not ours
                pass
            finally:
                sock.close()
    return out


def stop_agent(lab: str, timeout: float = 10.0) -> None:
    path = labstore.lab_file(lab, "agent.pid")
    try:
        with open(path) as fh:
            pid = int(fh.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return
    if pid <= 0:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie child of ours counts as gone once reaped
        try:
            return os.waitpid(pid, os.WNOHANG)[0] == pid
        except ChildProcessError:
            return False

    try:
        wait_until(gone, timeout, f"agent of lab {lab} (pid {pid}) to exit")
    except WaitTimeout:
        os.kill(pid, signal.SIGKILL)


# The kernel destroys removed namespaces in batches, one batch after the other (one work queue): a batch
# taken while the first names were being removed must be gone before the rest are even started. 130
# namespaces of a 256-VF lab took more than 15 s on 6.12 in a loaded TCG guest, so the deadline grows with
# the count: 15 s, and a quarter of a second per namespace (80 s for a 256-VF lab's 260).
NETNS_GONE_S = 15.0
NETNS_GONE_PER_NS_S = 0.25


def destroy_deadline(count: int, base: float = NETNS_GONE_S) -> float:
    """Seconds (before ``TESTBED_TIMEOUT_SCALE``) to wait for ``count`` removed namespaces to be destroyed."""
    return base + NETNS_GONE_PER_NS_S * count


def remove_lab(rec: labstore.LabRecord, *, progress: Progress = quiet, timeout: float = NETNS_GONE_S) -> List[str]:
    """Delete the lab's marked namespaces (reverse order), wait for their destruction, drop the record."""
    mark = naming.mark(rec.name)
    rec.state = "removing"
    if os.path.isdir(labstore.lab_dir(rec.name)):
        labstore.write(rec)
    stop_agent(rec.name)
    present = [n for n in reversed(rec.netns) if netns_exists(n)]
    marks = netns_marks(present)
    ours = [n for n in present if marks[n] == mark]
    skipped = [n for n in rec.netns if netns_exists(n) and n not in ours]
    for n in skipped:
        progress(f"leaving namespace {n}: it does not carry the mark {mark!r}, so it is not ours")
    removed = delete_netns(ours, "delete namespace", progress, timeout)
    rdma.remove(rec.name, progress=progress)  # rxe devices go with their netdevs; delete any that stayed
    labstore.remove(rec.name)
    return removed


def delete_netns(names: List[str], what: str, progress: Progress, timeout: float = NETNS_GONE_S) -> List[str]:
    """Delete the named namespaces (checked to be ours by the caller) and wait until the kernel destroyed
    them (RTM_DELNSID), ``destroy_deadline`` at most; returns the names deleted."""
    removed: List[str] = []
    with NetnsDeletion() as waiter:
        waiter.arm(os.path.join(NETNS_DIR, n) for n in names)
        for n in names:
            progress(f"{what} {n}")
            netns.remove(n)
            removed.append(n)
        if len(waiter.pending) > 32:
            progress(f"waiting for the kernel to destroy {len(waiter.pending)} namespaces")
        waited = waiter.wait(destroy_deadline(len(names), timeout))
    progress(f"{len(removed)} namespaces destroyed ({waited * 1000:.0f} ms after removal)")
    return removed


def down(lab: str, *, progress: Progress = quiet) -> List[str]:
    """Tear a lab down; a lab that is not there is not an error (idempotent)."""
    rec = labstore.try_read(lab)
    if rec is None:
        progress(f"lab {lab}: nothing to remove")
        return []
    if held_elsewhere(rec):
        raise ConflictError(
            f"lab {lab} belongs to a running Mininet session (pid {rec.holder}); its nodes' shells keep the "
            "namespaces alive, so removing their names would not remove them",
            fix=f"leave that Mininet CLI (`exit`) -- it removes the lab -- or `kill {rec.holder}`")
    return remove_lab(rec, progress=progress)


def orphans() -> List[str]:
    """Marked namespaces with no lab record (a crash between create and record cannot happen, but a lost
    /run/testbed can)."""
    known = {n for lab in labstore.names() for n in (labstore.try_read(lab) or labstore.LabRecord("", "", {})).netns}
    marks = netns_marks([n for n in netns.listnetns() if n not in known])
    return [n for n, m in marks.items() if m and m.startswith(naming.MARK_PREFIX)]


def clean(*, all_labs: bool = False, lab: Optional[str] = None, progress: Progress = quiet) -> List[str]:
    """Remove what crashed runs left: labs whose build never finished (builder gone), labs being removed,
    labs of a Mininet session that is gone, and marked namespaces without a record. ``all_labs`` also
    removes healthy labs."""
    removed: List[str] = []
    for name in labstore.names():
        if lab and name != lab:
            continue
        rec = labstore.try_read(name)
        if rec is None:
            continue
        if lab and held_elsewhere(rec):
            raise ConflictError(f"lab {name} belongs to a running Mininet session (pid {rec.holder})",
                                fix=f"leave that Mininet CLI (`exit`) -- it removes the lab -- or `kill {rec.holder}`")
        if held_elsewhere(rec):
            progress(f"lab {name}: left alone, a running Mininet session (pid {rec.holder}) holds it")
            continue
        if all_labs or crashed(rec) or lab:
            progress(f"lab {name}: removing ({rec.state})")
            removed += remove_lab(rec, progress=progress)
    if not lab:
        stray = orphans()
        if stray:
            removed += delete_netns(stray, "delete unrecorded marked namespace", progress)
        recorded = set(labstore.names())
        rdma.remove(orphans_of=lambda name: name not in recorded, progress=progress)
    return removed
