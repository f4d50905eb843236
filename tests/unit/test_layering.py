"""The layering holds by construction: checked from the source (ast), so a new import that breaks it fails here.

    front doors (cli, commands, demo, pytest_plugin, mininet)
      -> lab, bringup, verify, status            -> traffic/ (packets, streams; only testbed.errors)
      -> realize/teardown, agent (launcher, status, mapping to others)
      -> tc/ (flower encoding)   bond/ (options, wire, state, ports)
      -> nlpipe, rawnl, nl, topology, errors
"""

from __future__ import annotations

import ast
import os
from typing import Iterator, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT_PUBLIC = {"testbed.agent", "testbed.agent.launcher", "testbed.agent.status", "testbed.agent.mapping",
                "testbed.agent.AGENT_TIMEOUT"}  # the package's one constant: the CLI reads it without importing more


def modules(package: str) -> Iterator[Tuple[str, str]]:
    """(dotted module name, path) of every .py file under ``package``."""
    base = os.path.join(ROOT, *package.split("."))
    for dirpath, _dirs, files in os.walk(base):
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), os.path.join(dirpath, f)


def imports(path: str, module: str) -> Iterator[Tuple[int, str]]:
    """(line, dotted name) of every import in the file, wherever it stands (also inside functions);
    ``from a import b`` yields ``a.b`` (b may be a module or a name in a)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                yield node.lineno, f"{base}.{a.name}"


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(package: str, allowed) -> list:
    out = []
    for module, path in modules(package):
        for line, name in imports(path, module):
            why = allowed(module, name)
            if why:
                out.append(f"{os.path.relpath(path, ROOT)}:{line}: {name} ({why})")
    return out


def test_outside_the_agent_only_its_launcher_status_and_mapping_are_used():
    def rule(module: str, name: str):
        if under(module, "testbed.agent") or not under(name, "testbed.agent"):
            return None
        parts = name.split(".")
        used = ".".join(parts[:3])  # testbed.agent.<module>
        return None if used in AGENT_PUBLIC else "the agent's internals: use its launcher or agent.status"

    assert violations("testbed", rule) == []


@pytest.mark.parametrize("package", ["testbed.tc"])
def test_tc_imports_neither_agent_nor_bond(package):
    def rule(module: str, name: str):
        for layer in ("testbed.agent", "testbed.bond", "testbed.verify", "testbed.lab", "testbed.realize"):
            if under(name, layer):
                return f"tc/ sits below {layer}"
        return None

    assert violations(package, rule) == []


def test_bond_and_raw_netlink_sit_below_agent_tc_and_lab():
    def rule(module: str, name: str):
        if not (under(module, "testbed.bond") or module in ("testbed.rawnl", "testbed.nlpipe", "testbed.rtnlmsg")):
            return None
        for layer in ("testbed.agent", "testbed.tc", "testbed.verify", "testbed.realize", "testbed.fnbuild",
                      "testbed.status", "testbed.lab", "testbed.mininet", "testbed.commands", "traffic"):
            if under(name, layer):
                return f"{module} sits below {layer}"
        return None

    assert violations("testbed", rule) == []


def test_traffic_imports_nothing_from_testbed_but_errors():
    def rule(module: str, name: str):
        if under(name, "testbed") and not under(name, "testbed.errors"):
            return "traffic/ is usable without the lab: only testbed.errors"
        return None

    assert violations("traffic", rule) == []


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from testbed.agent.state import read_state\nfrom . import rules\n")
    got = list(imports(str(src), "testbed.agent.m"))
    assert (2, "testbed.agent.state.read_state") in got and (3, "testbed.agent.rules") in got
