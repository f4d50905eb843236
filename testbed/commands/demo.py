"""``testbed demo``: the main job in one command."""

from __future__ import annotations

import argparse
import os
from typing import Any

from testbed.commands.common import Progress, add_json, emit_json, require_root

DEFAULT = os.path.join("topologies", "active-backup.yaml")


def cmd_demo(args: argparse.Namespace) -> int:
    from testbed import demo, loader

    topo = loader.load(args.file, lab_name=args.name)
    require_root("demo")
    result = demo.run(topo, agent=not args.no_agent, keep=args.keep, traffic=not args.no_traffic,
                      progress=Progress(not args.json))
    if args.json:
        emit_json(result)
    else:
        print(demo.render(result))
    return 0 if result.get("verdict") == "PASS" else 11


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="up a lab, fail its active port, show bond and offload following, down",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="The main job: build FILE (default topologies/active-backup.yaml) with its "
                                   "offload agent, ping the bond and the first VF from the client, fail the "
                                   "active port from the switch side, wait for the bond and the agent to move, "
                                   "ping again; then restore it and send real traffic through a second failover "
                                   "(the first VF, the RDMA function and the bond side by side, as `testbed traffic "
                                   "failover`); print before/after, the traffic figures and a verdict, then remove "
                                   "the lab.\n"
                                   "Exit status 0 on PASS, 11 on FAIL.",
                       epilog="examples:\n  sudo testbed demo\n  sudo testbed vm -- testbed demo --json")
    p.add_argument("file", nargs="?", default=DEFAULT, help=f"topology file (default {DEFAULT})")
    p.add_argument("--name", help="lab name instead of the file's")
    p.add_argument("--no-agent", action="store_true", help="without the offload agent (bond only)")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    p.add_argument("--no-traffic", action="store_true", help="skip the traffic failover (pings only)")
    add_json(p)
    p.set_defaults(func=cmd_demo)
