"""Hostile topology files: every one refused by ``testbed up`` with exit 3 and ONE short line, fast, small.

The generator below writes 300+ files, one per mutation of a valid topology, in the
classes of issue 13: bytes that are not UTF-8, UTF-16/32 files, NUL and control
characters, deep nesting, alias bombs and anchors, integers with absurd digit
counts, oversized files and values, too many nodes, YAML tags, keys that are not
strings, duplicate keys, ``miimon: 0``, YAML syntax errors, every leaf of a valid
file replaced by a value of the wrong kind, and the hand-written
``bad_topologies/``. Non-regular paths (FIFO, devices, a directory, a socket) are
given as they are. Each goes through the real CLI entry point in-process
(``testbed.cli.main``), a handful through a real ``testbed up`` subprocess.

The process is made to look unprivileged (``os.geteuid`` -> 65534) while in-process
files run: a file that were wrongly accepted then meets the root check (exit 4, a
failed assertion here) instead of building a lab on the test machine.
"""

from __future__ import annotations

import copy
import glob
import io
import os
import resource
import socket
import subprocess
import sys
import time
import tracemalloc
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, Dict, List, Tuple

import pytest
import yaml

from testbed import cli, topofile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TESTBED = os.path.join(ROOT, ".venv", "bin", "testbed")
MAX_SECONDS = 2.0
MAX_PEAK_BYTES = 64 << 20  # Python allocations while one file is refused (tracemalloc, for TRACED)
MAX_RSS_GROWTH_KB = 100 << 10  # this process's resident high-water mark, over all files
TRACED = ("alias-bomb-9-description", "deep-seq-30000", "many-nodes-flow", "too-big-10mb", "bigint-ports-50000",
          "long-name", "many-hosts")
MAX_RSS_KB = 200 << 10  # a whole `testbed up` subprocess refusing a file
MAX_LINE = 600  # characters in the one line of output

BASE = """\
name: ab
description: active-backup bond, 2 VFs and an RDMA function
hosts:
  server:
    nic:
      ports: 2
      address: 198.18.0.1/24
      bond:
        mode: active-backup
        miimon: 10
        primary: pf0
        primary_reselect: always
      vfs:
        - {name: vf0, address: 198.18.0.11/24}
        - {name: vf1, address: 198.18.0.12/24}
      rdma: true
  client:
    address: 198.18.0.100/24
"""

Case = Tuple[str, bytes]


def _alias_bomb(levels: int, where: str) -> str:
    rows = ["[" + ",".join(["lol"] * 9) + "]"]
    for i in range(1, levels):
        rows.append("[" + ",".join([f"*l{i - 1}"] * 9) + "]")
    body = ", ".join(f"&l{i} {v}" for i, v in enumerate(rows))
    if where == "description":
        return f"name: ab\ndescription: [{body}]\nhosts: {{c: {{}}}}\n"
    if where == "unknown":
        return f"name: ab\nlaughs: [{body}]\nhosts: {{c: {{}}}}\n"
    return f"name: ab\nhosts: {{c: {{}}}}\n{where}: [{body}]\n"


def _leaves(data: Any, path: Tuple[Any, ...] = ()) -> List[Tuple[Tuple[Any, ...], Any]]:
    if isinstance(data, dict):
        return [leaf for k, v in data.items() for leaf in _leaves(v, path + (k,))]
    if isinstance(data, list):
        return [leaf for i, v in enumerate(data) for leaf in _leaves(v, path + (i,))]
    return [(path, data)]


