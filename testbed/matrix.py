"""The kernel matrix: which kernels a test run covers, and the verdict over their JUnit files.

``tools/test`` runs the unit tests once on the host and the integration suite once per
kernel (one VM-lane boot each), each writing ``out/junit-<release>.xml``; CI engines may
instead run one kernel per machine and collect the files.  Either way this module judges
the whole run:

* every test that failed (or errored) on any kernel fails the run;
* a test that passed on no kernel fails the run -- in particular one skipped on a kernel
  that lacks a feature (``@pytest.mark.needs``) without passing on another kernel of the
  same run; with ``--shard`` (one machine's share of a sharded matrix) this rule is left
  to the final aggregation over all shards' files;
* a kernel that was run but left no JUnit file, no test, or a non-zero exit status that
  its file does not explain (the guest died, timed out, or pytest stopped) fails the run;
* a kernel whose guest died once and was booted again (``--died``) is judged by its second
  run, and the verdict says so.

It prints a per-kernel table and, as its last line, ``N passed, N failed, N skipped``
over the unit tests and every kernel, counting each cross-kernel rule violation and each
kernel without results as one failure.

``python -m testbed.matrix kernels [SPEC...]``  the kernels to run, one ``release<TAB>image``
                                                 line each (image ``host``: this kernel itself)
``python -m testbed.matrix judge [--unit FILE] [--status RELEASE=CODE]... [--died RELEASE]...
                               [--shard] FILE...``
``python -m testbed.matrix pytest-args``       ``$TESTBED_PYTEST_ARGS`` split into words, one a line
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from testbed.errors import TestbedError, UsageError

JUNIT_MAX_BYTES = 64 << 20
_RANK = {"passed": 0, "skipped": 1, "failed": 2}
_NAME = re.compile(r"^junit-(.+)\.xml$")


@dataclass
class Run:
    """One kernel's (or the unit tests') results: test id -> passed/failed/skipped."""

    label: str
    path: str
    results: Dict[str, str] = field(default_factory=dict)
    reasons: Dict[str, str] = field(default_factory=dict)  # skip or failure messages, first line
    problem: Optional[str] = None  # why this run counts as failed as a whole

    def count(self, status: str) -> int:
        return sum(1 for s in self.results.values() if s == status)


def release_of(path: str) -> str:
    """``out/junit-7.3.4+deb13-amd64.xml`` -> ``7.3.4+deb13-amd64``."""
    m = _NAME.match(os.path.basename(path))
    if not m:
        raise UsageError(f"{path}: not a kernel's JUnit file", fix="name it junit-<release>.xml")
    return m.group(1)


def read_junit(path: str, label: str) -> Run:
    """A pytest JUnit file as a Run; a missing, oversized or unreadable file is a Run with a problem."""
    run = Run(label, path)
    try:
        if os.path.getsize(path) > JUNIT_MAX_BYTES:
            run.problem = f"{path} is over {JUNIT_MAX_BYTES >> 20} MB"
            return run
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        run.problem = f"no results ({path} was not written: the run died, timed out or never started)"
        return run
    except (OSError, ET.ParseError) as exc:
        run.problem = f"{path} is unreadable: {exc}"
        return run
    for case in root.iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        status, reason = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                status, reason = "failed", child.get("message") or child.tag
            elif child.tag == "skipped" and status != "failed":
                status, reason = "skipped", child.get("message") or "skipped"
        if _RANK[status] >= _RANK.get(run.results.get(test, "passed"), 0):
            run.results[test] = status  # a test reported twice (call + teardown) keeps its worst
            if reason.strip():
                run.reasons[test] = reason.strip().splitlines()[0][:200]
    if not run.results:
        run.problem = f"no test ran ({path} holds no test case)"
    return run


def judge(kernels: Sequence[Run], *, shard: bool = False) -> List[str]:
    """The cross-kernel rule: one line per violation (failed anywhere, passed nowhere)."""
    problems = []
    tests = sorted({t for run in kernels for t in run.results})
    for test in tests:
        seen = [(run.label, run.results[test]) for run in kernels if test in run.results]
        failed = [label for label, status in seen if status == "failed"]
        if failed:
            problems.append(f"FAILED on {', '.join(failed)}: {test}")
        elif not shard and not any(status == "passed" for _, status in seen):
            why = "; ".join(f"{run.label}: {run.reasons.get(test, 'skipped')}"
                            for run in kernels if run.results.get(test) == "skipped")
            problems.append(f"passed on no kernel: {test} (skipped: {why})")
    return problems


def apply_statuses(kernels: Sequence[Run], statuses: Dict[str, int]) -> None:
    """A non-zero exit status that no failed test explains makes that kernel's run a problem."""
    for run in kernels:
        code = statuses.get(run.label)
        if code and run.problem is None and not run.count("failed"):
            run.problem = f"the run exited with status {code} and no failed test explains it"


