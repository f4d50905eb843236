"""The ``testbed`` command: parse, check root once where needed, call the library.

Subcommands live in ``testbed/commands/``; each module there has
``register(subparsers)``. Exit status: 0 success, 1 internal error, 2 usage,
3 bad topology, 4 missing capability, 5 name conflict, 6 no such lab,
7 build/netlink failure, 8 timeout, 9 VM lane failure, 10 agent failure,
11 verification failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import List, Optional

import testbed.commands
from testbed import __version__
from testbed.errors import TestbedError

EPILOG = """\
exit status:
  0 success; 2 usage; 3 bad topology file; 4 missing kernel feature or not root;
  5 name conflict; 6 no such lab; 7 build or netlink failure; 8 timeout;
  9 VM lane failure; 10 agent failure; 11 traffic verdict FAIL; 130 interrupted.

examples:
  sudo testbed doctor
  sudo testbed up topologies/active-backup.yaml
  sudo testbed status ab --json
  sudo testbed fail ab server pf0 && sudo testbed status ab
  sudo testbed down ab
  sudo testbed vm -- testbed up topologies/active-backup.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testbed",
        description="Emulate link aggregation with hardware offload for RDMA and SR-IOV VFs in network "
                    "namespaces: real bonds, tc flower rules mirroring the bond's state, real packets.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"testbed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in sorted(pkgutil.iter_modules(testbed.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"testbed.commands.{mod.name}")
        register = getattr(module, "register", None)
        if register:
            register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TestbedError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
        return 130
