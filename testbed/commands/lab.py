"""Lab lifecycle subcommands: doctor, up, down, list, status, fail, restore, clean.

Every command pays this module's imports (``testbed.cli`` registers all subcommands), so the library is
imported in each handler, and only what that handler's path uses: ``list`` needs no netlink at all, and
under TCG every module costs (tests/unit/test_lean_imports.py holds the line).
"""

from __future__ import annotations

import argparse
from typing import Any, Dict

from testbed.agent import AGENT_TIMEOUT
from testbed.commands.common import Progress, add_json, add_quiet, emit_json, require_root

RAW = argparse.RawDescriptionHelpFormatter


def cmd_doctor(args: argparse.Namespace) -> int:
    from testbed import caps
    from testbed.commands.vm import render_kernels
    from testbed.vmkernel import describe_kernels

    checks = caps.check()
    kernels = describe_kernels()  # the VM lane's; the exit status is about this kernel only
    if args.json:
        emit_json({"ok": all(c.ok for c in checks), "checks": caps.as_dicts(checks), "kernels": kernels})
    else:
        for c in checks:
            mark = "ok  " if c.ok else "MISSING"
            print(f"{mark:8} {c.name:12} {c.detail}" + (f"\n{'':21} fix: {c.fix}" if c.fix else ""))
        print("\ninstalled kernels (for the VM lane: testbed vm --kernel VERSION):")
        print("\n".join(render_kernels(kernels)))
    return 0 if all(c.ok for c in checks) else 4


def cmd_up(args: argparse.Namespace) -> int:
    from testbed import loader, rdma

    topo = loader.load(args.file, lab_name=args.name)  # validation first: a bad file changes nothing
    rdma.require(topo)  # Soft-RoCE devices on a kernel that cannot host them in a namespace: refused here
    require_root("up")
    from testbed import bringup  # the build's netlink (pyroute2): not for a refused file

    progress = Progress(not (args.quiet or args.json))
    rec = bringup.up(topo, agent=not args.no_agent, agent_timeout=args.agent_timeout, progress=progress)
    progress(f"lab {topo.name} is up: {len(rec.netns)} namespaces")
    if args.json:
        emit_json({"lab": topo.name, "netns": rec.netns, "agent": rec.agent, "agent_ready_s": rec.agent_ready_s})
    else:
        print(topo.name)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from testbed import teardown

    require_root("down")
    progress = Progress(not args.quiet)
    removed = teardown.down(args.lab, progress=progress)
    if args.json:
        emit_json({"lab": args.lab, "removed": removed})
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from testbed import labstore

    labs = []
    for name in labstore.names():
        rec = labstore.try_read(name)
        if rec:
            state = "crashed" if labstore.crashed(rec) and rec.state != "removing" else rec.state
            labs.append({"lab": name, "state": state, "file": rec.file, "netns": len(rec.netns),
                         "mininet_pid": rec.holder or None})
    if args.json:
        emit_json(labs)
    else:
        for lab in labs:
            held = f"  (Mininet session pid {lab['mininet_pid']})" if lab["mininet_pid"] else ""
            print(f"{lab['lab']:12} {lab['state']:9} {lab['netns']:3} namespaces  {lab['file']}{held}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from testbed import status
    from testbed.commands.render import render_status

    require_root("status")
    data: Dict[str, Any] = status.lab_status(args.lab)
    if args.json:
        emit_json(data)
    else:
        print(render_status(data))
    return 0


def _cmd_wire(args: argparse.Namespace, up: bool) -> int:
    from testbed import wire

    require_root("restore" if up else "fail")
    peer = wire.set_wire(args.lab, args.host, args.port, up)
    if args.json:
        emit_json({"lab": args.lab, "host": args.host, "port": args.port, "wire": peer, "up": up})
    else:
        print(f"{args.host}:{args.port}: wire {peer} {'up' if up else 'down'}")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from testbed import teardown

    require_root("clean")
    removed = teardown.clean(all_labs=args.all, lab=args.lab, progress=Progress(not args.quiet))
    if args.json:
        emit_json({"removed": removed})
    elif not removed:
        print("no namespaces left to remove")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check this machine for what a lab needs", formatter_class=RAW,
                       description="Check root, netns, veth, bonding, cls_flower, act_mirred, act_gact, clsact, "
                                   "flower's hash key and RPS. Each missing piece is named with its fix.\n"
                                   "Then list the installed kernels (for the VM lane) and what each offers.\n"
                                   "Exit status 0 when everything is there, 4 otherwise.")
    add_json(p)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("up", help="build a lab from a topology file", formatter_class=RAW,
                       description="Validate FILE completely, then build its namespaces, wires, bonds, VFs, RDMA "
                                   "function and clsact qdiscs, and start the offload agent.\nOn failure, "
                                   "everything built so far is removed and the failed step is named.",
                       epilog="example:\n  sudo testbed up topologies/active-backup.yaml")
    p.add_argument("file", help="topology YAML file (see topologies/)")
    p.add_argument("--name", help="lab name instead of the file's 'name' (run two copies side by side)")
    p.add_argument("--no-agent", action="store_true", help="do not start the offload agent")
    p.add_argument("--agent-timeout", type=float, default=AGENT_TIMEOUT, metavar="S",
                   help=f"seconds to wait for the agent's first reconcile (default {AGENT_TIMEOUT:g})")
    add_json(p)
    add_quiet(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="remove a lab and everything it created",
                       description="Stop the agent, delete the lab's marked namespaces (and with them every "
                                   "interface inside), wait until the kernel has destroyed them, drop the record. "
                                   "Idempotent. A lab of a running Mininet session is refused (exit 5): its "
                                   "node shells hold the namespaces; leave that session's CLI instead.")
    p.add_argument("lab")
    add_json(p)
    add_quiet(p)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("list", help="labs present on this machine")
    add_json(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("status", help="bond, ports, VFs, RDMA function, rules and counters of a lab",
                       description="Read back from the kernel: per host the bond (mode, active port, per-port "
                                   "carrier and bond state, LACP state), VFs, RDMA function, the tc rules with "
                                   "their packet counters, and the agent's mapping table and last reactions.")
    p.add_argument("lab")
    add_json(p)
    p.set_defaults(func=cmd_status)

    for name, up in (("fail", False), ("restore", True)):
        verb = "down" if not up else "up"
        p = sub.add_parser(name, help=f"take a port's wire {verb} from the switch side",
                           description=f"Set the switch-side peer of HOST's PORT {verb}: the port "
                                       f"{'loses' if not up else 'regains'} carrier as with a cable "
                                       f"{'pull' if not up else 'plug'}; the bond reacts by itself.")
        p.add_argument("lab")
        p.add_argument("host")
        p.add_argument("port", help="pf0, pf1, ... (eth0 for a plain host)")
        add_json(p)
        p.set_defaults(func=lambda a, up=up: _cmd_wire(a, up))

    p = sub.add_parser("clean", help="remove what crashed runs left behind",
                       description="Remove labs whose build never finished or whose removal was interrupted, labs "
                                   "of a Mininet session that is gone (killed), and namespaces that carry a testbed "
                                   "mark but no record. Never touches a namespace without the mark, nor the lab of "
                                   "a running Mininet session. --all also removes healthy labs.")
    p.add_argument("--all", action="store_true", help="remove every lab on this machine")
    p.add_argument("--lab", help="only this lab (whatever its state)")
    add_json(p)
    add_quiet(p)
    p.set_defaults(func=cmd_clean)