def report(unit: Optional[Run], kernels: Sequence[Run], *, shard: bool = False,
           died: Sequence[str] = ()) -> Tuple[List[str], bool]:
    """The printed verdict (table, problems, the summary line last) and whether the run passed.
    ``died``: kernels whose guest died once (judged by their second run)."""
    runs = ([unit] if unit else []) + list(kernels)
    problems = [f"{run.label}: {run.problem}" for run in runs if run.problem]
    violations = judge(kernels, shard=shard)
    rule = [p for p in violations if p.startswith("passed on no kernel")]
    problems += violations
    width = max([len(r.label) for r in runs] + [6])
    lines = [f"{'kernel':{width}}  {'passed':>6}  {'failed':>6}  {'skipped':>7}  results"]
    for run in runs:
        lines.append(f"{run.label:{width}}  {run.count('passed'):6d}  {run.count('failed'):6d}  "
                     f"{run.count('skipped'):7d}  {run.path}" + ("  (no results)" if run.problem else ""))
    passed = sum(r.count("passed") for r in runs)
    failed = sum(r.count("failed") for r in runs) + len(rule) + sum(1 for r in runs if r.problem)
    skipped = sum(r.count("skipped") for r in runs)
    for label in died:
        lines.append(f"note: {label}: the guest died in the first run (its kernel's words: "
                     f"out/console-{label}.died.log); these are the results of its second run")
    if problems:
        lines.append(f"{len(problems)} problem(s):")
        lines += [f"  {p}" for p in problems]
        if rule:
            lines.append(f"  (each test that passed on no kernel counts as failed: {len(rule)})")
    if not runs:
        problems.append("no results at all")
        failed += 1
    lines.append(f"{passed} passed, {failed} failed, {skipped} skipped")
    return lines, not problems


# ---- which kernels -----------------------------------------------------------------------


def select_kernels(specs: Sequence[str], root: str = "/") -> List[Tuple[str, str]]:
    """(release, image) for each spec (a version such as 7.3, a release, an image path, or
    ``host``: this kernel, no VM); with no spec every installed kernel that can run a lab,
    or, when there is none, this kernel if it can.  One entry per release."""
    from testbed.vm import resolve_kernel
    from testbed.vmkernel import describe_kernels, host_can_run_lab

    chosen: List[Tuple[str, str]] = []
    if not specs:
        chosen = [(r["release"], r["path"]) for r in describe_kernels(root) if r["lab"]]
        if not chosen:
            ok, missing = host_can_run_lab(root)
            if not ok:
                from testbed.errors import VMError

                raise VMError("no installed kernel can run a lab, and this one lacks "
                              f"{', '.join(missing)}", fix="run tools/setup (it installs 6.1, 6.12 and 7.3)")
            chosen = [(os.uname().release, "host")]
    for spec in specs:
        if spec == "host":
            chosen.append((os.uname().release, "host"))
            continue
        try:
            kernel = resolve_kernel(spec)
        except TestbedError as exc:
            raise type(exc)(f"kernel matrix (TESTBED_KERNELS): {exc.message}", fix=exc.fix) from None
        chosen.append((kernel.version, kernel.path))
    return list(dict((release, (release, image)) for release, image in chosen).values())


def pytest_args(text: str) -> List[str]:
    """``TESTBED_PYTEST_ARGS`` split as a shell would (``-k 'lab or features'``), never evaluated."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"TESTBED_PYTEST_ARGS: {exc}: {text[:80]!r}",
                         fix="quote as in a shell: TESTBED_PYTEST_ARGS=\"-k 'test_lab or test_demo'\"") from None
    if any("\n" in w for w in words):
        raise UsageError("TESTBED_PYTEST_ARGS: a word holds a newline", fix="one line of words")
    return words


def _status(text: str) -> Tuple[str, int]:
    release, sep, code = text.rpartition("=")
    if not sep or not release or not code.lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"bad --status {text!r}: RELEASE=CODE")
    return release, int(code)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.matrix", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    k = sub.add_parser("kernels", help="print the kernels to run: release<TAB>image per line")
    k.add_argument("specs", nargs="*", metavar="SPEC", help="7.3, 6.12, a release, an image path, or host")
    sub.add_parser("pytest-args", help="print $TESTBED_PYTEST_ARGS split into words, one a line")
    j = sub.add_parser("judge", help="judge the JUnit files of a run")
    j.add_argument("--unit", metavar="FILE", help="the unit tests' JUnit file")
    j.add_argument("--status", type=_status, action="append", default=[], metavar="RELEASE=CODE",
                   help="a run's exit status, RELEASE or 'unit' (repeatable)")
    j.add_argument("--died", action="append", default=[], metavar="RELEASE",
                   help="a kernel whose guest died once and was run again (repeatable)")
    j.add_argument("--shard", action="store_true",
                   help="one shard of a sharded matrix: skips are judged later, over all shards")
    j.add_argument("files", nargs="*", metavar="junit-RELEASE.xml",
                   help="one per kernel run; a missing file is a kernel without results")
    args = parser.parse_args(argv)
    try:
        if args.action == "pytest-args":
            for word in pytest_args(os.environ.get("TESTBED_PYTEST_ARGS", "")):
                print(word)
            return 0
        if args.action == "kernels":
            for release, image in select_kernels(args.specs):
                print(f"{release}\t{image}")
            return 0
        kernels = [read_junit(path, release_of(path)) for path in args.files]
        unit = read_junit(args.unit, "unit") if args.unit else None
        apply_statuses(kernels + ([unit] if unit else []), dict(args.status))
        lines, ok = report(unit, kernels, shard=args.shard, died=args.died)
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print("\n".join(lines), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
