"""What this machine can do: root, netns, veth, bonding, cls_flower, act_mirred, clsact, flower's hash key, RPS.

Pure reads (``/sys/module``, ``modules.builtin``, ``modules.dep``, ``/proc``);
nothing is loaded or created by ``check()``. ``ensure_modules()`` is the one
place that loads a module, and only one the kernel ships as a loadable file.
"""

from __future__ import annotations

import functools
import gzip
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from testbed.errors import CapabilityError
from testbed.kfeatures import FLOWER_HASH_KERNEL, version_tuple

VM_HINT = "or run it in the VM lane, as root: `testbed vm -- testbed ...`"
# (capability, kernel module, what it is for)
MODULES: Tuple[Tuple[str, str, str], ...] = (
    ("veth", "veth", "the wires, VFs and representors"),
    ("bonding", "bonding", "the real Linux bond"),
    ("cls_flower", "cls_flower", "the offload rules (tc flower)"),
    ("act_mirred", "act_mirred", "redirecting frames between ports and representors"),
    ("act_gact", "act_gact", "drop/pass actions"),
    ("clsact", "sch_ingress", "the clsact qdisc that holds ingress/egress rules"),
)
CONFIG = {"veth": "CONFIG_VETH", "bonding": "CONFIG_BONDING", "cls_flower": "CONFIG_NET_CLS_FLOWER",
          "act_mirred": "CONFIG_NET_ACT_MIRRED", "act_gact": "CONFIG_NET_ACT_GACT",
          "sch_ingress": "CONFIG_NET_SCH_INGRESS", "rdma_rxe": "CONFIG_RDMA_RXE"}


@functools.lru_cache(maxsize=8)
def kernel_config(release: Optional[str] = None, root: str = "/", live: Optional[bool] = None) -> Dict[str, str]:
    """A kernel's config: /proc/config.gz when ``live`` (the running kernel: ``release``
    None or the running one), else or failing that /boot/config-RELEASE; {} if neither."""
    release = release or _release()
    live = _is_live(release) if live is None else live
    paths = ([("proc/config.gz", True)] if live else []) + [(f"boot/config-{release}", False)]
    for rel, gz in paths:
        try:
            with (gzip.open if gz else open)(os.path.join(root, rel), "rt") as fh:
                text = fh.read()
            break
        except OSError:
            continue
    else:
        return {}
    return dict(m.groups() for m in re.finditer(r"^(CONFIG_\w+)=(\S+)$", text, re.M))


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    loadable: Optional[str] = None  # module name that modprobe would load


def _release() -> str:
    return platform.release()


def _is_live(release: str) -> bool:
    return release == _release()


def module_state(module: str, release: Optional[str] = None, root: str = "/", live: Optional[bool] = None) -> str:
    """'loaded', 'builtin', 'loadable' or 'missing' for kernel ``release`` (default: the running one).

    Only the running kernel (``live``; by default: ``release`` is the running one) is asked
    about loaded modules (/sys/module) and /proc/config.gz: another installed kernel is judged
    by its own /boot/config-RELEASE and /lib/modules/RELEASE alone."""
    release = release or _release()
    live = _is_live(release) if live is None else live
    if live and os.path.isdir(os.path.join(root, "sys/module", module)):
        return "loaded"
    if kernel_config(release, root, live).get(CONFIG.get(module, ""), "") == "y":
        return "builtin"
    moddir = os.path.join(root, "lib/modules", release)
    pat = re.compile(rf"(^|/){re.escape(module)}\.ko(\.[a-z]+)?(:|$)", re.M)
    for fname, state in (("modules.builtin", "builtin"), ("modules.dep", "loadable")):
        try:
            with open(os.path.join(moddir, fname)) as fh:
                if pat.search(fh.read()):
                    return state
        except OSError:
            continue
    if not os.path.exists(os.path.join(moddir, "modules.dep")) and os.path.isdir(moddir):
        from testbed.vmkernel import module_names  # no depmod index: look at the files themselves

        if module in module_names(Path(moddir)):
            return "loadable"
    return "missing"


def check(root: str = "/") -> List[Check]:
    out: List[Check] = []
    is_root = os.geteuid() == 0
    out.append(Check("root", is_root, "running as root" if is_root else f"running as uid {os.geteuid()}",
                     "" if is_root else "run with sudo"))
    has_netns = os.path.exists(os.path.join(root, "proc/self/ns/net"))
    out.append(Check("netns", has_netns, "network namespaces supported" if has_netns else "no /proc/self/ns/net",
                     "" if has_netns else "a kernel with CONFIG_NET_NS, " + VM_HINT))
    for name, module, purpose in MODULES:
        state = module_state(module, root=root)
        ok = state != "missing"
        detail = f"{module}: {state} ({purpose})"
        out.append(Check(name, ok, detail, "" if ok else f"this kernel has no {module}: {VM_HINT}",
                         loadable=module if state == "loadable" else None))
    ver = version_tuple(_release())
    ok = ver >= FLOWER_HASH_KERNEL
    out.append(Check("flower-hash", ok, f"kernel {ver[0]}.{ver[1]}: flower hash key "
                     + ("supported" if ok else f"needs {FLOWER_HASH_KERNEL[0]}.{FLOWER_HASH_KERNEL[1]}+"),
                     "" if ok else f"a newer kernel, {VM_HINT}"))
    rps = os.path.exists(os.path.join(root, "sys/class/net/lo/queues/rx-0/rps_cpus"))
    out.append(Check("rps", rps, "RPS available (kernel computes the RX hash)" if rps else "no rps_cpus in sysfs",
                     "" if rps else f"a kernel with CONFIG_RPS, {VM_HINT}"))
    return out


def as_dicts(checks: List[Check]) -> List[dict]:
    return [asdict(c) for c in checks]


def ensure_modules(checks: Optional[List[Check]] = None) -> List[str]:
    """Refuse (CapabilityError naming every missing piece) or load the loadable modules; returns those loaded."""
    checks = checks if checks is not None else check()
    missing = [c for c in checks if not c.ok]
    if missing:
        lines = "; ".join(f"{c.name}: {c.detail}" for c in missing)
        fixes = sorted({c.fix for c in missing if c.fix})
        raise CapabilityError(f"this machine cannot run a lab: {lines}", fix=" / ".join(fixes))
    loaded = []
    modprobe = shutil.which("modprobe") or "/sbin/modprobe"
    for c in checks:
        if c.loadable:
            res = subprocess.run([modprobe, c.loadable], capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise CapabilityError(f"modprobe {c.loadable} failed: {res.stderr.strip()}",
                                      fix=f"load it by hand (`modprobe {c.loadable}`), {VM_HINT}")
            loaded.append(c.loadable)
    return loaded
