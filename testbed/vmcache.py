"""The VM lane's import cache: the Python files the lane imports, in the guest's RAM.

Under TCG every file the guest reads crosses 9p with no page cache (virtme-ng mounts it
``cache=none``): importing the agent took 17-20 s in a 7.3 guest against 5 s with the
same files in a tmpfs, and every lab ``up``, CLI call and pytest session pays it. So the
host lists the files a lane process imports (``hot_files``: modules and their ``.pyc``,
the site directories' ``.pth`` and distribution metadata that pytest's plugin lookup
reads), packs them into one uncompressed tar (one large read over 9p instead of thousands
of small ones), and the guest unpacks it into a tmpfs and mounts each root read-only as an
overlay over the original directory (``mount_in_guest``): a file in the cache is read from
RAM, any other falls through to 9p unchanged. A cache that cannot be built or mounted is
skipped with a warning, never an error: it changes speed, not behaviour.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

CACHE_DIR = ".vmcache"  # under the package root: the guest sees it (virtme-ng masks /tmp and /var)
GUEST_DIR = "/run/testbed-hot"
ENV = "TESTBED_VM_HOT"  # in the guest: the tar to mount
ENV_OFF = "TESTBED_VM_NO_HOT"  # on the host: 1 disables the cache
MANIFEST = "testbed-hot-roots.json"  # in the tar: the roots to overlay
# what lane processes import: the CLI and agent, the test suite's libraries
HOT_IMPORTS = ("testbed.cli", "testbed.agent.loop", "testbed.bringup", "testbed.pytest_plugin",
               "testbed.verify.lab_traffic", "pyroute2", "scapy.all", "jsonschema", "yaml",
               "pytest", "pytest_timeout", "pyverbs.device", "pyverbs.cmid", "traffic.verbs_peer")
_COLLECT = r"""
import importlib, importlib.util, json, pkgutil, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
for pkg in ("testbed", "traffic"):
    try:
        p = importlib.import_module(pkg)
    except Exception:
        continue
    for info in pkgutil.walk_packages(p.__path__, pkg + "."):
        try:
            importlib.import_module(info.name)
        except BaseException:
            pass
files = []
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if not f:
        continue
    files.append(f)
    if f.endswith(".py"):
        try:
            files.append(importlib.util.cache_from_source(f))
        except Exception:
            pass
print(json.dumps({"files": files, "path": sys.path}))
"""


def _roots(path: Sequence[str], project: str) -> List[str]:
    """Directories to overlay: the interpreter's sys.path directories other than the project
    directory itself (shared read-write with the host, so it stays as it is) and those
    inside another root, plus the project's two packages."""
    dirs = [os.path.realpath(p) for p in path if p and os.path.isdir(p)]
    dirs = [d for d in dirs if d != project and d != "/"]
    dirs += [os.path.join(project, pkg) for pkg in ("testbed", "traffic")]
    out: List[str] = []
    for d in sorted(set(dirs), key=len):
        if not any(d.startswith(r + os.sep) for r in out):
            out.append(d)
    return out


def _metadata(root: str) -> Iterable[str]:
    """A site directory's top-level files (.pth, editable finders) and distribution metadata."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for e in entries:
        if e.is_file():
            yield e.path
        elif e.is_dir() and e.name.endswith((".dist-info", ".egg-info")):
            for sub in os.scandir(e.path):
                if sub.is_file():
                    yield sub.path


def hot_files(python: str, project: str) -> Tuple[List[str], Dict[str, List[str]]]:
    """(roots, {root: files under it}) for ``python`` run in ``project``."""
    out = subprocess.run([python, "-c", _COLLECT, *HOT_IMPORTS], cwd=project, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if out.returncode != 0:
        raise OSError(f"listing the lane's imports failed: {out.stderr.strip()[-200:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    roots = _roots(data["path"], os.path.realpath(project))
    by_root: Dict[str, List[str]] = {r: [] for r in roots}
    candidates = [os.path.realpath(f) for f in data["files"]]
    for r in roots:
        candidates += list(_metadata(r))
    for f in sorted(set(candidates)):
        root = next((r for r in roots if f.startswith(r + os.sep)), None)
        if root and os.path.isfile(f):
            by_root[root].append(f)
    return roots, {r: fs for r, fs in by_root.items() if fs}


def compile_project(python: str, project: str) -> None:
    """Write the project's ``.pyc`` files (those missing or stale) for ``python``.

    A fresh clone has none, and a machine with PYTHONDONTWRITEBYTECODE=1 (CI's) never writes
    them on import; in the guest the packages are a read-only overlay besides. Without them
    every guest process compiles every project module it imports, under TCG, every time."""
    dirs = [os.path.join(project, pkg) for pkg in ("testbed", "traffic")]
    subprocess.run([python, "-m", "compileall", "-q", *[d for d in dirs if os.path.isdir(d)]],
                   cwd=project, capture_output=True, timeout=300, check=True)


def _key(by_root: Dict[str, List[str]]) -> str:
    h = hashlib.sha256()
    for fs in by_root.values():
        for f in fs:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()[:16]


def build(python: str = sys.executable, project: Optional[str] = None) -> Optional[str]:
    """The tar for the guest (made once per set of files and their mtimes), or None with a
    warning on stderr when it cannot be made or TESTBED_VM_NO_HOT=1."""
    if os.environ.get(ENV_OFF) == "1":
        return None
    project = project or os.getcwd()
    try:
        compile_project(python, project)
        _, by_root = hot_files(python, project)
        cache_dir = os.path.join(project, CACHE_DIR)
        path = os.path.join(cache_dir, f"hot-{_key(by_root)}.tar")
        if not os.path.exists(path):
            os.makedirs(cache_dir, mode=0o755, exist_ok=True)
            tmp = f"{path}.{os.getpid()}"
            with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
                roots = json.dumps(list(by_root)).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size = len(roots)
                tar.addfile(info, io.BytesIO(roots))
                for fs in by_root.values():
                    for f in fs:
                        tar.add(f, arcname=f.lstrip("/"), recursive=False)
            os.replace(tmp, path)
            _prune(path)
        return path
    except (OSError, ValueError, subprocess.SubprocessError, tarfile.TarError) as exc:
        print(f"testbed vm: no import cache for the guest ({exc}); imports read over 9p "
              f"(slower, same results)", file=sys.stderr)
        return None


def _prune(keep: str, age_s: float = 3600.0) -> None:
    """Remove older caches (a guest reads its tar only while it boots)."""
    now = time.time()
    for e in os.scandir(os.path.dirname(keep)):
        if e.name.startswith("hot-") and e.path != keep and now - e.stat().st_mtime > age_s:
            try:
                os.unlink(e.path)
            except OSError:
                pass


def mount_in_guest(tar: str) -> List[str]:
    """In the guest: unpack ``tar`` into a tmpfs and overlay each root; the roots mounted.
    Raises OSError (the caller warns and goes on) if the tmpfs or tar fails; a root whose
    overlay fails is left as it is."""
    os.makedirs(GUEST_DIR, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "testbed-hot", GUEST_DIR], check=True)
    subprocess.run(["tar", "-xf", tar, "-C", GUEST_DIR], check=True)
    with open(os.path.join(GUEST_DIR, MANIFEST)) as f:
        roots = json.load(f)
    done = []
    for root in roots:
        lower = GUEST_DIR + root
        if os.path.isdir(lower) and subprocess.call(
                ["mount", "-t", "overlay", "testbed-hot", "-o", f"lowerdir={lower}:{root}", root]) == 0:
            done.append(root)
    return done
