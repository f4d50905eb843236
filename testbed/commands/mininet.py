"""``testbed mininet FILE``: the lab inside Mininet, with Mininet's CLI and the testbed's commands."""

from __future__ import annotations

import argparse
import shutil
from typing import Any

from testbed.agent import AGENT_TIMEOUT
from testbed.commands.common import require_root
from testbed.errors import CapabilityError

DESCRIPTION = """\
Build the topology FILE with Mininet: a Mininet host per host, a Mininet link per wire, and
Mininet's Linux-bridge switch `sw` (no Open vSwitch, no controller). Then, through the same
library code as `testbed up`, the switch side of each NIC's wires (a partner bond for
balance-xor/802.3ad), and inside the NIC hosts the bond, the VFs, the RDMA function, clsact
and RPS; then the offload agent starts and Mininet's CLI opens.

Each Mininet node's namespace is reachable by name - `<lab>-<host>`, the switch `<lab>-switch`,
VFs `<lab>-<host>-<vf>` - so `ip netns exec`, `testbed status LAB` and the other testbed
commands work on the lab from another terminal.

Leaving the CLI (`exit`, Ctrl-D, end of piped input), an error, SIGTERM or SIGHUP removes
everything: the agent, Mininet's nodes and links, the VFs, every namespace. After a SIGKILL,
`testbed clean --lab LAB` removes what is left.

CLI commands added to Mininet's (`help CMD` in the CLI for details):
  fail HOST PORT          a port's wire down from the switch side; shows the bond's and the
                          agent's reaction with timings
  restore HOST PORT       the wire back up
  lagstatus [HOST] [-r]   bond state and the agent's mapping table (-r: tc rules + counters)
  traffic failover|hash   the traffic verifications of `testbed traffic`
  link sw server:pf0 down one wire; Mininet's own `link sw server down` takes down both ends of
                          every link between the two nodes (here: all ports of the NIC)
  vf0 ping -c1 client     a command inside a VF's or the RDMA function's namespace
Mininet's own commands (pingall, iperf, xterm, net, dump, link, NODE CMD...) work as usual; a NIC
host's address is its bond's.

With input piped in, the CLI runs the lines as commands and exits at the end of input; the
exit status is then that of the last testbed command that failed (11 for a FAILed verification).
"""

EPILOG = """\
examples:
  sudo testbed mininet topologies/active-backup.yaml
  printf 'server ping -c1 client\\nfail server pf0\\nlagstatus server\\n' |
      sudo testbed mininet topologies/active-backup.yaml
  sudo mn --custom testbed/mininet/custom.py --topo lag,topologies/active-backup.yaml   (mn's own front door)

Needs Debian's `mininet` package (the pip release lacks mnexec) and `bridge-utils`; tools/setup
installs both and makes .venv see Debian's mininet module.
"""


def check_mininet() -> None:
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        raise CapabilityError("the Python module `mininet` is not importable",
                              fix="install Debian's mininet (`sudo tools/setup` does) and run testbed from the "
                                  ".venv it makes (created with --system-site-packages)") from None
    for tool, pkg in (("mnexec", "mininet"), ("brctl", "bridge-utils"), ("ifconfig", "net-tools")):
        if shutil.which(tool) is None:
            raise CapabilityError(f"`{tool}` is not installed (Mininet needs it)", fix=f"apt-get install {pkg}")


def cmd_mininet(args: argparse.Namespace) -> int:
    from testbed import loader

    topo = loader.load(args.file, lab_name=args.name)  # validation first: a bad file changes nothing
    require_root("mininet")
    check_mininet()
    from testbed.mininet import session

    return session.run(topo, agent=not args.no_agent, agent_timeout=args.agent_timeout, loglevel=args.verbosity)


def register(sub: Any) -> None:
    p = sub.add_parser("mininet", help="the lab inside Mininet, with its CLI and the testbed's commands",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="topology YAML file (see topologies/)")
    p.add_argument("--name", help="lab name instead of the file's 'name'")
    p.add_argument("--no-agent", action="store_true", help="do not start the offload agent")
    p.add_argument("--agent-timeout", type=float, default=AGENT_TIMEOUT, metavar="S",
                   help=f"seconds to wait for the agent's first reconcile (default {AGENT_TIMEOUT:g})")
    p.add_argument("-v", "--verbosity", default="info", choices=("debug", "info", "output", "warning", "error"),
                   help="Mininet's log level (default info: Mininet's *** progress lines)")
    p.set_defaults(func=cmd_mininet)
