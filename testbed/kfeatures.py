"""What a kernel offers the lab, by name: the one table both the VM lane (``--list-kernels``,
``doctor``), ``up``'s refusals and the tests' ``@pytest.mark.needs(FEATURE)`` use.

A feature is decided from the kernel's release and its module files only, so it can be
answered for an installed kernel that is not running (the VM lane's kernels) as well as
for the running one. Nothing is loaded or created here.

``bond_options(release)`` is the set of bonding options (bond_options.c's names, the
words ``ip link ... type bond`` and sysfs take) the kernel's own bonding module knows,
read from the module file itself.

Features:
  bonding, flower, mirred  -- the module exists (loaded, built in or a module file)
  flower_hash              -- flower's TCA_FLOWER_KEY_HASH (Linux 5.13+)
  rxe                      -- Soft-RoCE (rdma_rxe) exists
  rxe_netns                -- rxe binds its UDP 4791 socket per network namespace (Linux 7.1+),
                              so an RDMA device made inside a lab namespace works
"""

from __future__ import annotations

import functools
import gzip
import lzma
import os
import platform
import re
import struct
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, Optional, Tuple

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


# Every option name of drivers/net/bonding/bond_options.c (bond_opts[].name) up to Linux 7.3,
# in the table's order.  A kernel "knows" one when its bonding module carries the name as a
# string of its read-only data, where the table's names live (checked on Debian's 6.1, 6.12
# and 7.3: lacp_strict is 7.3's alone).  Names are looked up, not guessed from versions,
# because distribution kernels backport options.
BOND_OPTION_NAMES: Tuple[str, ...] = (
    "mode", "packets_per_slave", "xmit_hash_policy", "arp_validate", "arp_all_targets",
    "fail_over_mac", "arp_interval", "arp_ip_target", "downdelay", "updelay", "lacp_rate",
    "min_links", "ad_select", "num_unsol_na", "miimon", "primary", "primary_reselect",
    "use_carrier", "active_slave", "queue_id", "all_slaves_active", "resend_igmp", "lp_interval",
    "slaves", "tlb_dynamic_lb", "ad_actor_sys_prio", "ad_actor_system", "ad_user_port_key",
    "num_grat_arp", "peer_notif_delay", "lacp_active", "arp_missed_max", "ns_ip6_target", "prio",
    "coupled_control", "broadcast_neighbor", "actor_port_prio", "lacp_strict",
)
AD_SELECT_PRIO = "ad_select prio"  # in bond_options() when the module's ad_select takes prio (Linux 6.18+)
MODULE_MAX_BYTES = 64 << 20  # a decompressed bonding.ko is ~0.6 MB; refuse to inflate a bomb
_DECOMPRESS = {".xz": lzma.open, ".gz": gzip.open}


def _module_file(module: str, release: str, root: str) -> Optional[Path]:
    """The module's file under /lib/modules/RELEASE (its modules.dep entry, else a walk)."""
    moddir = Path(root, "lib/modules", release)
    pat = re.compile(rf"^(\S*/{re.escape(module)}\.ko(?:\.(?:xz|gz|zst))?):", re.M)
    try:
        m = pat.search((moddir / "modules.dep").read_text())
        if m and (moddir / m.group(1)).is_file():
            return moddir / m.group(1)
    except OSError:
        pass
    for path in sorted(moddir.glob(f"kernel/**/{module}.ko*")):
        if path.is_file():
            return path
    return None


def _read_module(path: Path) -> bytes:
    """The ELF bytes of a module file, decompressed (.xz, .gz, or .zst with the zstandard
    package); b"" when unreadable or over MODULE_MAX_BYTES."""
    try:
        opener = _DECOMPRESS.get(path.suffix)
        if path.suffix == ".zst":
            import zstandard  # type: ignore[import-not-found]

            with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as fh:
                return _bounded(fh.read(MODULE_MAX_BYTES + 1))
        with (opener(path, "rb") if opener else path.open("rb")) as fh:
            return _bounded(fh.read(MODULE_MAX_BYTES + 1))
    except (OSError, EOFError, lzma.LZMAError, ImportError, ValueError):
        return b""


def _bounded(data: bytes) -> bytes:
    return data if len(data) <= MODULE_MAX_BYTES else b""


def _rodata(elf: bytes) -> Iterator[bytes]:
    """The contents of an ELF64 little-endian object's ``.rodata*`` sections."""
    if elf[:6] != b"\x7fELF\x02\x01" or len(elf) < 64:
        return
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    if shentsize < 64 or shoff + shnum * shentsize > len(elf) or shstrndx >= shnum:
        return

    def section(i: int) -> Tuple[int, int, int]:  # name offset, file offset, size
        name, _, _, _, off, size = struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize)
        return name, off, size

    _, stroff, strsize = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        end = elf.find(b"\0", stroff + name, stroff + strsize)
        if elf[stroff + name:end].startswith(b".rodata") and off + size <= len(elf):
            yield elf[off:off + size]


@functools.lru_cache(maxsize=16)
def bond_options(release: Optional[str] = None, root: str = "/") -> FrozenSet[str]:
    """The bonding options kernel ``release`` (default: the running one) knows, read from
    its bonding module; empty when the module file is absent or unreadable (bonding built
    in, or no bonding at all)."""
    path = _module_file("bonding", release or running_release(), root)
    if path is None:
        return frozenset()
    module = _read_module(path)
    words = set()
    for data in _rodata(module):
        words.update(re.findall(rb"(?<=\0)[a-z0-9_]+(?=\0)", b"\0" + data))
    names = {name for name in BOND_OPTION_NAMES if name.encode() in words}
    # ``ad_select prio`` is a value, not an option name: the module's BTF names the enum member
    # (BOND_AD_PRIO). Debian backported actor_port_prio to 6.1 and 6.12 without it (their bonding
    # refuses ad_select 3 with EINVAL); without BTF, upstream's pairing is the guess.
    if (b"\0BOND_AD_PRIO\0" in module if b"\0BOND_AD_COUNT\0" in module else "actor_port_prio" in names):
        names.add(AD_SELECT_PRIO)
    return frozenset(names)


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
