"""Choose the VM lane's accelerator: KVM when it really works, TCG otherwise.

``/dev/kvm`` existing proves little: on some hosts (nested virtualization,
sandboxes) qemu aborts with ``failed to set MSR 0x10a`` or the guest hangs
without a word.  So the verdict comes from a cheap probe: boot the guest
kernel under KVM with no root filesystem and a serial console on a pipe; a
kernel that prints its panic ("VFS: Unable to mount root fs") has run its
whole early boot, so KVM works.  Anything else before the deadline -- qemu
exiting, silence -- means it does not.  The probe's qemu is killed with its
process group either way.

The verdict is cached per (kernel, qemu binary, host kernel) in
``/var/cache/testbed/`` or ``~/.cache/testbed/``; an unwritable cache only
means probing again next time.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

PROBE_DEADLINE = 20.0  # seconds; a working KVM reaches the panic in about 1 s
CACHE_FILE = "kvm-probe.json"
_OK_MARKER = b"Kernel panic"
_BOOT_MARKER = b"Linux version"


@dataclass(frozen=True)
class AccelChoice:
    """How the guest will run and why."""

    accel: str  # "kvm" or "tcg"
    reason: str  # why KVM is not used ("" when it is)
    probe_seconds: Optional[float] = None  # None when no probe ran now
    cached: bool = False

    def describe(self) -> str:
        """The parenthesised part of the progress line."""
        if self.accel == "kvm":
            return ""
        note = "; cached verdict" if self.cached else ""
        if self.probe_seconds is not None:
            note = f"; probe took {self.probe_seconds:.1f} s"
        return f" ({self.reason}{note})"


def kvm_device_problem(dev: str = "/dev/kvm") -> Optional[str]:
    """Why ``dev`` cannot be used at all, or None when it opens read-write."""
    if not os.path.exists(dev):
        return f"no {dev}"
    try:
        os.close(os.open(dev, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return f"cannot open {dev}: {exc.strerror} (add the user to group kvm)"
    return None


def probe_argv(qemu: str, kernel: str) -> List[str]:
    """The probe's qemu command: KVM, the host CPU (as vng uses it), no root fs."""
    return [
        qemu, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults",
        "-display", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", kernel, "-append", "console=ttyS0 panic=-1",
    ]


def probe_kvm(qemu: str, kernel: str, deadline: float = PROBE_DEADLINE) -> Tuple[bool, str]:
    """Boot ``kernel`` under KVM until it panics; return (works, reason if not)."""
    proc = subprocess.Popen(
        probe_argv(qemu, kernel), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    assert proc.stdout is not None
    output = b""
    booted = timed_out = False
    end = time.monotonic() + deadline
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while _OK_MARKER not in output:
                left = end - time.monotonic()
                if left <= 0 or not sel.select(timeout=left):
                    timed_out = True
                    break
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break  # qemu exited
                output = (output + chunk)[-262144:]
                booted = booted or _BOOT_MARKER in output
    finally:
        _kill_group(proc)
    if _OK_MARKER in output:
        return True, ""
    return False, _failure_reason(output, booted, timed_out, deadline)


def _failure_reason(output: bytes, booted: bool, timed_out: bool, deadline: float) -> str:
    lines = [ln.strip() for ln in output.decode("utf-8", "replace").splitlines() if ln.strip()]
    if timed_out:
        if booted:
            return f"guest started but did not finish booting within {deadline:.0f} s"
        return f"no output from the guest within {deadline:.0f} s (hang)"
    if booted:
        return f"qemu exited during the guest's boot: {lines[-1][:200]}"
    # qemu's own complaint, e.g. "error: failed to set MSR 0x10a", before its assertion
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["qemu exited without a message"])[0][:200]


def _kill_group(proc: subprocess.Popen) -> None:
    """End the probe's qemu and everything it started, then reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def cache_dirs() -> List[Path]:
    """Where verdicts are kept, most preferred first."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [Path("/var/cache/testbed"), home / "testbed"]


def cache_key(qemu: str, kernel: str) -> str:
    """Identity of a verdict: both binaries (path and mtime) and the host kernel."""
    parts = []
    for path in (kernel, qemu):
        real = os.path.realpath(path)
        try:
            parts.append(f"{real}@{os.stat(real).st_mtime_ns}")
        except OSError:
            parts.append(f"{real}@?")
    return "|".join(parts + [os.uname().release])


def load_verdict(key: str, dirs: Optional[List[Path]] = None) -> Optional[Dict[str, object]]:
    """The cached verdict for ``key``, or None."""
    for directory in dirs if dirs is not None else cache_dirs():
        try:
            data = json.loads((directory / CACHE_FILE).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            return data[key]
    return None


def store_verdict(key: str, verdict: Dict[str, object], dirs: Optional[List[Path]] = None) -> None:
    """Record ``verdict`` in the first writable cache directory (best effort)."""
    for directory in dirs if dirs is not None else cache_dirs():
        path = directory / CACHE_FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = {}
            if not isinstance(data, dict):
                data = {}
            data[key] = verdict
            tmp = path.with_name(f"{CACHE_FILE}.{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, path)
            return
        except OSError:
            continue


def choose_accel(requested: str, qemu: str, kernel: str) -> AccelChoice:
    """Resolve ``requested`` ("auto", "kvm" or "tcg") to the accelerator to boot with."""
    if requested == "tcg":
        return AccelChoice("tcg", "TCG requested")
    if requested == "kvm":
        return AccelChoice("kvm", "")
    problem = kvm_device_problem()
    if problem:
        return AccelChoice("tcg", f"KVM unusable: {problem}")
    key = cache_key(qemu, kernel)
    cached = load_verdict(key)
    if cached is not None:
        if cached.get("kvm"):
            return AccelChoice("kvm", "", cached=True)
        return AccelChoice("tcg", f"KVM unusable: {cached.get('reason')}", cached=True)
    start = time.monotonic()
    works, reason = probe_kvm(qemu, kernel)
    took = time.monotonic() - start
    store_verdict(key, {"kvm": works, "reason": reason, "probe_seconds": round(took, 3)})
    if works:
        return AccelChoice("kvm", "", probe_seconds=took)
    return AccelChoice("tcg", f"KVM unusable: {reason}", probe_seconds=took)
