"""Helpers shared by subcommands: root check, progress lines, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from testbed.errors import CapabilityError


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise CapabilityError(f"{what} needs root (network namespaces, bonds and tc rules are privileged)",
                              fix=f"run `sudo testbed {what}`")


class Progress:
    """One line per step on stderr, with the time since start; silent with --quiet or --json."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.start = time.monotonic()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"[{time.monotonic() - self.start:6.2f}s] {msg}", file=sys.stderr, flush=True)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
