"""Give a Mininet node's network namespace a name: ``/run/netns/<name>``, marked like the lab's own.

Mininet creates a node's namespace by starting its shell with ``mnexec -n``
(unshare); the namespace has no name and lives as long as the shell. Here
``lo`` in it first gets the lab's mark (ifalias ``testbed:<lab>``), then the
namespace is bind-mounted under ``/run/netns``: it is never reachable by
name unmarked, and ``testbed down``/``clean`` treat it like any other lab
namespace (removing the name; the namespace itself ends with its last
process, the node's shell).
"""

from __future__ import annotations

import ctypes
import os

from pyroute2.netns import _create

from testbed import nsfs
from testbed.errors import BuildError, ConflictError
from testbed.nl import NETNS_DIR, netns_exists


def _proc_netns(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def same_netns_as_us(pid: int) -> bool:
    st = os.stat(_proc_netns(pid))
    me = os.stat("/proc/self/ns/net")
    return (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino)


def adopt(name: str, pid: int, mark: str) -> None:
    """Mark the network namespace of process ``pid`` with ``mark`` and name it ``name``.

    Refuses the caller's own namespace (a node with ``inNamespace=False``): marking it would make the
    host's namespace look like a lab's.
    """
    if netns_exists(name):
        raise ConflictError(f"network namespace {name!r} already exists",
                            fix="`testbed clean` if it is a leftover of ours, or pick another lab name (--name)")
    try:
        if same_netns_as_us(pid):
            raise BuildError(f"{name}: process {pid} runs in our own network namespace, not a node's own",
                             fix="Mininet nodes of a lab need inNamespace=True")
    except FileNotFoundError:
        raise BuildError(f"{name}: process {pid} is gone (did the Mininet node's shell exit?)") from None
    nsfs.mark_netns_of_pid(pid, mark, what=f"{name}: mark lo in the namespace of pid {pid}")
    path = os.path.join(NETNS_DIR, name)
    try:
        _create(name, libc=ctypes.CDLL(None, use_errno=True), pid=pid)
    except OSError as exc:
        if os.path.exists(path) and not os.path.ismount(path):
            os.unlink(path)
        raise BuildError(f"{name}: cannot bind-mount {_proc_netns(pid)} on {path}: {exc}") from None
