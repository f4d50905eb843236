"""The VM lane's import cache (testbed.vmcache): what it overlays and what the tar holds."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tarfile

from testbed import vmcache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_roots_skip_the_project_directory_and_nested_directories(tmp_path):
    proj = tmp_path / "proj"
    for d in ("proj/testbed", "proj/traffic", "proj/.venv/lib/site", "lib/py", "lib/py/dynload"):
        (tmp_path / d).mkdir(parents=True)
    path = ["", str(proj), str(tmp_path / "lib/py"), str(tmp_path / "lib/py/dynload"),
            str(proj / ".venv/lib/site"), str(tmp_path / "missing")]
    roots = vmcache._roots(path, str(proj))
    assert str(proj) not in roots  # shared read-write with the host: never overlaid
    assert str(tmp_path / "lib/py/dynload") not in roots  # inside lib/py
    assert sorted(roots) == sorted([str(tmp_path / "lib/py"), str(proj / ".venv/lib/site"),
                                    str(proj / "testbed"), str(proj / "traffic")])


def test_build_packs_the_lanes_imports_once(tmp_path, monkeypatch):
    monkeypatch.delenv(vmcache.ENV_OFF, raising=False)
    monkeypatch.setattr(vmcache, "CACHE_DIR", str(tmp_path / "cache"))  # absolute: join keeps it
    path = vmcache.build(sys.executable, ROOT)
    assert path and path.startswith(str(tmp_path))
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        roots = json.load(tar.extractfile(vmcache.MANIFEST))
    assert os.path.join(ROOT, "testbed") in roots
    assert os.path.join(ROOT, "testbed", "agent", "loop.py").lstrip("/") in names
    loop_pyc = importlib.util.cache_from_source(os.path.join(ROOT, "testbed", "agent", "loop.py"))
    assert loop_pyc.lstrip("/") in names  # compiled, whatever PYTHONDONTWRITEBYTECODE says
    assert any(n.endswith("pyroute2/__init__.py") for n in names)
    assert not any(n.startswith(os.path.join(ROOT, "tests").lstrip("/")) for n in names)
    mtime = os.stat(path).st_mtime_ns
    assert vmcache.build(sys.executable, ROOT) == path and os.stat(path).st_mtime_ns == mtime


def test_build_is_skipped_when_disabled_or_impossible(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(vmcache.ENV_OFF, "1")
    assert vmcache.build(sys.executable, ROOT) is None
    monkeypatch.delenv(vmcache.ENV_OFF)
    assert vmcache.build(str(tmp_path / "no-python"), ROOT) is None
    assert "no import cache for the guest" in capsys.readouterr().err


def test_build_packs_compiled_project_modules(tmp_path, monkeypatch):
    """A fresh clone on a machine with PYTHONDONTWRITEBYTECODE=1 has no .pyc files: the
    cache compiles them, so no guest process compiles the project under TCG."""
    proj = tmp_path / "proj"
    (proj / "testbed").mkdir(parents=True)
    (proj / "traffic").mkdir()
    (proj / "testbed" / "__init__.py").write_text("")
    (proj / "testbed" / "mod.py").write_text("X = 1\n")
    (proj / "traffic" / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    vmcache.compile_project(sys.executable, str(proj))
    pyc = importlib.util.cache_from_source(str(proj / "testbed" / "mod.py"))
    assert os.path.isfile(pyc)
    mtime = os.stat(pyc).st_mtime_ns
    vmcache.compile_project(sys.executable, str(proj))  # fresh ones are left as they are
    assert os.stat(pyc).st_mtime_ns == mtime
