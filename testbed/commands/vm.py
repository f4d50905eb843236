"""``testbed vm``: run a command inside a guest whose kernel can run the lab."""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List

from testbed.commands.common import emit_json
from testbed.errors import UsageError

DESCRIPTION = """\
Run COMMAND inside a virtme-ng guest that boots an installed distro kernel over
this machine's own root filesystem, for hosts whose kernel lacks what the lab
needs (bonding, cls_flower, act_mirred) -- containers, locked-down CI, or a
kernel built without them.

The guest sees the host's files read-only (with throw-away writable overlays on
/etc, /home, /lib, /opt, /srv, /tmp, /usr and /var, and a tmpfs /run); the
directories given with --rwdir (by default the current directory) are writable
and shared with the host.  The working directory is kept.  Before COMMAND runs,
the guest loads bonding (max_bonds=0, so no stray bond0), cls_flower,
act_mirred, act_gact, sch_ingress, veth and act_skbedit when present; it runs
as root with this Python first on PATH, this testbed on PYTHONPATH,
TESTBED_IN_VM=1 and TESTBED_VM_ACCEL (kvm or tcg) set, and the host's CI and
TESTBED_* variables copied.
COMMAND's output streams through live and its exit status becomes testbed's.

Import cache: the guest reads files over 9p without a page cache, which under
TCG made importing the agent take 12-20 s.  So the host packs the Python files
lane processes import (testbed, the test libraries, their .pyc) into one tar
under .vmcache/ (rebuilt when one changes), and the guest unpacks it into RAM
and overlays those directories read-only (4-5 s for the same import).  Files
changed on the host while a guest runs are not seen by it; TESTBED_VM_NO_HOT=1
turns the cache off.

The kernel is the newest installed one (/boot/vmlinuz-VERSION or
/lib/modules/VERSION/vmlinuz) whose /lib/modules/VERSION holds bonding,
cls_flower and act_mirred, unless --kernel names one: a version (7.3, 6.12,
6.1 -- the newest release it prefixes -- or a full release) or a path to a
kernel image.  --list-kernels shows each installed kernel with what it offers:
bonding, flower, flower's hash key, Soft-RoCE (rxe) and rxe inside a network
namespace (Linux 7.1+, what a lab's RDMA devices need), and the bonding
options its bonding module knows.  KVM is
used when a short probe boot shows it works, TCG (about 10x slower) when it
does not; the verdict is cached in /var/cache/testbed or ~/.cache/testbed.

Needs: qemu-system-x86_64 (apt-get install -y qemu-system-x86), vng
(pip install virtme-ng), a static busybox (apt-get install -y busybox-static)
and a distro kernel (apt-get install -y linux-image-amd64).
"""

EPILOG = """\
exit status:
  COMMAND's own status; 125 when the guest could not load the modules,
  126/127 when COMMAND cannot be executed or is not found, 255 when the guest
  died without reporting a status (kernel panic); testbed's VMError status
  (9) when no guest could be booted or --timeout expired.  When the guest dies
  (255) or is killed at --timeout, the last lines its kernel logged at warning
  level or worse (a panic, an oops, the OOM killer) are printed.

examples (as root; from a user account: sudo .venv/bin/testbed vm ..., which
finds vng beside its own Python although sudo's PATH lacks the .venv):
  run the integration tests where the host kernel has no bonding:
    testbed vm -- python -m pytest -m integration tests/integration

  a bounded CI run with more memory and a second writable directory:
    testbed vm --timeout 1800 --memory 4G --rwdir . --rwdir /srv/results -- \\
        python -m pytest -m integration tests/integration

  which kernels are installed and what each offers:
    testbed vm --list-kernels

  try another installed kernel, without KVM:
    testbed vm --kernel 6.12 --accel tcg -- uname -r
    testbed vm --kernel /lib/modules/7.3.4+deb13-amd64/vmlinuz -- uname -r

  why single-threaded TCG: qemu 7.2's multi-threaded TCG can keep running a
  stale translation of kernel code that the guest just patched (a jump-label
  site still holding the temporary int3), so the guest dies with "Oops: int3"
  -- seen in bond_start_xmit on 7.3, whose bonding flips a static key at every
  failover.  --tcg-thread multi brings the speed back for short, patch-free runs.

  look around the guest's kernel:
    testbed vm -- sh -c 'lsmod | grep -E "bonding|cls_flower"'
"""


