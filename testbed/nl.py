"""Small pyroute2 helpers shared by the lab code: open a namespace without
creating it, turn NetlinkError into NetlinkOpError, wait on a condition.

Raw namespace sockets (``ns_socket``, the agent's link events) are made in this
process: a short-lived thread ``setns``-es into ``/run/netns/NAME``, creates the
socket, ends. An ``IPRoute`` in a namespace (``open_ns``) comes from pyroute2's own
``netns=`` path, with its helper's deadlines sized for a loaded TCG guest
(``NETNS_SOCKET_TIMEOUT``, scaled): pyroute2 makes one socket per thread that uses an ``IPRoute``,
and given ``fileno=`` it re-wraps the same descriptor number in every thread --
after the first thread's wrapper closed it -- which closed whatever socket had
reused that number (seen in the 7.3 guest: the traffic sender's AF_PACKET socket
died with EBADF mid-run). Every ``wait_until`` deadline is multiplied by
``TESTBED_TIMEOUT_SCALE`` (default 1) and its timeout error says so.

pyroute2 (~280 modules, 0.4 s on the host, several seconds under TCG) is imported by ``open_ns`` only:
``wait_until``, ``ns_socket`` and ``timeout_scale`` are used by paths that never need it."""

from __future__ import annotations

import errno as errno_mod
import os
import socket
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Sequence, TypeVar

from testbed.errors import LabNotFound, NetlinkOpError, TestbedError, UsageError, WaitTimeout
from testbed.rawnl import NETNS_DIR
from traffic.netns import enter_netns, run_in_netns

if TYPE_CHECKING:
    from pyroute2 import IPRoute

T = TypeVar("T")
TIMEOUT_SCALE_ENV = "TESTBED_TIMEOUT_SCALE"
# pyroute2's helper (fork, setns, pass the fd back) for a namespace socket: its own defaults (10 s in all,
# 2 s a try) were missed by a loaded machine ("could not start netns socket within timeout")
NETNS_SOCKET_TIMEOUT = 120.0
NETNS_HELPER_REPLY = 30.0

_HINTS = {
    errno_mod.EEXIST: "already exists (left over? try `testbed clean`)",
    errno_mod.EBUSY: "busy (already enslaved elsewhere?)",
    errno_mod.EOPNOTSUPP: "not supported by this kernel (missing module? see `testbed doctor`)",
    errno_mod.ENODEV: "no such device",
    errno_mod.EPERM: "not permitted (run as root)",
}


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def ns_socket(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket created inside namespace ``name`` by this process; never creates a missing namespace."""
    if not netns_exists(name):
        raise LabNotFound(f"network namespace {name!r} does not exist", fix="is the lab up? see `testbed list`")
    return run_in_netns(name, socket.socket, family, kind, proto)


def route_socket(name: str) -> socket.socket:
    """A non-blocking rtnetlink socket inside namespace ``name`` (what ``nlpipe`` and ``tc.ops`` take, as
    they take an IPRoute, without pyroute2's import); never creates a missing namespace."""
    sock = ns_socket(name, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.setblocking(False)  # nlpipe waits with poll and a deadline
    return sock


def ns_sockets(names: Sequence[str], family: int, kind: int, proto: int = 0) -> List[Optional[socket.socket]]:
    """A socket inside each namespace of ``names`` (None where it cannot be entered: gone, not a
    namespace), all made by one short-lived thread that enters one namespace after another -- what
    ``ns_socket`` does, without a thread per namespace (257 of them for a host with 256 VFs)."""

    def make_all() -> List[Optional[socket.socket]]:
        out: List[Optional[socket.socket]] = []
        for name in names:
            try:
                enter_netns(name)
                out.append(socket.socket(family, kind, proto))
            except (OSError, TestbedError):
                out.append(None)
        return out

    return run_in_netns(None, make_all)


def open_ns(name: Optional[str], **kwargs: object) -> IPRoute:
    """An IPRoute inside namespace ``name`` (None: ours). Never creates a missing namespace (``flags=0``).
    ``kwargs`` go to IPRoute (e.g. ``groups=0``). Not ``fileno=``: see the module docstring."""
    from pyroute2 import IPRoute
    from pyroute2 import config as pr_config

    if name is None:
        return IPRoute(**kwargs)
    if not netns_exists(name):
        raise LabNotFound(f"network namespace {name!r} does not exist", fix="is the lab up? see `testbed list`")
    scale = timeout_scale()
    pr_config.default_create_socket_timeout = NETNS_SOCKET_TIMEOUT * scale  # read by pyroute2 at each socket
    pr_config.default_communicate_timeout = NETNS_HELPER_REPLY * scale
    try:
        return IPRoute(netns=name, flags=0, **kwargs)
    except TimeoutError:
        raise WaitTimeout(f"timed out after {NETNS_SOCKET_TIMEOUT * scale:g}s waiting for a netlink socket in "
                          f"namespace {name} (pyroute2's helper process)",
                          fix=f"a loaded machine: raise {TIMEOUT_SCALE_ENV} (e.g. 2)") from None


@contextmanager
def netlink_op(what: str) -> Iterator[None]:
    """Run a netlink call; a NetlinkError becomes NetlinkOpError naming ``what`` and the errno."""
    try:
        yield
    except Exception as exc:
        code = _netlink_errno(exc)
        if code is None:
            raise
        raise op_error(what, code) from None


def op_error(what: str, code: int) -> NetlinkOpError:
    """The NetlinkOpError for a failed netlink call: ``what``, the errno's name and a hint."""
    name = errno_mod.errorcode.get(code, str(code))
    hint = _HINTS.get(code, os.strerror(code) if code else "")
    return NetlinkOpError(f"{what}: {name} ({hint})", errno=code)


def _netlink_errno(exc: BaseException) -> Optional[int]:
    """The errno of pyroute2's NetlinkError, None for any other exception. A NetlinkError exists only once
    pyroute2 is imported, so this imports nothing."""
    exceptions = sys.modules.get("pyroute2.netlink.exceptions")
    if exceptions is None or not isinstance(exc, exceptions.NetlinkError):
        return None
    return int(exc.code)


def ifindex(ipr: IPRoute, ifname: str, ns: str = "") -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        where = f" in {ns}" if ns else ""
        raise NetlinkOpError(f"{ifname}: no such interface{where}", errno=errno_mod.ENODEV)
    return found[0]


def timeout_scale() -> float:
    """``TESTBED_TIMEOUT_SCALE``: every deadline times this (a loaded or emulated machine wants 2-4)."""
    raw = os.environ.get(TIMEOUT_SCALE_ENV, "1")
    try:
        scale = float(raw)
    except ValueError:
        scale = 0.0
    if not 0 < scale <= 1000:
        raise UsageError(f"{TIMEOUT_SCALE_ENV}={raw[:20]!r} is not a factor between 0 and 1000", fix="e.g. 2")
    return scale


def wait_until(cond: Callable[[], Optional[T]], timeout: float, what: str, *, interval: float = 0.02,
               fix: Optional[str] = None) -> T:
    """Poll ``cond`` until it returns something truthy; WaitTimeout naming ``what`` after ``timeout`` s
    (times ``TESTBED_TIMEOUT_SCALE``)."""
    scale = timeout_scale()
    timeout *= scale
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise_fix = f"on a loaded or slow machine raise every deadline with {TIMEOUT_SCALE_ENV}={2 * scale:g}"
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}",
                              fix=f"{fix}; or {raise_fix}" if fix else raise_fix)
        time.sleep(interval)  # poll