def _mappings(data: Any, path: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    out = [path] if isinstance(data, dict) else []
    children = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for k, v in children:
        out += _mappings(v, path + (k,))
    return out


def _set(data: Any, path: Tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(data)
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


def _dump(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 20).encode()


HUGE = "x" * 60_000  # under the file cap: the value itself must not be echoed
WRONG_FOR_STRING = [HUGE, "a\0b", "a\nb\rc\x1b[31m", "", " ", "../../etc/passwd", "é" * 80, 12345, -1, 1.5,
                    None, [], {}, True, ["pf0"], {"a": 1}]
WRONG_FOR_INT = [-1, 10 ** 19, 1.5, "2", None, [], {}, True, 10 ** 6, HUGE, float("inf"), float("nan")]
WRONG_FOR_DESCRIPTION = [None, [], {}, 12, True, 1.5, [HUGE]]
WRONG_FOR_BOOL = [None, 12, "yes", [], HUGE, 1.5]


def _leaf_mutations() -> List[Case]:
    base = yaml.safe_load(BASE)
    cases: List[Case] = []
    for path, value in _leaves(base):
        key = path[-1]
        if key == "description":
            wrong = WRONG_FOR_DESCRIPTION
        elif isinstance(value, bool):
            wrong = WRONG_FOR_BOOL
        elif isinstance(value, int):
            wrong = WRONG_FOR_INT
        else:
            wrong = WRONG_FOR_STRING
        name = ".".join(map(str, path))
        cases += [(f"leaf-{name}-{i}", _dump(_set(base, path, w))) for i, w in enumerate(wrong)]
    for path in _mappings(base):  # an unknown key in every mapping, and one whose name is huge
        node = base
        for p in path:
            node = node[p]
        where = ".".join(map(str, path)) or "top"
        cases.append((f"unknown-key-{where}", _dump(_set(base, path + ("bogus",), 1) if path else
                                                    {**base, "bogus": 1})))
        cases.append((f"huge-key-{where}", _dump(_set(base, path + ("k" * 50_000,), 1) if path else
                                                 {**base, "k" * 50_000: 1})))
    for path in [("name",), ("hosts",), ("hosts", "server", "nic", "bond"), ("hosts", "server", "nic", "bond",
                                                                                "mode")]:
        data = copy.deepcopy(base)
        node = data
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]
        cases.append((f"missing-{'.'.join(path)}", _dump(data)))
    return cases


def _byte_mutations() -> List[Case]:
    lines = BASE.encode().splitlines(keepends=True)
    cases: List[Case] = []
    for i in range(len(lines)):
        for tag, junk in (("ff", b"\xff"), ("nul", b"\0"), ("ctl", bytes([1 + i % 8])), ("del", b"\x7f"),
                          ("lone-continuation", b"\x80"), ("truncated-utf8", b"\xc3"), ("surrogate", b"\xed\xa0\x80")):
            mutated = lines[:i] + [lines[i].rstrip(b"\n") + junk + b"\n"] + lines[i + 1:]
            cases.append((f"byte-{tag}-line{i + 1}", b"".join(mutated)))
    text = BASE
    cases += [
        ("utf16-le-bom", text.encode("utf-16")),
        ("utf16-be-bom", b"\xfe\xff" + text.encode("utf-16-be")),
        ("utf16-le-no-bom", text.encode("utf-16-le")),
        ("utf32-bom", text.encode("utf-32")),
        ("latin1", text.replace("active-backup bond", "bond für die Prüfung").encode("latin-1")),
        ("binary-garbage", bytes(range(256)) * 8),
        ("only-nul", b"\0" * 1000),
        ("empty", b""),
        ("only-comment", b"# nothing here\n"),
        ("bom-then-garbage", b"\xef\xbb\xbf\xff\xfe"),
    ]
    return cases


def _structure_mutations() -> List[Case]:
    cases: List[Case] = []
    for n in (33, 100, 1000, 10_000, 30_000):
        cases.append((f"deep-seq-{n}", ("hosts: " + "[" * n + "\n").encode()))
        cases.append((f"deep-map-{n}", ("hosts: " + "{a: " * n + "\n").encode()))
    cases.append(("deep-closed-seq", ("name: ab\nhosts: {c: {}}\ndescription: " + "[" * 40 + "]" * 40 + "\n")
                  .encode()))
    cases.append(("deep-block", ("name: ab\nhosts:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(60))
                                 + "  " * 61 + "x: 1\n").encode()))
    for levels in (2, 3, 5, 7, 8, 9):
        for where in ("description", "unknown", "hosts"):
            cases.append((f"alias-bomb-{levels}-{where}", _alias_bomb(levels, where).encode()))
    cases += [
        ("one-alias", BASE.replace("miimon: 10", "miimon: &m 10").replace("primary: pf0", "primary: *m").encode()),
        ("anchor-only", BASE.replace("mode: active-backup", "mode: &m active-backup").encode()),
        ("merge-key", (BASE + "defaults: &d {miimon: 10}\nother:\n  <<: *d\n").encode()),
        ("merge-inline", BASE.replace("      bond:\n", "      bond:\n        <<: {miimon: 10}\n").encode()),
        ("many-nodes-flow", ("name: ab\nhosts: {c: {}}\ndescription: [" + ",".join(["1"] * 20_000) + "]\n")
         .encode()),
        ("many-nodes-block", ("name: ab\nhosts: {c: {}}\nlist:\n" + "- 1\n" * 15_000).encode()),
        ("many-hosts", ("name: ab\nhosts:\n" + "".join(f"  h{i}: {{}}\n" for i in range(6000))).encode()),
        ("many-keys", ("name: ab\nhosts: {c: {}}\n" + "".join(f"k{i}: 1\n" for i in range(8000))).encode()),
    ]
    return cases


def _scalar_mutations() -> List[Case]:
    cases: List[Case] = []
    for key, where in (("ports", "      ports: "), ("miimon", "        miimon: "), ("vfs", "      vfs: ")):
        for digits in (21, 100, 4301, 5000, 50_000):
            body = BASE.replace("      ports: 2\n", "").replace("        miimon: 10\n", "")
            body = body.replace("      vfs:\n        - {name: vf0, address: 198.18.0.11/24}\n"
                                "        - {name: vf1, address: 198.18.0.12/24}\n", "")
            body = body.replace("    nic:\n", f"    nic:\n{where.strip()} {'9' * digits}\n".replace(
                f"{where.strip()}", "      " + where.strip()))
            cases.append((f"bigint-{key}-{digits}", body.encode()))
    cases += [
        ("bigint-hex", BASE.replace("ports: 2", "ports: 0x" + "f" * 5000).encode()),
        ("bigint-octal", BASE.replace("ports: 2", "ports: 0o" + "7" * 5000).encode()),
        ("bigint-binary", BASE.replace("ports: 2", "ports: 0b" + "1" * 20_000).encode()),
        ("bigint-sexagesimal", BASE.replace("ports: 2", "ports: 1" + ":59" * 10_000).encode()),
        ("bigint-underscores", BASE.replace("ports: 2", "ports: 1" + "_0" * 5000).encode()),
        ("bigint-negative", BASE.replace("miimon: 10", "miimon: -" + "9" * 5000).encode()),
        ("bigfloat", BASE.replace("ports: 2", "ports: 1e" + "9" * 5000).encode()),
        ("long-name", BASE.replace("name: ab", "name: " + "a" * 60_000).encode()),
        ("long-host", BASE.replace("  client:", "  " + "c" * 60_000 + ":").encode()),
        ("long-vf", BASE.replace("name: vf1", "name: " + "v" * 60_000).encode()),
        ("long-mac", BASE.replace("address: 198.18.0.100/24", "mac: " + "0" * 60_000).encode()),
        ("long-subnet", BASE.replace("name: ab\n", "name: ab\nsubnet: " + "1" * 60_000 + "\n").encode()),
        ("long-tag", BASE.replace("ports: 2", "ports: !" + "t" * 60_000 + " 2").encode()),
        ("long-anchor", BASE.replace("ports: 2", "ports: &" + "a" * 60_000 + " 2").encode()),
        ("escaped-nul-in-name", BASE.replace("name: ab", 'name: "a\\0b"').encode()),
        ("escaped-newlines", BASE.replace("name: ab", 'name: "a\\nb\\rc\\u2028d"').encode()),
        ("escaped-bell-mode", BASE.replace("mode: active-backup", 'mode: "\\a\\b\\e"').encode()),
        ("too-big-10mb", b"name: ab\nhosts: {c: {}}\ndescription: " + b"x" * (10 << 20) + b"\n"),
        ("too-big-comment-5mb", b"# " + b"c" * (5 << 20) + b"\n" + BASE.encode()),
        ("too-big-just-over", BASE.encode() + b"#" * (topofile.MAX_BYTES - len(BASE) + 1)),
        ("miimon-0", BASE.replace("miimon: 10", "miimon: 0").encode()),
        ("miimon-0-xor", b"name: ab\nhosts:\n  s:\n    nic: {bond: {mode: balance-xor, miimon: 0}}\n"),
        ("miimon-0-lacp", b"name: ab\nhosts:\n  s:\n    nic: {bond: {mode: 802.3ad, miimon: 0}}\n"),
        ("miimon-0-updelay", b"name: ab\nhosts:\n  s:\n    nic: {bond: {mode: active-backup, miimon: 0, "
                             b"updelay: 0}}\n"),
        ("subnet-everything", BASE.replace("name: ab\n", "name: ab\nsubnet: 0.0.0.0/0\n")
         .replace("198.18.0.1/24", "198.18.0.1/33").encode()),
        ("subnet-huge-allocate", b"name: ab\nsubnet: 10.0.0.0/8\nhosts:\n  s:\n    nic: {bond: {mode: active-backup},"
                                 b" vfs: 257}\n"),
    ]
    for tag in ("!!binary aGVsbG8=", "!!python/object/apply:os.system ['true']", "!custom 2", "!!timestamp x",
                "!!str 2", "!!set {a, b}", "!!omap [a: 1]", "! 2"):
        cases.append((f"tag-{tag.split()[0].strip('!').replace('/', '-') or 'bare'}",
                      BASE.replace("ports: 2", f"ports: {tag}").encode()))
    for label, key in (("int", "1"), ("null", "null"), ("bool", "yes"), ("float", "1.5"), ("seq", "? [a, b]"),
                       ("map", "? {a: b}"), ("merge", "<<")):
        line = f"{key}: 1\n" if not key.startswith("?") else f"{key}\n: 1\n"
        cases.append((f"key-{label}", (BASE + line).encode()))
    cases += [
        ("dup-top", (BASE + "name: other\n").encode()),
        ("dup-bond", BASE.replace("        miimon: 10\n", "        miimon: 10\n        miimon: 20\n").encode()),
        ("dup-quoted", BASE.replace("  client:", "  'server': {}\n  client:").encode()),
        ("syntax-unclosed-quote", BASE.replace("name: ab", 'name: "ab').encode()),
        ("syntax-unclosed-flow", BASE.replace("{name: vf0,", "{name: vf0, [").encode()),
        ("syntax-tab-indent", BASE.replace("    nic:", "\tnic:").encode()),
        ("syntax-two-documents", (BASE + "---\nname: cd\n").encode()),
        ("syntax-bad-indent", BASE.replace("      ports: 2", "        ports: 2\n      x").encode()),
        ("syntax-directive", b"%YAML 9.9\n---\n" + BASE.encode()),
        ("syntax-only-dashes", b"---\n---\n---\n"),
        ("not-a-mapping-scalar", b"just a string\n"),
        ("not-a-mapping-list", b"- a\n- b\n"),
        ("json-style", b'{"name": "ab", "hosts": {"c": {"address": 5}}}'),
        ("date-ok-but-bad-month", BASE.replace("name: ab", "name: 2001-13-45").encode()),
    ]
    return cases


def _hand_written() -> List[Case]:
    out = []
    for path in sorted(glob.glob(os.path.join(HERE, "bad_topologies", "*.yaml"))):
        with open(path, "rb") as fh:
            out.append((f"bad_topologies-{os.path.basename(path)[:-5]}", fh.read()))
    return out


def hostile_files() -> List[Case]:
    cases = _leaf_mutations() + _byte_mutations() + _structure_mutations() + _scalar_mutations() + _hand_written()
    names = [n for n, _ in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


CASES = hostile_files()


def _run_cli(argv: List[str], *, trace: bool = False) -> Tuple[int, str, float, int]:
    """Exit status, all output, seconds and (with ``trace``) the peak of Python allocations."""
    out, err = io.StringIO(), io.StringIO()
    if trace:
        tracemalloc.start()
    t0 = time.monotonic()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                rc = cli.main(argv)
            except SystemExit as exc:  # argparse
                rc = exc.code if isinstance(exc.code, int) else 1
        seconds = time.monotonic() - t0
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
    finally:
        if trace:
            tracemalloc.stop()
    return rc, out.getvalue() + err.getvalue(), seconds, peak


@pytest.fixture(scope="module", autouse=True)
def warm_imports():
    """Import what the first refusal would (argparse subcommands, jsonschema) before anything is timed."""
    import jsonschema  # noqa: F401

    cli.build_parser()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the baseline for growth


def _assert_refused(label: str, rc: int, output: str, seconds: float) -> None:
    lines = output.splitlines()
    assert rc == 3, f"{label}: exit {rc}, want 3: {output[:400]!r}"
    assert len(lines) == 1 and output.endswith("\n"), f"{label}: {len(lines)} lines: {output[:400]!r}"
    assert "Traceback" not in output, f"{label}: {output[:400]!r}"
    assert len(lines[0]) <= MAX_LINE, f"{label}: a {len(lines[0])}-character line: {lines[0][:200]!r}"
    assert seconds < MAX_SECONDS, f"{label}: {seconds:.2f} s"


@pytest.fixture
def unprivileged(monkeypatch):
    """A file that were wrongly accepted meets the root check (exit 4) instead of building anything."""
    monkeypatch.setattr(os, "geteuid", lambda: 65534)


def test_there_are_300_hostile_files():
    assert len(CASES) >= 300, len(CASES)


@pytest.mark.parametrize("name,content", CASES, ids=[n[:60] for n, _ in CASES])
def test_hostile_file_is_refused_in_one_line(name, content, tmp_path, unprivileged, warm_imports):
    path = tmp_path / f"{name[:80]}.yaml"
    path.write_bytes(content)
    rc, output, seconds, _ = _run_cli(["up", str(path)])
    _assert_refused(name, rc, output, seconds)
    assert output.startswith(f"testbed: error: {path}"), output[:200]  # names the file
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - warm_imports  # high-water mark: any spike shows
    assert grown < MAX_RSS_GROWTH_KB, f"{name}: this process's peak resident memory grew by {grown / 1024:.0f} MiB"
    if name in TRACED:
        _, _, _, peak = _run_cli(["up", str(path)], trace=True)  # again, traced (tracing slows it: not timed)
        assert peak < MAX_PEAK_BYTES, f"{name}: peak of Python allocations {peak / 2**20:.1f} MiB"
    for value in (HUGE, "a" * 60_000, "9" * 4301):
        assert value not in output, f"{name}: a value echoed whole"


def _special_paths(tmp_path) -> Dict[str, str]:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock.yaml"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    sock.close()
    link = tmp_path / "zero-link.yaml"
    link.symlink_to("/dev/zero")
    return {"fifo": str(fifo), "dev-zero": "/dev/zero", "dev-null": "/dev/null", "dev-urandom": "/dev/urandom",
            "directory": str(tmp_path), "socket": str(sock_path), "symlink-to-dev-zero": str(link),
            "missing": str(tmp_path / "missing.yaml"), "name-too-long": "/tmp/" + "n" * 100_000,
            "nul-in-name": "a\0b.yaml", "newline-in-name": str(tmp_path / "a\nb.yaml")}


def test_non_regular_and_unreadable_paths_are_refused_without_reading(tmp_path, unprivileged):
    for label, path in _special_paths(tmp_path).items():
        rc, output, seconds, _ = _run_cli(["up", path])
        _assert_refused(label, rc, output, seconds)
        assert "100000" not in output and "n" * 300 not in output, f"{label}: the name echoed whole"


SUBPROCESS_CASES = ["byte-ff-line3", "deep-seq-10000", "alias-bomb-7-description", "alias-bomb-9-unknown",
                    "bigint-ports-5000", "too-big-10mb", "utf16-le-bom", "byte-nul-line1", "miimon-0"]


@pytest.mark.skipif(not os.access(TESTBED, os.X_OK), reason="needs .venv/bin/testbed (tools/setup)")
def test_hostile_files_through_a_real_testbed_up(tmp_path):
    """The installed command, as a user runs it: exit 3, one line, bounded time and resident memory."""
    by_name = dict(CASES)
    targets = [(n, str(tmp_path / f"{n}.yaml")) for n in SUBPROCESS_CASES]
    for name, path in targets:
        with open(path, "wb") as fh:
            fh.write(by_name[name])
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    targets += [("fifo", str(fifo)), ("dev-zero", "/dev/zero")]
    startup = _startup_seconds(tmp_path)
    for name, path in targets:
        t0 = time.monotonic()
        code, out, peak_kb = _measured([TESTBED, "up", path], tmp_path)
        seconds = time.monotonic() - t0 - startup  # the check itself, beyond interpreter start-up and imports
        _assert_refused(name, code, out, seconds)
        assert peak_kb < MAX_RSS_KB, f"a `testbed up` refusing {name} grew to {peak_kb / 1024:.0f} MiB"


# Runs argv and writes its peak RSS (KiB) to a file.  The command is the child of this small
# interpreter, not of pytest: a forked child's peak starts at its parent's (the copied mm),
# and pytest has grown large by the time this test runs.
_MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode; "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
            "sys.exit(code)")


def _measured(argv: List[str], tmp_path) -> Tuple[int, str, int]:
    """(exit status, stdout+stderr, peak RSS in KiB) of ``argv``."""
    rss = tmp_path / "peak-rss"
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(rss), *argv], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60, check=False)
    return proc.returncode, proc.stdout.decode(errors="replace"), int(rss.read_text())


def _startup_seconds(tmp_path) -> float:
    """What `testbed up --help` costs here: interpreter start and imports, not the file check."""
    t0 = time.monotonic()
    _measured([TESTBED, "up", "--help"], tmp_path)
    return time.monotonic() - t0


def test_generator_files_are_what_they_claim():
    """A few cases checked for their content, so the generator cannot quietly degrade into valid files."""
    by_name = dict(CASES)
    assert by_name["deep-seq-10000"].count(b"[") == 10_000
    assert by_name["alias-bomb-7-description"].count(b"&l") == 7
    assert len(by_name["too-big-10mb"]) > 10 << 20
    assert by_name["utf16-le-bom"].startswith(b"\xff\xfe")
    assert b"9" * 5000 in by_name["bigint-ports-5000"]
    assert sys.getsizeof(by_name["leaf-name-0"]) > 60_000
