"""Run a function inside a named network namespace, on a thread of its own.

A socket keeps the namespace it was created in, whatever its creator does
later.  So the traffic engine opens its sockets on a short-lived thread that
entered ``/run/netns/<name>`` (``setns`` changes only the calling thread) and
then uses them from anywhere.

Public API:
    NETNS_DIR: str                                   -- "/run/netns"
    netns_path(name: str) -> str
    enter_netns(name: str | None) -> None            -- move the *calling thread* (None: no-op)
    run_in_netns(name: str | None, fn, *args, **kw)  -- fn(*args, **kw) on a new thread in the
                                                        namespace; returns its result or
                                                        re-raises its exception
    ifindex_map(name: str | None) -> dict[str, int]  -- interface name -> ifindex in a namespace

Errors: ``UsageError`` when the namespace does not exist, ``CapabilityError``
when the process may not enter it (not root).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from typing import Any, Callable, Dict, Optional, TypeVar

from testbed.errors import CapabilityError, UsageError

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

T = TypeVar("T")

# the process's own libc symbols: find_library("c") runs ``ldconfig -p`` (a process spawn) and
# ctypes.util imports subprocess, at every command's start
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int


def netns_path(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise UsageError(f"netns {name!r}: not a namespace name", fix="pass a name from `ip netns`")
    return os.path.join(NETNS_DIR, name)


def enter_netns(name: Optional[str]) -> None:
    """Move the calling thread into namespace ``name`` (``None`` leaves it where it is)."""
    if name is None:
        return
    path = netns_path(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(
            f"netns {name}: no such namespace ({path} missing)",
            fix="check the name with `ip netns list`; is the lab up?",
        ) from None
    except PermissionError:
        raise CapabilityError(f"netns {name}: cannot open {path}", fix="run as root") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                raise CapabilityError(f"netns {name}: setns refused (EPERM)", fix="run as root (CAP_SYS_ADMIN)")
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(name: Optional[str], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` on a fresh thread inside namespace ``name``.

    ``name=None`` still uses a fresh thread, in the caller's namespace, so the
    behaviour is the same either way.  The thread ends when ``fn`` returns, so
    nothing else ever runs in the namespace by accident.
    """
    box: Dict[str, Any] = {}

    def body() -> None:
        try:
            enter_netns(name)
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller below
            box["error"] = exc

    thread = threading.Thread(target=body, name=f"netns:{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def ifindex_map(name: Optional[str]) -> Dict[str, int]:
    """Interface name -> ifindex, as seen inside namespace ``name``."""
    return run_in_netns(name, lambda: {n: i for i, n in socket.if_nameindex()})
