"""Write sysfs and sysctl files *as seen from inside* a named network namespace.

``/sys/class/net`` shows the namespace of whoever mounted sysfs and
``/proc/sys/net`` the namespace of the reading task, so a per-namespace write
(``rps_cpus``, ``disable_ipv6``) needs a task that has entered the namespace
and mounted its own sysfs. That is what ``ip netns exec`` does; here a forked
child does it in a private mount namespace with ``setns``/``unshare``/``mount``
(through libc, no subprocess) and reports the first failure back.

Creating namespaces needs no process at all: a thread of this process unshares, marks and names one
namespace after another (``create_marked_netns_many``).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import socket
import struct
import threading
from typing import Callable, Iterable, Sequence, Tuple

from testbed.errors import NetlinkOpError
from traffic.netns import run_in_netns

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
NETNS_RUN_DIR = "/run/netns"
RTM_NEWLINK = 16
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
IFLA_IFALIAS = 20
IFF_UP = 1


def _child(netns: str, writes: Tuple[Tuple[str, str], ...]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)

    def check(rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    fd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY)
    check(libc.setns(fd, CLONE_NEWNET), f"setns({netns})")
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    if any(path.startswith("/sys/") for path, _ in writes):
        libc.umount2(b"/sys", MNT_DETACH)  # may fail if /sys is not a mount point; the mount below decides
        check(libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None), "mount sysfs")
    for path, value in writes:
        with open(path, "w") as fh:
            fh.write(value)


def _mark_lo(mark: str) -> None:
    """In the current netns: ``lo`` up with ifalias ``mark`` (one RTM_NEWLINK over a raw rtnetlink socket)."""
    alias = mark.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(alias), IFLA_IFALIAS) + alias
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BxHiII", 0, 0, 1, IFF_UP, IFF_UP) + attr  # ifinfomsg for ifindex 1 (lo)
    msg = struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 1, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.send(msg)
        reply = sock.recv(4096)
    if len(reply) >= 20 and struct.unpack_from("=H", reply, 4)[0] == NLMSG_ERROR:
        code = -struct.unpack_from("=i", reply, 16)[0]
        if code:
            raise OSError(code, f"marking lo: {os.strerror(code)}")


def _create_here(netns: str, mark: str, writes: Tuple[Tuple[str, str], ...], libc) -> None:
    """On a thread of its own: move it into a new network namespace, mark ``lo``, do ``writes`` (sysctls under
    /proc/sys/net, which show the calling thread's namespace), then bind-mount the namespace at its name."""
    from pyroute2.netns import _create

    if libc.unshare(CLONE_NEWNET) != 0:  # this thread only: network namespaces are per task
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    _mark_lo(mark)
    for path, value in writes:
        with open(path, "w") as fh:
            fh.write(value)
    nsfile = os.path.join(NETNS_RUN_DIR, netns)
    try:  # bind-mount this thread's (already marked) netns under /run/netns, as `ip netns add` does
        _create(netns, libc=libc, pid=f"{os.getpid()}/task/{threading.get_native_id()}")
    except BaseException:
        if os.path.exists(nsfile) and not os.path.ismount(nsfile):
            os.unlink(nsfile)
        raise


def create_marked_netns_many(names: Sequence[str], mark: str, writes: Iterable[Tuple[str, str]] = (),
                             on_each: Callable[[str], None] = lambda name: None) -> None:
    """Create ``/run/netns/<name>`` for each name, its ``lo`` already carrying ``mark`` (the namespace never
    exists unmarked, so a crash at any instant leaves nothing ``testbed clean`` could mistake for someone
    else's) and ``writes`` done inside it (``/proc/sys/net/...`` only: e.g. ``quiet_ipv6_writes()``).

    No process per namespace: one thread of this process unshares a new namespace, marks and names it,
    and goes on with the next (``unshare(CLONE_NEWNET)`` moves only the calling thread); it ends with the
    last, so nothing else ever runs in them. NetlinkOpError names the namespace that failed."""
    writes = tuple(writes)
    bad = [path for path, _ in writes if not path.startswith("/proc/sys/net/")]
    if bad:  # /sys needs a sysfs mounted in the namespace: a mount namespace, which a thread cannot unshare
        raise ValueError(f"only /proc/sys/net/ paths can be written while creating a namespace, not {bad[0]}")
    libc = ctypes.CDLL(None, use_errno=True)
    state = {"at": ""}

    def worker() -> None:
        for name in names:
            state["at"] = name
            _create_here(name, mark, writes, libc)
            on_each(name)

    try:
        run_in_netns(None, worker)
    except OSError as exc:
        raise NetlinkOpError(f"create network namespace {state['at']} failed: {exc}", errno=exc.errno) from exc


def create_marked_netns(netns: str, mark: str, writes: Iterable[Tuple[str, str]] = ()) -> None:
    """One namespace: ``create_marked_netns_many([netns], ...)``."""
    create_marked_netns_many([netns], mark, writes)


def _mark_pid_child(pid: int, mark: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    path = f"/proc/{pid}/ns/net"
    fd = os.open(path, os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({path}): {os.strerror(err)}")
    _mark_lo(mark)


def mark_netns_of_pid(pid: int, mark: str, *, what: str = "") -> None:
    """Mark the (unnamed) network namespace process ``pid`` runs in: ``lo`` up with ifalias ``mark``.
    For namespaces made by someone else for us (a Mininet node's shell) before they get a name."""
    _in_child(_mark_pid_child, pid, mark, what=what or f"mark lo in the network namespace of pid {pid}")


def _in_child(fn, *args, what: str) -> None:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's stack
        os.close(rfd)
        status = 0
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - report everything to the parent
            status = 1
            try:
                os.write(wfd, pickle.dumps((getattr(exc, "errno", None), str(exc))))
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as fh:
        payload = fh.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        errno, text = pickle.loads(payload) if payload else (None, f"child exited with status {status}")
        raise NetlinkOpError(f"{what} failed: {text}", errno=errno)


def write_in_netns(netns: str, writes: Iterable[Tuple[str, str]]) -> None:
    """Write each ``(path, value)`` inside ``netns``; raises NetlinkOpError naming the file that failed."""
    writes = tuple(writes)
    if writes:
        _in_child(_child, netns, writes, what=f"{netns}: writing {', '.join(p for p, _ in writes)}")


def cpu_mask() -> str:
    """All online CPUs as an rps_cpus hex mask."""
    n = os.cpu_count() or 1
    return format((1 << n) - 1, "x")


def rps_writes(ifnames: Iterable[str]) -> Tuple[Tuple[str, str], ...]:
    mask = cpu_mask()
    return tuple((f"/sys/class/net/{name}/queues/rx-0/rps_cpus", mask) for name in ifnames)


def quiet_ipv6_writes() -> Tuple[Tuple[str, str], ...]:
    """No IPv6 in a lab namespace: no router solicitations or MLD reports muddying rule counters."""
    return (("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1"),
            ("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"))


def lab_ipv6_writes() -> Tuple[Tuple[str, str], ...]:
    """IPv6 on in a dual-stack lab's namespace, with what a lab does not want from it off: duplicate
    address detection (the lab's addresses are unique by construction, the RDMA function shares its
    bond's, and DAD would hold each address tentative for a second), router solicitations and
    autoconfiguration from advertisements (the lab has no router). Neighbour discovery and MLD stay."""
    conf = "/proc/sys/net/ipv6/conf"
    return tuple((f"{conf}/{which}/{key}", value) for which in ("all", "default")
                 for key, value in (("disable_ipv6", "0"), ("accept_dad", "0"), ("router_solicitations", "0"),
                                    ("accept_ra", "0")))
