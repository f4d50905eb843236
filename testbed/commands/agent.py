"""``testbed agent LAB``: run the offload agent of a lab (``up`` starts it for you)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from testbed.commands.common import emit_json, require_root

DESCRIPTION = """\
The offload agent keeps each emulated NIC's embedded switch (tc flower rules on
the ports' and representors' clsact hooks) in line with its bond, as the ice and
mlx5 drivers do when their ports are bonded:

  active-backup  VF and RDMA TX leave by the bond's active port; the inactive
                 port drops frames for the VFs and RoCEv2 (LACP and ARP still
                 reach the bond)
  hash           a ports x buckets table maps the flow hash to a port; a dead
                 port's buckets spread over live ports, and come back
  vf-split       each VF's flows are split over the ports by hash half; all move
                 to the survivor on failure, the same ones come back

It watches the bond and its ports over netlink, computes the rules from the
bond's own choice (active port, MII status, 802.3ad collecting+distributing),
and applies only the difference, make-before-break. At start it adopts the
rules it finds: a restarted agent replaces nothing that is already right.

Files beside the lab record (/run/testbed/LAB/): agent.pid, agent.log (one line
per reaction with its event->applied latency), agent.json (the mapping table
per NIC and the last reactions; `testbed status` shows them).

Signals: SIGTERM/SIGINT stop it (exit 0; the rules stay in place),
SIGHUP forces a full resync. It exits with status 10 if a lab namespace is
deleted under it; it never recreates one."""

EPILOG = """\
examples:
  sudo testbed agent ab                # foreground, log lines on stderr
  sudo testbed agent ab --daemon       # detach; returns once the first reconcile is done
  sudo kill -HUP $(cat /run/testbed/ab/agent.pid)    # full resync"""


def cmd_agent(args: argparse.Namespace) -> int:
    from testbed.agent import launcher

    require_root("agent")
    if args.daemon:
        pid = launcher.start(args.lab, timeout=args.timeout, json_log=args.json_log)
        if args.json:
            emit_json({"lab": args.lab, "pid": pid, "ready": True})
        else:
            print(pid)
        return 0
    echo = None if args.ready_fd is not None else sys.stderr
    return launcher.run(args.lab, json_log=args.json_log, echo=echo, ready_fd=args.ready_fd)


def register(sub: Any) -> None:
    p = sub.add_parser("agent", help="run a lab's offload agent (bond state -> tc flower rules)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lab", help="the lab's name (see `testbed list`)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--foreground", action="store_true",
                      help="run in this process until SIGTERM/SIGINT (the default); log lines also go to stderr")
    mode.add_argument("--daemon", action="store_true",
                      help="start detached, wait for its first full reconcile, print its pid and return")
    p.add_argument("--json-log", action="store_true",
                   help="write agent.log (and stderr) as one JSON object per line")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="with --daemon: seconds to wait for the first reconcile (default 60)")
    p.add_argument("--json", action="store_true", help="with --daemon: print {lab, pid, ready} as JSON")
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_agent)
