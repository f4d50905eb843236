"""Every command pays its imports before it does anything: under TCG (the VM lane) Python runs ~13x slower and
reads each module over 9p, so a command imports only what its own path uses. Held here, per command, in a
fresh interpreter: the real ``testbed.cli.main`` runs the command as far as it gets without a kernel lab, then
the modules it imported are checked.

* nothing imports scapy (only packets need it), jsonschema (only a file being validated), matplotlib/numpy
  (only a plot), PyYAML (only a file being read);
* ``--help``, ``list``, ``status``, ``fail``, ``restore`` and a refused ``up`` import no pyroute2 either
  (``list`` reads records, ``status`` reads the bond and the rules over raw rtnetlink with ``tc.uapi``'s
  numbers, ``fail``/``restore`` are one raw RTM_SETLINK); ``clean`` and the agent may (namespace removal,
  the agent's IPRoute).

The lab these run against is a record only (in a private ``TESTBED_RUN_DIR``), its namespaces do not exist:
``status``, ``fail``, ``restore`` and the agent go through their imports and stop at the first namespace
(exit 6; the agent 10). The root check is bypassed in the child (as root would pass it), so this runs without root.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from testbed import labstore, topofile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = "zzlean"  # a lab name no machine has: its namespaces never exist
HEAVY = ("scapy", "jsonschema", "matplotlib", "numpy", "yaml")
NO_NETLINK_LIB = HEAVY + ("pyroute2",)

CHILD = """
import json, sys
from testbed import cli
from testbed.commands import agent, lab
agent.require_root = lab.require_root = lambda what: None  # as root passes it: the path beyond the check
try:
    code = cli.main(sys.argv[2:])
except SystemExit as exc:  # --help
    code = exc.code
with open(sys.argv[1], "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""

BAD_YAML = os.path.join(ROOT, "tests", "unit", "bad_topologies", "01-not-yaml.yaml")
PATHS = [  # (argv, exit status expected, top-level packages it must not import)
    (["--help"], 0, NO_NETLINK_LIB),
    (["list", "--json"], 0, NO_NETLINK_LIB),
    (["fail", LAB, "server", "pf0"], 6, NO_NETLINK_LIB),
    (["restore", LAB, "server", "pf0", "--json"], 6, NO_NETLINK_LIB),
    (["up", BAD_YAML], 3, ("scapy", "jsonschema", "matplotlib", "numpy", "pyroute2")),  # refused while read
    (["status", LAB, "--json"], 6, NO_NETLINK_LIB),
    (["clean", "--lab", "nosuchlab"], 0, HEAVY),
    (["agent", LAB, "--foreground"], 10, HEAVY),  # AgentError: its first namespace is missing
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory holding one lab record (built from a shipped topology) and nothing else."""
    d = tmp_path_factory.mktemp("run")
    path = os.path.join(ROOT, "topologies", "active-backup.yaml")
    data = topofile.parse(topofile.read_text(path), path)
    rec = labstore.LabRecord(name=LAB, file=path, topology=data, state="up", pid=os.getpid(), agent=False)
    os.makedirs(d / LAB)
    (d / LAB / "lab.json").write_text(json.dumps(dataclasses.asdict(rec)))
    return d


def imported(argv, run_dir, tmp_path):
    out = tmp_path / "result.json"
    env = dict(os.environ, PYTHONPATH=ROOT, TESTBED_RUN_DIR=str(run_dir))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert out.exists(), proc.stderr
    result = json.loads(out.read_text())
    return result["code"], {m.split(".")[0] for m in result["modules"]}, proc.stderr


@pytest.mark.parametrize("argv,code,forbidden", PATHS, ids=[" ".join(p[0][:1]) for p in PATHS])
def test_a_command_imports_only_what_its_path_uses(argv, code, forbidden, run_dir, tmp_path):
    got, packages, stderr = imported(argv, run_dir, tmp_path)
    assert got == code, f"testbed {' '.join(argv)}: exit {got}, expected {code}: {stderr}"
    heavy = sorted(set(forbidden) & packages)
    assert not heavy, (f"testbed {' '.join(argv)} imports {', '.join(heavy)}: import it in the function that "
                       "needs it (every command pays the imports of its path; under TCG ~13x)")


@pytest.mark.parametrize("argv", [["--help"], ["list", "--json"]], ids=["--help", "list"])
def test_the_lightest_commands_stay_near_the_bare_interpreter(argv, run_dir, tmp_path):
    """Module count too (the guest reads each over 9p): argparse, json and the command modules, ~50 beyond
    ``python -c pass``; pyroute2 alone would add ~280, asyncio ~30."""
    bare = subprocess.run([sys.executable, "-c", "import sys; print(len(sys.modules))"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True, env=dict(os.environ, PYTHONPATH=ROOT))
    out = tmp_path / "result.json"
    env = dict(os.environ, PYTHONPATH=ROOT, TESTBED_RUN_DIR=str(run_dir))
    subprocess.run([sys.executable, "-c", CHILD, str(out), *argv], cwd=ROOT, env=env, capture_output=True,
                   timeout=120, check=False)
    extra = len(json.loads(out.read_text())["modules"]) - int(bare.stdout)
    assert extra < 90, f"testbed {argv[0]} imports {extra} modules beyond the bare interpreter's"


def test_the_check_sees_an_import_it_forbids(run_dir, tmp_path):
    """The same check on a child that does import one of them: it must see it (the test can fail)."""
    got, packages, _ = imported(["--help"], run_dir, tmp_path)
    assert got == 0 and "yaml" not in packages
    env = dict(os.environ, PYTHONPATH=ROOT, TESTBED_RUN_DIR=str(run_dir))
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, "-c", "import yaml\n" + CHILD, str(out), "--help"], cwd=ROOT, env=env,
                   capture_output=True, timeout=120, check=False)
    assert "yaml" in {m.split(".")[0] for m in json.loads(out.read_text())["modules"]}


def test_the_whole_status_path_imports_no_pyroute2():
    """``status`` stops at the first missing namespace above; what it would run beyond (the bond reader, the tc
    dump and its decoder, the renderer) must not import pyroute2 either, at module level -- nor subprocess
    (``ctypes.util.find_library`` ran ``ldconfig -p`` for the namespace helper's libc, ~0.1 s under TCG)."""
    code = ("import sys\nfrom testbed import status\nfrom testbed.tc import canonical, codec, ops, readback\n"
            "from testbed.commands import render\n"
            "print(sorted({m.split('.')[0] for m in sys.modules}\n"
            "             & {'pyroute2', 'scapy', 'yaml', 'jsonschema', 'subprocess'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
