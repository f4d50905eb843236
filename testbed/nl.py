"""Small pyroute2 helpers shared by the lab code: open a namespace without
creating it, turn NetlinkError into NetlinkOpError, wait on a condition."""

from __future__ import annotations

import errno as errno_mod
import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from testbed.errors import LabNotFound, NetlinkOpError, WaitTimeout

T = TypeVar("T")
NETNS_DIR = "/run/netns"

_HINTS = {
    errno_mod.EEXIST: "already exists (left over? try `testbed clean`)",
    errno_mod.EBUSY: "busy (already enslaved elsewhere?)",
    errno_mod.EOPNOTSUPP: "not supported by this kernel (missing module? see `testbed doctor`)",
    errno_mod.ENODEV: "no such device",
    errno_mod.EPERM: "not permitted (run as root)",
}


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def open_ns(name: Optional[str]) -> IPRoute:
    """An IPRoute inside namespace ``name`` (None: ours). Never creates a missing namespace."""
    if name is None:
        return IPRoute()
    if not netns_exists(name):
        raise LabNotFound(f"network namespace {name!r} does not exist", fix="is the lab up? see `testbed list`")
    return IPRoute(netns=name, flags=0)


@contextmanager
def netlink_op(what: str) -> Iterator[None]:
    """Run a netlink call; a NetlinkError becomes NetlinkOpError naming ``what`` and the errno."""
    try:
        yield
    except NetlinkError as exc:
        code = exc.code
        name = errno_mod.errorcode.get(code, str(code))
        hint = _HINTS.get(code, os.strerror(code) if code else "")
        raise NetlinkOpError(f"{what}: {name} ({hint})", errno=code) from None


def ifindex(ipr: IPRoute, ifname: str, ns: str = "") -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        where = f" in {ns}" if ns else ""
        raise NetlinkOpError(f"{ifname}: no such interface{where}", errno=errno_mod.ENODEV)
    return found[0]


def wait_until(cond: Callable[[], Optional[T]], timeout: float, what: str, *, interval: float = 0.02,
               fix: Optional[str] = None) -> T:
    """Poll ``cond`` until it returns something truthy; WaitTimeout naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}", fix=fix)
        time.sleep(interval)  # poll
