"""The VM lane: run a command inside a virtme-ng guest booting a distro kernel.

Where the host kernel lacks bonding or cls_flower (containers, locked-down CI)
the lab runs in a guest: ``vng`` boots an installed distro kernel over the
host's own root filesystem (read-only, with writable overlays on /etc, /tmp,
/var ...), makes the project directory writable, and passes the command's
output and exit status through.  In the guest ``python -m testbed.vm
guest-init -- COMMAND...`` loads the lab's modules by argv and execs COMMAND.

Pieces, each usable alone: ``resolve_kernel`` (which kernel: --kernel VERSION|PATH), ``find_tools``
(vng, qemu, busybox), ``vmaccel.choose_accel`` (KVM or TCG),
``build_vng_argv`` (pure), ``run_in_vm`` (all of it), ``host_can_run_lab``
(whether the lane is needed at all).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from testbed.errors import TestbedError, UsageError, VMError
from testbed.vmkernel import (
    INSTALL_KERNEL,
    LAB_MODULES,
    Kernel,
    find_kernel,
    host_can_run_lab,
    kernel_version,
)

__all__ = [
    "LAB_MODULES", "Kernel", "Tools", "build_vng_argv", "find_kernel", "find_tools",
    "host_can_run_lab", "kernel_version", "run_in_vm",
]

GUEST_MODULES = ("cls_flower", "act_mirred", "act_gact", "sch_ingress", "veth")  # + bonding
OPTIONAL_GUEST_MODULES = ("act_skbedit",)
ACCELS = ("auto", "kvm", "tcg")
# How qemu runs a TCG guest's vCPUs.  "multi" (qemu's default, one host thread per vCPU)
# races with the guest kernel's live code patching: a vCPU can run a stale translation of
# a jump-label site that still holds the temporary int3, after the patch is done, and the
# kernel dies ("Oops: int3" in bond_start_xmit, whose netpoll_block_tx static key 7.x
# bonding flips at every change of active slave; seen on 7.3 and 6.12).  "single" runs
# every vCPU on one host thread, where that cannot happen.
TCG_THREADS = ("single", "multi")
INSTALL = {
    "kernel": INSTALL_KERNEL,
    "qemu": "apt-get install -y qemu-system-x86",
    "vng": "pip install virtme-ng",
    "busybox": "apt-get install -y busybox-static",
}
GUEST_INIT_FAILED = 125  # guest-init could not prepare the guest (like env(1)'s 125)
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEADLINE_ENV = "TESTBED_VM_DEADLINE"  # in the guest: when --timeout kills it (Unix time)
ACCEL_ENV = "TESTBED_VM_ACCEL"  # in the guest: "kvm" or "tcg", the accelerator it was booted under
PASSTHROUGH_ENV = ("CI",)  # copied into the guest, with every TESTBED_* variable
# vng hands the guest its command base64-encoded on the kernel command line, which
# holds 2047 bytes on x86; a longer one hangs the boot without a word.
KERNEL_CMDLINE_MAX = 2047
# The guest's kernel messages at warning level and worse (a panic, an oops, the OOM killer,
# WARN_ON) go to a second serial port written to a host file: vng sends its own console
# to /dev/null, so a guest that died left no word of why.  One serial driver drives one
# console, so the second port (ttyS1, I/O 0x2f8) is an early console kept for the whole run.
CONSOLE_LOGLEVEL = 5
DIED = 255  # vng's status for a guest that stopped without reporting its command's status
CONSOLE_TAIL = 40
_MEMORY = re.compile(r"^[1-9][0-9]*[KMGT]?$")


@dataclass(frozen=True)
class Tools:
    vng: str
    qemu: str
    busybox: str


def lane_tool(name: str) -> Optional[str]:
    """``name`` beside this very Python (the .venv's bin, where pip put vng) first, then on
    PATH: ``sudo .venv/bin/testbed vm`` runs with sudo's PATH, which lacks the .venv."""
    beside = Path(sys.executable).parent / name
    return str(beside) if os.access(beside, os.X_OK) else shutil.which(name)


def find_tools() -> Tools:
    """vng (with the virtme-run it calls), qemu and a busybox for vng's initramfs;
    VMError with the install command."""
    if os.uname().machine != "x86_64":
        raise VMError(f"the VM lane supports x86_64 hosts only, not {os.uname().machine}")
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise VMError("qemu-system-x86_64 not found", fix=INSTALL["qemu"])
    vng = lane_tool("vng")
    if not vng:
        raise VMError("vng (virtme-ng) not found", fix=INSTALL["vng"])
    # vng starts "virtme-run" by name through /bin/sh; run_in_vm puts vng's directory
    # first on its PATH, so the virtme-run found must be the one beside vng
    if not os.access(Path(vng).parent / "virtme-run", os.X_OK):
        raise VMError(f"virtme-run not found beside {vng} (vng runs it)",
                      fix=f"reinstall virtme-ng: {INSTALL['vng']}")
    names = ("busybox-static", "busybox.static", "busybox")  # vng's own search order
    busybox = next(filter(None, map(shutil.which, names)), None)
    if not busybox:
        raise VMError("busybox not found (vng builds its initramfs from it)",
                      fix=INSTALL["busybox"])
    return Tools(vng, qemu, busybox)


def vng_environment(vng: str, host_env: Mapping[str, str], tmpdir: str) -> Dict[str, str]:
    """The environment vng runs in: the host's, with vng's own directory first on PATH (vng
    starts virtme-run by name) and TMPDIR for vng's temporary files."""
    path = [os.path.dirname(vng)] + [p for p in host_env.get("PATH", SYSTEM_PATH).split(":") if p]
    return {**host_env, "PATH": ":".join(dict.fromkeys(path)), "TMPDIR": tmpdir}


def guest_environment(
    python: str, package_root: str, host_env: Mapping[str, str]
) -> Dict[str, str]:
    """What the guest command runs with: this Python first on PATH, this testbed on
    PYTHONPATH, TESTBED_IN_VM=1, and the host's CI and TESTBED_* variables."""
    env = {k: v for k, v in host_env.items() if k in PASSTHROUGH_ENV or k.startswith("TESTBED_")}
    pythonpath = [package_root] + [p for p in host_env.get("PYTHONPATH", "").split(":") if p]
    env.update(
        PATH=f"{os.path.dirname(python)}:{SYSTEM_PATH}",
        PYTHONPATH=":".join(dict.fromkeys(pythonpath)),
        TESTBED_IN_VM="1",
    )
    return dict(sorted(env.items()))


def guest_argv(command: Sequence[str], *, python: str, env: Mapping[str, str]) -> List[str]:
    """argv run in the guest: env(1) setting ``env``, then guest-init, then ``command``."""
    assignments = [f"{k}={v}" for k, v in env.items()]
    return ["/usr/bin/env", *assignments, python, "-m", "testbed.vm", "guest-init", "--", *command]


def cmdline_estimate(script: str, rwdirs: Sequence[str], cwd: str) -> int:
    """Upper estimate of the guest kernel command line vng builds around ``script``:
    its fixed words (about 380 bytes, 440 allowed), per writable directory three
    ``virtme_initmountN`` words, ``virtme_chdir``, ``init=`` with the path of
    virtme-ng-init (200 allowed), and the script in base64."""
    b64 = 4 * ((len(script.encode()) + 2) // 3)
    mounts = sum(80 + len(d.encode()) for d in rwdirs)
    return 440 + mounts + 14 + len(cwd.encode()) + 206 + 15 + b64


def build_vng_argv(
    command: Sequence[str], *, tools: Tools, kernel: str, rwdirs: Sequence[str], accel: str,
    cwd: str, memory: str = "2G", cpus: int = 2, python: str = sys.executable,
    package_root: Optional[str] = None, host_env: Optional[Mapping[str, str]] = None,
    console: Optional[str] = None, tcg_thread: str = "single",
) -> List[str]:
    """The vng command line that boots ``kernel`` and runs ``command`` (argv) in it,
    in directory ``cwd``.  Pure: reads nothing but its arguments.  ``accel`` is "kvm"
    or "tcg"; ``console``, a host file for the guest's kernel messages (warnings and
    worse, on the guest's second serial port)."""
    if not command:
        raise UsageError("testbed vm: no command given", fix="testbed vm -- COMMAND [ARG...]")
    if not _MEMORY.match(memory):
        raise UsageError(f"testbed vm: bad --memory {memory!r}", fix="a size such as 2G or 1536M")
    if cpus < 1:
        raise UsageError(f"testbed vm: bad --cpus {cpus}", fix="1 or more")
    if accel not in ("kvm", "tcg"):
        raise UsageError(f"testbed vm: bad accelerator {accel!r}", fix="kvm or tcg")
    for d in rwdirs:
        if not os.path.isabs(d) or "," in d or "=" in d:
            raise UsageError(f"testbed vm: --rwdir {d!r} must be absolute, without ',' or '='")
    if console is not None and (not os.path.isabs(console) or any(c in console for c in ", \t\n'\"\\")):
        raise UsageError(f"testbed vm: console log path {console!r} must be absolute, "
                         "without commas, blanks or quotes")
    if not os.path.isabs(cwd):
        raise UsageError(f"testbed vm: working directory {cwd!r} must be absolute")
    root = package_root or str(Path(__file__).resolve().parent.parent)
    env = guest_environment(python, root, os.environ if host_env is None else host_env)
    script = shlex.join(guest_argv(command, python=python, env=env))
    if cmdline_estimate(script, rwdirs, cwd) > KERNEL_CMDLINE_MAX:
        raise UsageError(
            f"testbed vm: the guest command ({len(script.encode())} bytes with testbed's "
            f"prefix) may not fit on the guest's {KERNEL_CMDLINE_MAX}-byte kernel command line",
            fix="put the command in a script under the project directory and run that",
        )
    # --force-9p: vng would first try virtiofsd and, where that is qemu's old C daemon
    # (Debian 12), wait 3 s per shared directory before falling back to 9p anyway.
    argv = [tools.vng, f"--run={kernel}", f"--qemu={tools.qemu}", f"--busybox={tools.busybox}",
            f"--memory={memory}", f"--cpus={cpus}", "--force-9p", f"--cwd={cwd}"]
    if tcg_thread not in TCG_THREADS:
        raise UsageError(f"testbed vm: bad --tcg-thread {tcg_thread!r}", fix=" or ".join(TCG_THREADS))
    if accel == "tcg":
        argv.append("--disable-kvm")
        if tcg_thread == "single":  # see TCG_THREADS
            argv.append("--qemu-opts=-accel tcg,thread=single")
    argv += [f"--rwdir={d}" for d in rwdirs]
    if console is not None:  # qemu's second ISA serial port is the guest's ttyS1 (0x2f8)
        argv += [f"--append=earlycon=uart8250,io,0x2f8,115200 keep_bootcon loglevel={CONSOLE_LOGLEVEL}",
                 f"--qemu-opts=-chardev file,id=testbedlog,path={console} -serial chardev:testbedlog"]
    return argv + [f"--exec={script}"]


def run_in_vm(
    argv: List[str], *, kernel: Optional[str] = None, memory: str = "2G", cpus: int = 2,
    rwdirs: Optional[List[str]] = None, timeout: Optional[float] = None, accel: str = "auto",
    console: Optional[str] = None, tcg_thread: str = "single",
) -> int:
    """Run ``argv`` in a guest and return its exit status; VMError when the guest
    cannot be booted or ``timeout`` seconds pass (its qemu is then killed).  The guest's
    kernel warnings and errors are logged to a temporary file, copied to ``console`` when
    the guest stops; when it died without a status or hit ``timeout``, what its kernel
    said is printed."""
    from testbed.vmaccel import choose_accel

    start = time.monotonic()  # --timeout covers the KVM probe too
    if os.environ.get("TESTBED_IN_VM") == "1":
        raise VMError("testbed vm: already inside a testbed VM", fix="run the command directly")
    if accel not in ACCELS:
        raise UsageError(f"testbed vm: bad --accel {accel!r}", fix="auto, kvm or tcg")
    tools = find_tools()
    kern = resolve_kernel(kernel)
    dirs = [os.path.realpath(d) for d in (rwdirs or [os.getcwd()])]
    for d in dirs:
        if not os.path.isdir(d):
            raise UsageError(f"testbed vm: --rwdir {d} is not a directory")

    host_env = dict(os.environ)

    if console is not None:
        console = os.path.abspath(console)

    def build(accel: str, log: Optional[str]) -> List[str]:
        return build_vng_argv(argv, tools=tools, kernel=kern.path, rwdirs=dirs, accel=accel,
                              cwd=os.getcwd(), memory=memory, cpus=cpus, host_env=host_env,
                              console=log, tcg_thread=tcg_thread)

    build("tcg", None)  # reject bad options before a probe boot is spent on them
    from testbed import vmcache

    hot = vmcache.build(sys.executable, str(Path(__file__).resolve().parent.parent))
    if hot:
        host_env[vmcache.ENV] = hot
    choice = choose_accel(accel, tools.qemu, kern.path)
    host_env[ACCEL_ENV] = choice.accel  # a test scales its rates for TCG by it, not by a timing guess
    print(f"testbed vm: booting {kern.version} under {choice.accel.upper()}{choice.describe()}...",
          file=sys.stderr, flush=True)
    if timeout is not None:  # the guest's pytest ends its tests in time (pytest_plugin)
        host_env[DEADLINE_ENV] = f"{time.time() + timeout - (time.monotonic() - start):.0f}"
    with tempfile.TemporaryDirectory(prefix="testbed-vm-") as tmp:  # vng's temp files
        # qemu writes the log in the temporary directory (vng passes its path through a shell
        # line, so it must be a plain one); --console gets a copy when the guest is gone
        log: Optional[str] = os.path.join(tmp, "console.log")
        try:
            vng_argv = build(choice.accel, log)
        except UsageError:
            log, vng_argv = None, build(choice.accel, None)
            print(f"testbed vm: the guest's kernel log is not kept (temporary directory {tmp!r} "
                  "holds a blank, comma or quote)", file=sys.stderr)
        left = None if timeout is None else max(timeout - (time.monotonic() - start), 0.001)
        try:
            status = _run_guest(vng_argv, left, timeout, tmp)
        except VMError:  # --timeout: what the kernel said may tell why it hung
            _keep_console(log, console, "was killed at its --timeout")
            raise
        _keep_console(log, console, "stopped without reporting its command's status"
                      if status == DIED else None)
    return status


def _keep_console(log: Optional[str], console: Optional[str], trouble: Optional[str]) -> None:
    """Copy the guest's kernel log to ``console`` (--console) and, when the guest met
    ``trouble``, print what its kernel said."""
    if log is None:
        return
    if console is not None:
        try:
            shutil.copyfile(log, console)
        except OSError as exc:
            print(f"testbed vm: could not keep the guest's kernel log in {console}: "
                  f"{exc.strerror}", file=sys.stderr)
            console = None
    if trouble:
        _report_console(console or log, trouble, kept=console is not None)


# where a kernel's own account of trouble starts (an oops, a panic, the OOM killer, lockups)
_TROUBLE = re.compile(r"\] (BUG:|Oops|general protection fault|Kernel panic|WARNING:|"
                      r"Out of memory|watchdog:|INFO: task .* blocked|rcu: INFO|"
                      r"UBSAN:|KASAN:|kernel BUG)")


def console_tail(path: str, lines: int = CONSOLE_TAIL) -> List[str]:
    """What to show of a guest console log ([] if there is none), read from its last
    64 KiB: from the first line where the kernel reports trouble (an oops, a panic, the
    OOM killer...), up to ``lines`` lines, then its last lines; or just its last lines."""
    try:
        with open(path, "rb") as f:
            f.seek(max(os.fstat(f.fileno()).st_size - 65536, 0))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    logged = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()]
    first = next((i for i, ln in enumerate(logged) if _TROUBLE.search(ln)), None)
    if first is None or len(logged) - first <= lines:
        return logged[-lines:] if first is None else logged[first:]
    head, end = lines * 3 // 4, lines - lines * 3 // 4
    return logged[first:first + head] + ["..."] + logged[-end:]


def _report_console(log: str, what: str, *, kept: bool) -> None:
    tail = console_tail(log)
    if not tail:
        print(f"testbed vm: the guest {what}; its kernel logged no warning or error",
              file=sys.stderr, flush=True)
        return
    where = f" (all of them: {log})" if kept else ""
    print(f"testbed vm: the guest {what}; its last kernel messages{where}:", file=sys.stderr)
    for line in tail:
        print(f"  | {line}", file=sys.stderr)
    sys.stderr.flush()


def resolve_kernel(kernel: Optional[str]) -> Kernel:
    """``--kernel``: None (the newest installed kernel that can run the lab), a version such
    as ``7.3``, ``6.12`` or a full release, or a path to a kernel image."""
    if kernel is None:
        return find_kernel()
    if "/" not in kernel and not os.path.isfile(kernel):
        return find_kernel(spec=kernel)
    if not os.access(kernel, os.R_OK):
        raise VMError(f"testbed vm: kernel {kernel} is missing or unreadable",
                      fix="pass a readable vmlinuz or an installed version (testbed vm --list-kernels)")
    return Kernel(os.path.abspath(kernel), kernel_version(kernel))


def _run_guest(vng_argv: List[str], left: Optional[float], timeout: Optional[float],
               tmp: str) -> int:
    """Run vng in its own process group, its output copied live to ours; kill it on timeout.
    ``tmp``: vng's temporary directory."""
    # vng's qemu reopens /proc/self/fd/{0,1,2}: a closed stdin would make vng drop
    # output (give it /dev/null), and reopening a regular file truncates it (qemu's
    # file chardev uses O_TRUNC), wiping what was written before -- so stdout and
    # stderr always go through pipes that we copy.
    stdin = None if _reopenable(0) else subprocess.DEVNULL
    tty = _tty_state()
    main = threading.current_thread() is threading.main_thread()
    on_term = signal.signal(signal.SIGTERM, _terminated) if main else None  # kill qemu too
    proc = subprocess.Popen(vng_argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=vng_environment(vng_argv[0], os.environ, tmp), start_new_session=True)
    pumps = [threading.Thread(target=_pump, args=(src, fd), daemon=True)
             for src, fd in ((proc.stdout, 1), (proc.stderr, 2))]
    for t in pumps:
        t.start()
    try:
        status = proc.wait(timeout=left)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise VMError(f"testbed vm: guest still running after --timeout {timeout:g} s; "
                      "killed its qemu",
                      fix="raise --timeout or make the command faster") from None
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        for t in pumps:
            t.join()
        _restore_tty(tty)
        if main:
            signal.signal(signal.SIGTERM, on_term)
    return status if status >= 0 else 128 - status


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _reopenable(fd: int) -> bool:
    try:
        os.close(os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return True


def _pump(src, fd: int) -> None:
    """Copy ``src`` to ``fd`` until EOF, as the bytes come.  Once ``fd`` is gone
    (a reader such as ``head`` quit) keep draining, so the guest never blocks."""
    alive = True
    with src:
        for chunk in iter(lambda: os.read(src.fileno(), 65536), b""):
            while alive and chunk:
                try:
                    chunk = chunk[os.write(fd, chunk):]
                except OSError:
                    alive = False


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM vng's process group (vng and qemu), SIGKILL it if still alive after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _tty_state():
    if not sys.stdin or not sys.stdin.isatty():
        return None
    import termios

    return termios.tcgetattr(sys.stdin.fileno())


def _restore_tty(state) -> None:
    if state is not None:
        import termios

        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, state)


def _mount_import_cache() -> None:
    """In the guest: the host's import cache (testbed.vmcache) into RAM, if one was built."""
    from testbed import vmcache

    tar = os.environ.get(vmcache.ENV)
    if not tar:
        return
    start = time.monotonic()
    try:
        roots = vmcache.mount_in_guest(tar)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"testbed vm (guest): import cache not mounted ({exc}); imports read over 9p",
              file=sys.stderr)
        return
    print(f"testbed vm (guest): import cache: {len(roots)} directories overlaid from RAM "
          f"in {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)


def guest_init(command: List[str]) -> int:
    """In the guest: load the lab's modules, then exec ``command`` (returns only on failure)."""
    if not command:
        print("testbed vm (guest): no command given", file=sys.stderr)
        return GUEST_INIT_FAILED
    _mount_import_cache()
    moddir = Path("/lib/modules") / os.uname().release
    index = ""
    for name in ("modules.dep", "modules.builtin"):  # Debian's 7.3 ships no modules.builtin
        try:
            index += (moddir / name).read_text()
        except OSError:
            pass
    optional = [m for m in OPTIONAL_GUEST_MODULES if f"/{m}.ko" in index]
    modprobe = shutil.which("modprobe") or "/sbin/modprobe"
    # max_bonds=0: no stray bond0 in the initial namespace; labs create their bonds
    for step in ([modprobe, "bonding", "max_bonds=0"], [modprobe, "-a", *GUEST_MODULES, *optional]):
        status = subprocess.call(step)
        if status != 0:
            print(f"testbed vm (guest): {shlex.join(step)} failed with status {status}",
                  file=sys.stderr)
            return GUEST_INIT_FAILED
    sys.stdout.flush()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"testbed vm (guest): cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    return GUEST_INIT_FAILED  # not reached


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m testbed.vm guest-init -- CMD...`` (in the guest), or
    ``python -m testbed.vm run [OPTIONS] -- CMD...`` (``testbed vm`` without the CLI)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["guest-init"]:
        return guest_init(args[2:] if args[1:2] == ["--"] else args[1:])
    import argparse

    from testbed.commands import vm as command

    parser = argparse.ArgumentParser(prog="python -m testbed.vm")
    command.register(parser.add_subparsers(dest="action", required=True), name="run")
    ns = parser.parse_args(args)
    try:
        return ns.func(ns)
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