def register(subparsers: Any, name: str = "vm") -> None:
    """Add the ``vm`` subcommand (``name`` lets ``python -m testbed.vm`` call it ``run``)."""
    p = subparsers.add_parser(
        name, help="run a command in a VM whose kernel has bonding and flower",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [OPTIONS] -- COMMAND [ARG...]\n       %(prog)s --list-kernels [--json]",
    )
    p.add_argument("--kernel", metavar="VERSION|PATH",
                   help="kernel to boot: a version (7.3, 6.12, a full release) or an image path "
                        "(default: the newest installed kernel that can run a lab)")
    p.add_argument("--list-kernels", action="store_true",
                   help="list the installed kernels and what each offers, then exit")
    p.add_argument("--json", action="store_true", help="with --list-kernels: JSON on stdout")
    p.add_argument("--memory", default="2G", metavar="SIZE", help="guest memory (default: 2G)")
    p.add_argument("--cpus", type=int, default=2, metavar="N", help="guest CPUs (default: 2)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="kvm, tcg, or auto: KVM when a probe boot shows it works (default)")
    p.add_argument("--tcg-thread", choices=("single", "multi"), default="single",
                   help="under TCG, run all vCPUs on one host thread (single, the default: "
                        "safe from qemu's race with the guest kernel's live code patching) or "
                        "one thread per vCPU (multi: faster, but the guest can die with "
                        "'Oops: int3'); no effect under KVM")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="kill the guest and fail after this long (default: no limit)")
    p.add_argument("--console", metavar="FILE",
                   help="keep the guest kernel's warnings and errors in FILE, written when "
                        "the guest stops (they are printed anyway if it dies or times out)")
    p.add_argument("--rwdir", action="append", metavar="DIR",
                   help="directory the guest may write, repeatable (default: the current one)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND",
                   help="the command and its arguments, after --")
    p.set_defaults(func=handle)


FEATURE_COLUMNS = ("bonding", "flower", "flower_hash", "rxe", "rxe_netns")


def render_kernels(rows: List[Dict[str, Any]]) -> List[str]:
    """``vmkernel.describe_kernels`` as a table: one line per kernel, its image below, and
    the bonding options it knows beyond those every listed kernel knows."""
    if not rows:
        return ["no installed kernels (/boot/vmlinuz-*, /lib/modules/*/vmlinuz): "
                "tools/setup installs 6.1, 6.12 and 7.3"]
    common = set.intersection(*(set(r["bond_options"]) for r in rows))
    width = max(len(r["release"]) for r in rows) + 2
    out = ["  ".join([f"{'kernel':{width}}", "lab"] + list(FEATURE_COLUMNS) + ["bond options"])]
    for r in rows:
        mark = "*" if r["default"] else " "
        cells = [f"{r['release']:{width - 2}}{' ' + mark}", f"{'yes' if r['lab'] else 'no':3}"]
        cells += [f"{'yes' if r['features'][f] else 'no':{len(f)}}" for f in FEATURE_COLUMNS]
        extra = sorted(set(r["bond_options"]) - common)
        opts = f"{len(r['bond_options'])}" + (f" (+{', '.join(extra)})" if extra else "")
        out.append("  ".join(cells + [opts]))
        out.append(f"{'':{width}}{r['path']}" + (f"  -- {r['problem']}" if r["problem"] else "")
                   + ("  (running)" if r["running"] else ""))
    out.append(f"* the VM lane's default; bond options: {len(common)} known to every kernel listed "
               "(+ those only some know); --json lists them all")
    return out


def handle(args: argparse.Namespace) -> int:
    """Boot the guest, run the command, return its exit status."""
    from testbed.vm import run_in_vm

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if args.list_kernels:
        if command:
            raise UsageError("testbed vm: --list-kernels takes no command",
                             fix="testbed vm --list-kernels [--json]")
        from testbed.vmkernel import describe_kernels

        rows = describe_kernels()
        if args.json:
            emit_json({"kernels": rows})
        else:
            print("\n".join(render_kernels(rows)))
        return 0
    if args.json:
        raise UsageError("testbed vm: --json goes with --list-kernels",
                         fix="testbed vm --list-kernels --json")
    if not command:
        raise UsageError("testbed vm: no command given",
                         fix="testbed vm [OPTIONS] -- COMMAND [ARG...]")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"testbed vm: bad --timeout {args.timeout:g}",
                         fix="a positive number of seconds")
    rwdirs = [os.path.abspath(d) for d in args.rwdir] if args.rwdir else None
    return run_in_vm(command, kernel=args.kernel, memory=args.memory, cpus=args.cpus,
                     rwdirs=rwdirs, timeout=args.timeout, accel=args.accel,
                     console=args.console, tcg_thread=args.tcg_thread)
