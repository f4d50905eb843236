"""Which kernels can run the lab: the host's own, and the distro kernels for the VM lane.

A kernel can run the lab when it has bonding, cls_flower and act_mirred --
loaded, built in, or as a module file.  ``find_kernel`` picks the newest
installed ``/boot/vmlinuz-*`` whose modules are there; ``host_can_run_lab`` says
whether the running kernel itself will do, so the VM lane is not needed.
Every function takes the filesystem root as a parameter, so tests build a fake
``/boot`` and ``/lib/modules`` tree instead of needing a real one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Set, Tuple

from testbed.errors import VMError

LAB_MODULES = ("bonding", "cls_flower", "act_mirred")
INSTALL_KERNEL = "apt-get install -y linux-image-amd64"
_KO = re.compile(r"^(.+)\.ko(?:\.(?:xz|zst|gz))?$")


@dataclass(frozen=True)
class Kernel:
    """A bootable kernel image and its release (``uname -r`` inside the guest)."""

    path: str
    version: str


def version_key(version: str) -> Tuple[int, ...]:
    """Sort key of a kernel release: its numbers in order (6.12.1 > 6.1.0-56)."""
    return tuple(int(n) for n in re.findall(r"\d+", version))


def module_names(moddir: Path) -> Set[str]:
    """Modules a kernel has: ``*.ko[.xz|.zst|.gz]`` files under ``moddir`` and its
    ``modules.builtin`` entries; names use ``_`` as the kernel does."""
    files: List[str] = []
    for _, _, names in os.walk(moddir):
        files.extend(names)
    try:
        files.extend(os.path.basename(p) for p in (moddir / "modules.builtin").read_text().split())
    except OSError:
        pass
    return {m.group(1).replace("-", "_") for m in map(_KO.match, files) if m}


def find_kernel(root: str | Path = "/") -> Kernel:
    """The newest ``<root>/boot/vmlinuz-<ver>`` whose ``<root>/lib/modules/<ver>`` has
    bonding, cls_flower and act_mirred; VMError naming what each candidate lacks."""
    root = Path(root)
    images = sorted((root / "boot").glob("vmlinuz-*"), key=lambda p: version_key(p.name[8:]))
    problems = []
    for image in reversed(images):
        version = image.name[len("vmlinuz-"):]
        moddir = root / "lib" / "modules" / version
        if not moddir.is_dir():
            problems.append(f"{image} has no {moddir}")
            continue
        have = module_names(moddir)
        missing = [m for m in LAB_MODULES if m not in have]
        if missing:
            problems.append(f"{moddir} lacks {', '.join(missing)}")
        elif not os.access(image, os.R_OK):
            problems.append(f"{image} is not readable (run as root)")
        else:
            return Kernel(str(image), version)
    detail = "; ".join(problems) or f"no {root / 'boot'}/vmlinuz-* at all"
    raise VMError(f"no distro kernel with {', '.join(LAB_MODULES)}: {detail}", fix=INSTALL_KERNEL)


def kernel_version(path: str) -> str:
    """Release of a kernel image: from its name ``vmlinuz-<ver>``, else from the
    bzImage header's version string, else the file name."""
    name = os.path.basename(path)
    if name.startswith("vmlinuz-"):
        return name[len("vmlinuz-"):]
    try:
        with open(path, "rb") as f:
            head = f.read(0x210)
            if head[0x202:0x206] == b"HdrS":
                f.seek(int.from_bytes(head[0x20E:0x210], "little") + 0x200)
                text = f.read(256).split(b"\0")[0].decode("ascii", "replace").split()
                if text:
                    return text[0]
    except OSError:
        pass
    return name


def host_can_run_lab(
    root: str | Path = "/", release: Optional[str] = None
) -> Tuple[bool, List[str]]:
    """Whether the running kernel has bonding, cls_flower and act_mirred -- loaded,
    built in, or as a module file -- and which of them it lacks (``testbed.caps`` decides)."""
    from testbed.caps import module_state

    missing = [m for m in LAB_MODULES if module_state(m, release or os.uname().release, str(root)) == "missing"]
    return not missing, missing
