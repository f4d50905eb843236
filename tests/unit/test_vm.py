"""The VM lane's pure parts and its process handling, on the host: no root, no boot.

Kernels and module trees are fake files under tmp_path; the KVM probe and the guest
runner are exercised with small stand-in programs, so what is checked is our own
logic -- which kernel is picked, what vng is told, how a hung qemu is killed.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from testbed import pids, vm, vmaccel
from testbed.commands import vm as vm_command
from testbed.errors import UsageError, VMError
from testbed.vmkernel import find_kernel, host_can_run_lab, kernel_version, version_key

TOOLS = vm.Tools(vng="/opt/vng/bin/vng", qemu="/usr/bin/qemu-system-x86_64", busybox="/usr/bin/busybox")
PY = "/opt/py/bin/python3"

MODULE_PATHS = {
    "bonding": "kernel/drivers/net/bonding/bonding",
    "cls_flower": "kernel/net/sched/cls_flower",
    "act_mirred": "kernel/net/sched/act_mirred",
    "act_gact": "kernel/net/sched/act_gact",
}


def make_kernel(
    root: Path, version: str, modules=("bonding", "cls_flower", "act_mirred"), suffix: str = ".ko", builtin=()
) -> Path:
    """A fake installed kernel: /boot/vmlinuz-<version> and its /lib/modules tree."""
    image = root / "boot" / f"vmlinuz-{version}"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(b"not really a kernel")
    moddir = root / "lib" / "modules" / version
    moddir.mkdir(parents=True, exist_ok=True)
    for name in modules:
        path = moddir / (MODULE_PATHS[name] + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x7fELF")
    (moddir / "modules.builtin").write_text("".join(f"{MODULE_PATHS[m]}.ko\n" for m in builtin))
    return image


# ---- kernel finder -------------------------------------------------------------------


def test_version_key_orders_releases_numerically():
    releases = ["6.1.0-9-amd64", "6.12.12-amd64", "6.1.0-56-amd64", "5.10.0-30-amd64"]
    assert sorted(releases, key=version_key) == ["5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-56-amd64", "6.12.12-amd64"]


def test_find_kernel_prefers_newest_complete_kernel(tmp_path):
    make_kernel(tmp_path, "6.1.0-56-amd64")
    newest_ok = make_kernel(tmp_path, "6.12.12-amd64", suffix=".ko.xz")
    make_kernel(tmp_path, "6.13.0-1-amd64", modules=("bonding", "act_mirred"))  # no flower
    (tmp_path / "boot" / "vmlinuz-6.18.0-1-amd64").write_bytes(b"x")  # no modules at all
    kernel = find_kernel(tmp_path)
    assert kernel == vm.Kernel(str(newest_ok), "6.12.12-amd64")


def test_find_kernel_accepts_builtin_and_compressed_modules(tmp_path):
    image = make_kernel(
        tmp_path, "6.6.0-1-cloud", modules=("bonding",), suffix=".ko.zst", builtin=("cls_flower", "act_mirred")
    )
    assert find_kernel(tmp_path).path == str(image)


def test_find_kernel_error_names_what_is_missing_and_the_install_command(tmp_path):
    make_kernel(tmp_path, "6.13.0-1-amd64", modules=("bonding",))
    (tmp_path / "boot" / "vmlinuz-6.18.0-1-amd64").write_bytes(b"x")
    with pytest.raises(VMError) as err:
        find_kernel(tmp_path)
    text = str(err.value)
    assert "lib/modules/6.13.0-1-amd64 lacks cls_flower, act_mirred" in text
    assert "vmlinuz-6.18.0-1-amd64 has no" in text
    assert "apt-get install -y linux-image-amd64" in text


def test_find_kernel_without_any_image(tmp_path):
    with pytest.raises(VMError, match=r"no .*/boot/vmlinuz-\* or lib/modules/\*/vmlinuz at all"):
        find_kernel(tmp_path)


def test_kernel_version_from_name_and_from_bzimage_header(tmp_path):
    assert kernel_version("/boot/vmlinuz-6.1.0-56-amd64") == "6.1.0-56-amd64"
    image = bytearray(0x600)
    image[0x202:0x206] = b"HdrS"
    image[0x20E:0x210] = (0x300).to_bytes(2, "little")  # string at 0x300 + 0x200
    image[0x500:0x540] = b"6.15.0-rc1 (builder@host) #1 SMP\0".ljust(0x40, b"\0")
    (tmp_path / "bzImage").write_bytes(bytes(image))
    assert kernel_version(str(tmp_path / "bzImage")) == "6.15.0-rc1"
    (tmp_path / "blob").write_bytes(b"\0" * 16)
    assert kernel_version(str(tmp_path / "blob")) == "blob"


# ---- host_can_run_lab ----------------------------------------------------------------


def test_host_can_run_lab_counts_loaded_builtin_and_module_files(tmp_path):
    rel = "6.9.0-test"
    (tmp_path / "proc").mkdir()
    with gzip.open(tmp_path / "proc" / "config.gz", "wt") as f:
        f.write("CONFIG_NET_ACT_MIRRED=y\nCONFIG_NET_CLS_FLOWER=m\n# CONFIG_BONDING is not set\n")
    assert host_can_run_lab(tmp_path, rel) == (False, ["bonding", "cls_flower"])
    make_kernel(tmp_path, rel, modules=("cls_flower",))  # flower as a module file
    assert host_can_run_lab(tmp_path, rel) == (False, ["bonding"])
    (tmp_path / "sys" / "module" / "bonding").mkdir(parents=True)  # bonding loaded
    assert host_can_run_lab(tmp_path, rel) == (True, [])


def test_host_can_run_lab_reads_boot_config_without_proc_config(tmp_path):
    rel = "6.9.0-test"
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / f"config-{rel}").write_text(
        "CONFIG_BONDING=y\nCONFIG_NET_CLS_FLOWER=y\nCONFIG_NET_ACT_MIRRED=m\n"
    )
    assert host_can_run_lab(tmp_path, rel) == (False, ["act_mirred"])


# ---- vng argv ------------------------------------------------------------------------


def build(command, **kw):
    args = dict(
        tools=TOOLS,
        kernel="/boot/vmlinuz-6.1.0-56-amd64",
        rwdirs=["/work/main"],
        accel="tcg",
        cwd="/work/main",
        python=PY,
        package_root="/work/main",
        host_env={"PATH": "/usr/bin", "HOME": "/root"},
    )
    args.update(kw)
    return vm.build_vng_argv(command, **args)


def test_build_vng_argv_tcg():
    argv = build(
        ["python", "-m", "pytest", "-m", "integration"], memory="4G", cpus=3, rwdirs=["/work/main", "/srv/out"]
    )
    assert argv[:10] == [
        "/opt/vng/bin/vng",
        "--run=/boot/vmlinuz-6.1.0-56-amd64",
        "--qemu=/usr/bin/qemu-system-x86_64",
        "--busybox=/usr/bin/busybox",
        "--memory=4G",
        "--cpus=3",
        "--force-9p",
        "--cwd=/work/main",
        "--disable-kvm",
        "--qemu-opts=-accel tcg,thread=single",
    ]
    assert argv[10:12] == ["--rwdir=/work/main", "--rwdir=/srv/out"]
    assert argv[12].startswith("--exec=") and len(argv) == 13


def test_build_vng_argv_kvm_has_no_disable_flag():
    argv = build(["true"], accel="kvm")
    assert "--disable-kvm" not in argv
    assert not [a for a in argv if "thread=" in a]  # the TCG thread model means nothing under KVM


def test_tcg_multi_thread_keeps_qemus_default():
    argv = build(["true"], tcg_thread="multi")
    assert "--disable-kvm" in argv and not [a for a in argv if "-accel" in a]


def test_guest_command_round_trips_through_shell_quoting():
    command = ["sh", "-c", "echo \"$HOME\" 'it''s' $((1+2)); exit 7", "a b", "", "*"]
    script = build(command)[-1][len("--exec=") :]
    words = shlex.split(script)  # what the guest's sh will see
    assert words == [
        "/usr/bin/env",
        "PATH=/opt/py/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH=/work/main",
        "TESTBED_IN_VM=1",
        PY,
        "-m",
        "testbed.vm",
        "guest-init",
        "--",
        *command,
    ]


def test_guest_environment_passes_ci_and_testbed_vars_only():
    env = vm.guest_environment(
        PY,
        "/src/tb",
        {
            "CI": "true",
            "TESTBED_LOG": "debug",
            "TESTBED_IN_VM": "0",
            "SECRET_TOKEN": "x",
            "PYTHONPATH": "/extra:/src/tb",
            "PATH": "/home/u/bin",
        },
    )
    assert env == {
        "CI": "true",
        "PATH": f"/opt/py/bin:{vm.SYSTEM_PATH}",
        "PYTHONPATH": "/src/tb:/extra",
        "TESTBED_IN_VM": "1",
        "TESTBED_LOG": "debug",
    }


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"memory": "2 GB"}, "bad --memory"),
        ({"memory": "0"}, "bad --memory"),
        ({"cpus": 0}, "bad --cpus"),
        ({"accel": "auto"}, "bad accelerator"),
        ({"rwdirs": ["relative/dir"]}, "must be absolute"),
        ({"rwdirs": ["/a,b"]}, "without ','"),
        ({"cwd": "work"}, "working directory"),
        ({"tcg_thread": "mttcg"}, "bad --tcg-thread"),
    ],
)
def test_build_vng_argv_rejects_bad_options(kw, message):
    with pytest.raises(UsageError, match=message):
        build(["true"], **kw)


def test_build_vng_argv_rejects_empty_and_overlong_commands():
    with pytest.raises(UsageError, match="no command"):
        build([])
    build(["echo", "x" * 500])  # fits
    with pytest.raises(UsageError, match="kernel command line"):
        build(["echo", "x" * 1100])


def test_cmdline_estimate_bounds_what_vng_really_built():
    # vng 1.42 --dry-run with these directories made a 697-byte -append line
    assert vm.cmdline_estimate("echo hi", ["/work/main", "/work/shared"], "/work/main") >= 697
    assert vm.cmdline_estimate("echo hi", ["/work/main", "/work/shared"], "/work/main") < 1000


# ---- the CLI module ------------------------------------------------------------------


def parse(*args):
    parser = argparse.ArgumentParser()
    vm_command.register(parser.add_subparsers())
    return parser.parse_args(["vm", *args])


def test_cli_parses_repeatable_rwdir_and_command_after_double_dash():
    ns = parse(
        "--rwdir", "/a", "--rwdir", "/b", "--accel", "tcg", "--timeout", "90", "--", "python", "-m", "pytest", "-x"
    )
    assert ns.rwdir == ["/a", "/b"] and ns.accel == "tcg" and ns.timeout == 90.0
    assert ns.command == ["--", "python", "-m", "pytest", "-x"]
    assert ns.func is vm_command.handle


def test_cli_rejects_missing_command_and_bad_timeout():
    with pytest.raises(UsageError, match="no command"):
        vm_command.handle(parse("--"))
    with pytest.raises(UsageError, match="bad --timeout"):
        vm_command.handle(parse("--timeout", "0", "--", "true"))


def test_help_has_examples(capsys):
    parser = argparse.ArgumentParser(prog="testbed")
    vm_command.register(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["vm", "--help"])
    text = capsys.readouterr().out
    assert "usage: testbed vm [OPTIONS] -- COMMAND [ARG...]" in text
    assert "    testbed vm -- python -m pytest -m integration tests/integration" in text
    assert "testbed vm --list-kernels" in text and "testbed vm --kernel 6.12" in text
    assert "apt-get install -y qemu-system-x86" in text


def test_run_in_vm_refuses_to_nest(monkeypatch):
    monkeypatch.setenv("TESTBED_IN_VM", "1")
    with pytest.raises(VMError, match="already inside"):
        vm.run_in_vm(["true"])


TMP = tempfile.gettempdir()  # vng's temporary directory, for the stand-in programs


def gone(pid: int, within: float = 5.0) -> bool:
    """The process exits within ``within`` seconds (absent, or a zombie waiting for its new
    parent): a SIGKILLed process of a loaded machine may take a moment to die."""
    deadline = time.monotonic() + within
    while pids.alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---- KVM probe and verdict cache -----------------------------------------------------


def fake_qemu(tmp_path: Path, body: str) -> str:
    """A stand-in for qemu-system-x86_64: a script that records its pid, then ``body``."""
    path = tmp_path / "fake-qemu"
    path.write_text(
        f"#!{sys.executable}\nimport os, sys, time\n"
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n{body}\n"
    )
    path.chmod(0o755)
    return str(path)


def test_probe_reports_qemus_error(tmp_path):
    qemu = fake_qemu(
        tmp_path,
        "print('qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69',"
        " flush=True)\nprint('Assertion failed', flush=True)\nos.abort()",
    )
    assert vmaccel.probe_kvm(qemu, "/boot/vmlinuz", deadline=10) == (
        False,
        "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69",
    )


def test_probe_accepts_a_kernel_that_reaches_its_panic(tmp_path):
    qemu = fake_qemu(
        tmp_path,
        "print('[0.0] Linux version 6.1.0', flush=True)\n"
        "print('[1.7] Kernel panic - not syncing: VFS', flush=True)\n"
        "time.sleep(60)",
    )
    start = time.monotonic()
    assert vmaccel.probe_kvm(qemu, "/boot/vmlinuz", deadline=20) == (True, "")
    assert time.monotonic() - start < 5  # did not wait for the sleeping "qemu"


def test_probe_kills_a_silent_hang_at_its_deadline(tmp_path):
    qemu = fake_qemu(tmp_path, "time.sleep(60)")
    start = time.monotonic()
    works, reason = vmaccel.probe_kvm(qemu, "/boot/vmlinuz", deadline=1.0)
    assert (works, reason) == (False, "no output from the guest within 1 s (hang)")
    assert time.monotonic() - start < 5
    assert gone(int((tmp_path / "pid").read_text()))


def test_verdict_cache_round_trip_and_unwritable_dir(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    dirs = [blocked / "sub", tmp_path / "cache"]
    key = vmaccel.cache_key("/usr/bin/env", "/nonexistent/vmlinuz")
    assert vmaccel.load_verdict(key, dirs) is None
    vmaccel.store_verdict(key, {"kvm": False, "reason": "r"}, dirs)
    assert vmaccel.load_verdict(key, dirs) == {"kvm": False, "reason": "r"}
    assert (tmp_path / "cache" / vmaccel.CACHE_FILE).exists()
    assert vmaccel.load_verdict(key + "x", dirs) is None


def test_accel_choice_describes_itself():
    assert vmaccel.AccelChoice("kvm", "").describe() == ""
    assert vmaccel.AccelChoice("tcg", "TCG requested").describe() == " (TCG requested)"
    assert (
        vmaccel.AccelChoice("tcg", "KVM unusable: x", probe_seconds=0.12).describe()
        == " (KVM unusable: x; probe took 0.1 s)"
    )
    assert vmaccel.choose_accel("tcg", "/q", "/k").accel == "tcg"


# ---- running the guest (with stand-in programs) ---------------------------------------


def test_run_guest_passes_exit_status_and_output(capfd):
    status = vm._run_guest(
        [sys.executable, "-c", "print('out'); import sys; print('err', file=sys.stderr); sys.exit(7)"], None, None, TMP
    )
    assert status == 7
    out, err = capfd.readouterr()
    assert (out, err) == ("out\n", "err\n")


def test_run_guest_keeps_earlier_output_when_child_reopens_stdout_with_trunc(capfd):
    # qemu's file chardev reopens /proc/self/fd/1 with O_TRUNC
    print("before", flush=True)
    reopen = "import os; fd = os.open('/proc/self/fd/1', os.O_WRONLY | os.O_TRUNC); os.write(fd, b'guest\\n')"
    assert vm._run_guest([sys.executable, "-c", reopen], None, None, TMP) == 0
    assert capfd.readouterr().out == "before\nguest\n"


def test_run_guest_kills_the_process_group_on_timeout(tmp_path):
    child_pid = tmp_path / "child"
    script = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(child_pid)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    start = time.monotonic()
    with pytest.raises(VMError, match="after --timeout 1.5 s"):
        vm._run_guest([sys.executable, "-c", script], 1.5, 1.5, TMP)
    assert time.monotonic() - start < 10
    assert gone(int(child_pid.read_text()))  # the grandchild, like qemu under vng


def test_run_guest_maps_death_by_signal_to_128_plus_signal():
    status = vm._run_guest([sys.executable, "-c", "import os; os.kill(os.getpid(), 15)"], None, None, TMP)
    assert status == 143


def test_python_m_testbed_vm_guest_init_rejects_empty_command():
    proc = subprocess.run(
        [sys.executable, "-m", "testbed.vm", "guest-init", "--"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == vm.GUEST_INIT_FAILED
    assert "no command given" in proc.stderr


def test_run_guest_keeps_draining_after_the_reader_quits():
    # `testbed vm -- cmd | head -1`: the guest must not block once head has exited
    writer = "import sys\nfor i in range(200000):\n    print('line', i)\nsys.stdout.flush()\nsys.exit(5)"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the guest even starts
    saved = os.dup(1)
    os.dup2(write_end, 1)
    try:
        start = time.monotonic()
        status = vm._run_guest([sys.executable, "-c", writer], 30, 30, TMP)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(write_end)
    assert status == 5
    assert time.monotonic() - start < 25


def test_find_tools_names_each_missing_tool_with_its_install_command(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "python3"))

    def install(name):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
        return str(bindir / name)

    for tool, fix in [("qemu-system-x86_64", "apt-get install -y qemu-system-x86"),
                      ("vng", "pip install virtme-ng"),
                      ("virtme-run", "reinstall virtme-ng: pip install virtme-ng"),
                      ("busybox", "apt-get install -y busybox-static")]:
        with pytest.raises(VMError, match=f"{tool}.*not found.*{fix}"):
            vm.find_tools()
        install(tool)
    assert vm.find_tools() == vm.Tools(vng=str(bindir / "vng"),
                                       qemu=str(bindir / "qemu-system-x86_64"),
                                       busybox=str(bindir / "busybox"))


# ---- the guest's kernel console ---------------------------------------------------------


def test_console_log_goes_to_a_second_serial_port_at_warning_level():
    argv = build(["true"], console="/work/main/out/console.log")
    assert "--append=earlycon=uart8250,io,0x2f8,115200 keep_bootcon loglevel=5" in argv
    opts = [a for a in argv if a.startswith("--qemu-opts=")]
    assert opts == ["--qemu-opts=-accel tcg,thread=single",
                    "--qemu-opts=-chardev file,id=testbedlog,path=/work/main/out/console.log "
                    "-serial chardev:testbedlog"]
    assert argv[-1].startswith("--exec=")  # vng wants its command last
    assert not any(a.startswith("--append") or "chardev" in a for a in build(["true"]))


@pytest.mark.parametrize("path", ["out/console.log", "/tmp/a b.log", "/tmp/a,b.log", "/tmp/x'y"])
def test_console_log_path_that_vng_would_split_is_refused(path):
    with pytest.raises(UsageError, match="console log path"):
        build(["true"], console=path)


def test_console_tail_keeps_the_last_lines_of_a_bounded_read(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"".join(b"line %d\r\n" % i for i in range(20000)) + b"\n\n")
    tail = vm.console_tail(str(log), lines=3)
    assert tail == ["line 19997", "line 19998", "line 19999"]
    assert vm.console_tail(str(tmp_path / "missing")) == []


def test_a_dead_guest_reports_its_last_kernel_messages(tmp_path, capsys):
    log = tmp_path / "console.log"
    log.write_text("[  1.0] bond0: warning\n[ 99.1] Kernel panic - not syncing: Fatal exception\n")
    vm._report_console(str(log), "stopped without reporting its command's status", kept=True)
    err = capsys.readouterr().err
    assert f"its last kernel messages (all of them: {log}):" in err
    assert "  | [ 99.1] Kernel panic - not syncing: Fatal exception" in err
    vm._report_console(str(tmp_path / "none"), "was killed at its --timeout", kept=False)
    assert "logged no warning or error" in capsys.readouterr().err


def test_sigterm_to_testbed_vm_kills_the_guest_group(tmp_path):
    # `kill PID` of testbed vm used to leave qemu running
    child_pid = tmp_path / "child"
    guest = ("import subprocess, sys, time; "
             "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
             f"open({str(child_pid)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    runner = ("import sys; from testbed import vm; "
              f"sys.exit(vm._run_guest([sys.executable, '-c', {guest!r}], None, None, '/tmp'))")
    proc = subprocess.Popen([sys.executable, "-c", runner], cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 20
    while not (child_pid.exists() and child_pid.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.terminate()
    assert proc.wait(timeout=20) == 128 + 15
    assert gone(int(child_pid.read_text()))


def test_console_tail_starts_where_the_kernel_reports_trouble(tmp_path):
    log = tmp_path / "console.log"
    lines = [f"[ 1.{i}] bond0: noise {i}" for i in range(100)]
    lines += ["[ 9.0] BUG: kernel NULL pointer dereference, address: 0000000000000008"]
    lines += [f"[ 9.1] trace {i}" for i in range(100)]
    lines += ["[ 9.2] Kernel panic - not syncing: Fatal exception"]
    log.write_text("\n".join(lines) + "\n")
    tail = vm.console_tail(str(log), lines=8)
    assert tail[0].endswith("BUG: kernel NULL pointer dereference, address: 0000000000000008")
    assert tail[6] == "..." and tail[-1].endswith("Kernel panic - not syncing: Fatal exception")
    assert len(tail) == 9
