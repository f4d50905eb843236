"""What a kernel offers the lab, by name: the one table both the VM lane (``--list-kernels``,
``doctor``), ``up``'s refusals and the tests' ``@pytest.mark.needs(FEATURE)`` use.

A feature is decided from the kernel's release and its module files only, so it can be
answered for an installed kernel that is not running (the VM lane's kernels) as well as
for the running one. Nothing is loaded or created here.

Features:
  bonding, flower, mirred  -- the module exists (loaded, built in or a module file)
  flower_hash              -- flower's TCA_FLOWER_KEY_HASH (Linux 5.13+)
  rxe                      -- Soft-RoCE (rdma_rxe) exists
  rxe_netns                -- rxe binds its UDP 4791 socket per network namespace (Linux 7.1+),
                              so an RDMA device made inside a lab namespace works
"""

from __future__ import annotations

import os
import platform
import re
from typing import Dict, Optional, Tuple

FLOWER_HASH_KERNEL = (5, 13)
RXE_NETNS_KERNEL = (7, 1)

FEATURES: Dict[str, str] = {
    "bonding": "the bonding driver",
    "flower": "tc flower (cls_flower)",
    "mirred": "tc mirred redirect (act_mirred)",
    "flower_hash": f"flower's hash key (Linux {FLOWER_HASH_KERNEL[0]}.{FLOWER_HASH_KERNEL[1]}+)",
    "rxe": "Soft-RoCE (rdma_rxe)",
    "rxe_netns": f"Soft-RoCE inside a network namespace (Linux {RXE_NETNS_KERNEL[0]}.{RXE_NETNS_KERNEL[1]}+)",
}
_MODULE = {"bonding": "bonding", "flower": "cls_flower", "mirred": "act_mirred", "rxe": "rdma_rxe"}


def version_tuple(release: str) -> Tuple[int, int]:
    """``"7.3.4+deb13-amd64"`` -> ``(7, 3)``; ``(0, 0)`` when unreadable."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def running_release() -> str:
    return platform.release()


def _module(module: str, release: str, root: str) -> bool:
    from testbed.caps import module_state

    return module_state(module, release, root) != "missing"


def features(release: Optional[str] = None, root: str = "/") -> Dict[str, bool]:
    """Every feature of ``FEATURES`` for kernel ``release`` (default: the running one)."""
    release = release or running_release()
    ver = version_tuple(release)
    have = {name: _module(mod, release, root) for name, mod in _MODULE.items()}
    have["flower_hash"] = have["flower"] and ver >= FLOWER_HASH_KERNEL
    have["rxe_netns"] = have["rxe"] and ver >= RXE_NETNS_KERNEL
    return {name: have[name] for name in FEATURES}


def has(feature: str, release: Optional[str] = None, root: str = "/") -> bool:
    if feature not in FEATURES:
        raise KeyError(f"unknown kernel feature {feature!r}; one of: {', '.join(FEATURES)}")
    return features(release, root)[feature]


def needed_kernel(feature: str) -> str:
    """A phrase naming the kernel a feature needs, for error messages."""
    if feature == "rxe_netns":
        major, minor = RXE_NETNS_KERNEL
        return f"Linux {major}.{minor} or newer (in the VM lane: `testbed vm --kernel 7.3`)"
    if feature == "flower_hash":
        return "Linux {}.{} or newer".format(*FLOWER_HASH_KERNEL)
    return f"a kernel with {FEATURES[feature]}"


def in_vm() -> bool:
    return os.environ.get("TESTBED_IN_VM") == "1"
