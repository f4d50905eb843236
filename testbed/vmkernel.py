"""Which kernels can run the lab: the host's own, and the distro kernels for the VM lane.

A kernel can run the lab when it has bonding, cls_flower and act_mirred --
loaded, built in, or as a module file.  ``installed_kernels`` lists the images in
``/boot/vmlinuz-*`` and ``/lib/modules/*/vmlinuz``; ``find_kernel`` picks the newest
whose modules are there, or the one a version such as ``7.3`` names; ``host_can_run_lab`` says
whether the running kernel itself will do, so the VM lane is not needed.
Every function takes the filesystem root as a parameter, so tests build a fake
``/boot`` and ``/lib/modules`` tree instead of needing a real one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

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


def installed_kernels(root: str | Path = "/") -> List[Kernel]:
    """Every bootable kernel image: ``/boot/vmlinuz-<ver>`` and ``/lib/modules/<ver>/vmlinuz``
    (where Debian's ``linux-binary-*`` packages put it), newest first; one per release
    (the /boot one when both exist)."""
    root = Path(root)
    found = {}
    for image in sorted((root / "lib" / "modules").glob("*/vmlinuz")):
        found[image.parent.name] = image
    for image in sorted((root / "boot").glob("vmlinuz-*")):
        found[image.name[len("vmlinuz-"):]] = image
    return [Kernel(str(found[v]), v) for v in sorted(found, key=version_key, reverse=True)]


def lab_problem(kernel: Kernel, root: str | Path = "/") -> Optional[str]:
    """Why ``kernel`` cannot run the lab in the VM lane (no modules, no bonding/flower/mirred,
    unreadable image), or None."""
    moddir = Path(root) / "lib" / "modules" / kernel.version
    if not moddir.is_dir():
        return f"{kernel.path} has no {moddir}"
    have = module_names(moddir)
    missing = [m for m in LAB_MODULES if m not in have]
    if missing:
        return f"{moddir} lacks {', '.join(missing)}"
    if not os.access(kernel.path, os.R_OK):
        return f"{kernel.path} is not readable (run as root)"
    return None


def matches(spec: str, version: str) -> bool:
    """Whether release ``version`` is the kernel ``spec`` names: the release itself or a
    prefix of it ending at a version boundary ("6.1" is 6.1.0-56-amd64, not 6.12.117)."""
    return version == spec or (version.startswith(spec) and not version[len(spec)].isdigit())


def find_kernel(root: str | Path = "/", spec: Optional[str] = None) -> Kernel:
    """The newest installed kernel (``installed_kernels``) that can run the lab, or, with
    ``spec``, the newest one whose release ``matches`` it; VMError naming what each
    candidate lacks, or the installed releases when none matches."""
    kernels = installed_kernels(root)
    if spec is not None:
        chosen = [k for k in kernels if matches(spec, k.version)]
        if not chosen:
            have = ", ".join(k.version for k in kernels) or "none"
            raise VMError(f"no installed kernel matches --kernel {spec!r} (installed: {have})",
                          fix="name one of those, a release prefix such as 7.3, or a vmlinuz path; "
                              "tools/setup installs 6.1, 6.12 and 7.3")
        kernels = chosen
    problems = []
    for kernel in kernels:
        problem = lab_problem(kernel, root)
        if problem is None:
            return kernel
        problems.append(problem)
    detail = "; ".join(problems) or f"no {Path(root) / 'boot'}/vmlinuz-* or lib/modules/*/vmlinuz at all"
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

    release = release or os.uname().release  # the running kernel's: loaded modules count (live)
    missing = [m for m in LAB_MODULES if module_state(m, release, str(root), live=True) == "missing"]
    return not missing, missing


def describe_kernels(root: str | Path = "/") -> List[Dict[str, object]]:
    """Each installed kernel, newest first, with what it offers the lab: its release and
    image, whether the VM lane can boot it for a lab (and why not), whether it is the
    lane's default or the running kernel, ``kfeatures.features`` and ``kfeatures.bond_options``."""
    from testbed import kfeatures

    rows: List[Dict[str, object]] = []
    default_taken = False
    for kernel in installed_kernels(root):
        problem = lab_problem(kernel, root)
        default = problem is None and not default_taken
        default_taken = default_taken or default
        rows.append({
            "release": kernel.version,
            "path": kernel.path,
            "lab": problem is None,
            "problem": problem,
            "default": default,
            "running": kernel.version == os.uname().release,
            "features": kfeatures.features(kernel.version, str(root)),
            "bond_options": sorted(kfeatures.bond_options(kernel.version, str(root))),
        })
    return rows


def best_kernel(prefer: str, root: str | Path = "/") -> Optional[Kernel]:
    """Where to run a lab that wants kernel feature ``prefer`` (e.g. rxe_netns): None for this
    kernel, when it can run a lab and has the feature or no installed kernel has it; else the
    newest installed kernel with the feature, or failing that the lane's default."""
    from testbed import kfeatures

    if prefer not in kfeatures.FEATURES:
        raise KeyError(f"unknown kernel feature {prefer!r}; one of: {', '.join(kfeatures.FEATURES)}")
    host_ok, _ = host_can_run_lab(root)
    rows = describe_kernels(root)
    with_feature = [r for r in rows if r["lab"] and r["features"][prefer]]
    if host_ok and (kfeatures.has(prefer, root=str(root)) or not with_feature):
        return None
    if with_feature:
        return Kernel(str(with_feature[0]["path"]), str(with_feature[0]["release"]))
    return find_kernel(root)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m testbed.vmkernel best FEATURE``: ``host`` or the image to boot (tools/demo)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "best":
        print("usage: python -m testbed.vmkernel best FEATURE", file=sys.stderr)
        return 2
    try:
        kernel = best_kernel(args[1])
    except (VMError, KeyError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 9
    print("host" if kernel is None else kernel.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
