"""Refuse, before anything is built, a bond option the running kernel's bonding module does not know.

``kfeatures.bond_options(release)`` reads the option names from the kernel's own ``bonding.ko``
(distribution kernels backport options, so names are looked up, never guessed from versions).
A kernel whose module cannot be read (bonding built in) is not refused here: the kernel answers
for itself when ``realize`` sets the option.

::

    require(topo)   # CapabilityError: f.yaml: hosts.server.nic.bond.lacp_strict: the running kernel
                    # (6.12.117+deb12-amd64) has no bonding option lacp_strict (fix: ... --kernel 7.3 ...)
"""

from __future__ import annotations

import os
from typing import Callable, FrozenSet, List, Optional, Tuple

from testbed import kfeatures
from testbed.bond import options
from testbed.errors import CapabilityError
from testbed.topology import Topology

Known = Callable[[str], FrozenSet[str]]  # release -> the bonding option names it knows


def missing(topo: Topology, known: FrozenSet[str]) -> List[Tuple[str, str]]:
    """(path in the file, kernel option name) of every option the topology uses that ``known`` lacks."""
    out = []
    for host in topo.hosts:
        if host.nic is None:
            continue
        bond, base = host.nic.bond, f"hosts.{host.name}.nic.bond"
        wanted = [(base, options.kernel_names({o.name: bond.value(o.name) for o in options.BOND_OPTIONS}))]
        wanted += [(f"{base}.ports.{p}", options.kernel_names(bond.port_values(p))) for p in host.nic.ports]
        for where, names in wanted:
            out += [(f"{where}.{user.replace(' ', ': ')}", kname) for user, kname in names.items()
                    if kname not in known]
    return out


def kernels_with(name: str, known: Known = kfeatures.bond_options, root: str = "/") -> List[str]:
    """Installed kernels (``/lib/modules/*``) whose bonding knows option ``name``, newest first."""
    try:
        releases = os.listdir(os.path.join(root, "lib/modules"))
    except OSError:
        return []
    return sorted((r for r in releases if name in known(r)), key=kfeatures.version_tuple, reverse=True)


def require(topo: Topology, release: Optional[str] = None, known: Known = kfeatures.bond_options,
            root: str = "/") -> None:
    """CapabilityError naming the first option the kernel ``release`` (default: the running one) lacks."""
    release = release or kfeatures.running_release()
    have = known(release)
    if not have:
        return
    gaps = missing(topo, have)
    if not gaps:
        return
    path, kname = gaps[0]
    others = [r for r in kernels_with(kname, known, root) if r != release]
    if others:
        fix = "run it on a kernel that has it: `testbed vm --kernel {}.{}`".format(*kfeatures.version_tuple(others[0]))
    else:
        fix = "run it on a kernel whose bonding has it (e.g. `testbed vm --kernel 7.3`)"
    more = f" (and {len(gaps) - 1} more)" if len(gaps) > 1 else ""
    raise CapabilityError(f"{topo.file}: {path}: the running kernel ({release}) has no bonding option "
                          f"{kname}{more}", fix=f"{fix}, or leave the option out")
