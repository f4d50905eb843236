"""Installed kernels and what each offers (kfeatures, vmkernel, ``testbed vm --list-kernels``),
and the lane finding its own tools when PATH lacks the .venv -- on the host, no boot.

Kernels are fake trees under tmp_path; bonding modules are small ELF objects built here
whose ``.rodata`` holds the option names, compressed the ways distributions ship them."""

from __future__ import annotations

import argparse
import gzip
import lzma
import os
import struct
import sys
from pathlib import Path

import pytest

from testbed import caps, kfeatures, vm, vmkernel
from testbed.commands import vm as vm_command
from testbed.errors import VMError

LAB = {"bonding": "kernel/drivers/net/bonding/bonding.ko", "cls_flower": "kernel/net/sched/cls_flower.ko",
       "act_mirred": "kernel/net/sched/act_mirred.ko", "rdma_rxe": "kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko"}


def elf(sections: dict) -> bytes:
    """A minimal ELF64 little-endian relocatable object with the given sections (name -> bytes)."""
    names = [""] + list(sections) + [".shstrtab"]
    shstr = b"\0".join(n.encode() for n in names) + b"\0"
    bodies = [b""] + list(sections.values()) + [shstr]
    data, offsets, off = b"", [], 64
    for body in bodies:
        offsets.append(off)
        data += body
        off += len(body)
    shoff = off
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack(
        "<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(names), len(names) - 1)
    table, name_off = b"", 0
    for name, body, offset in zip(names, bodies, offsets):
        table += struct.pack("<IIQQQQIIQQ", name_off if name else 0, 1, 0, 0, offset, len(body), 0, 0, 1, 0)
        name_off += len(name) + 1
    return header + data + table


def bonding_ko(options, elsewhere=()) -> bytes:
    """A bonding module whose .rodata names ``options`` (and a .BTF naming ``elsewhere``)."""
    rodata = b"\0Setting %s\0" + b"\0".join(o.encode() for o in options) + b"\0off\0on\0"
    return elf({".text": b"\x90" * 16, ".rodata": rodata, ".BTF": b"\0".join(e.encode() for e in elsewhere) + b"\0"})


def install(root: Path, release: str, *, image: str = "boot", options=("mode", "miimon"), suffix: str = "",
            modules=("bonding", "cls_flower", "act_mirred"), depmod: bool = True) -> Path:
    """A fake installed kernel: its image (under /boot or /lib/modules/<release>) and modules."""
    moddir = root / "lib" / "modules" / release
    moddir.mkdir(parents=True, exist_ok=True)
    dep = []
    for name in modules:
        path = moddir / (LAB[name] + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = bonding_ko(options) if name == "bonding" else b"\x7fELF"
        opener = {".xz": lzma.compress, ".gz": gzip.compress, "": bytes}[suffix]
        path.write_bytes(opener(body))
        dep.append(f"{LAB[name]}{suffix}:\n")
    if depmod:
        (moddir / "modules.dep").write_text("".join(dep))
    target = root / "boot" / f"vmlinuz-{release}" if image == "boot" else moddir / "vmlinuz"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"kernel image")
    return target


# ---- kfeatures.bond_options --------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".xz", ".gz"])
def test_bond_options_reads_the_modules_rodata(tmp_path, suffix):
    install(tmp_path, "7.3.4+deb13-amd64", options=("mode", "lacp_strict", "actor_port_prio"), suffix=suffix)
    got = kfeatures.bond_options("7.3.4+deb13-amd64", str(tmp_path))
    assert got == {"mode", "lacp_strict", "actor_port_prio", kfeatures.AD_SELECT_PRIO}  # no BTF: paired


def test_ad_select_prio_is_read_from_the_btf_enum_not_from_actor_port_prio(tmp_path):
    """Debian's 6.1 and 6.12 carry actor_port_prio but their ad_select takes no prio; the module's BTF names
    the enum members (BOND_AD_PRIO only where it does). Without BTF, actor_port_prio is the guess."""
    moddir = tmp_path / "lib/modules/6.12.0-1/kernel/drivers/net/bonding"
    moddir.mkdir(parents=True)
    rodata = b"\0mode\0actor_port_prio\0"
    (moddir / "bonding.ko").write_bytes(elf({".rodata": rodata, ".BTF": b"\0BOND_AD_COUNT\0"}))
    assert kfeatures.bond_options("6.12.0-1", str(tmp_path)) == {"mode", "actor_port_prio"}
    kfeatures.bond_options.cache_clear()
    (moddir / "bonding.ko").write_bytes(elf({".rodata": rodata, ".BTF": b"\0BOND_AD_COUNT\0BOND_AD_PRIO\0"}))
    assert kfeatures.bond_options("6.12.0-1", str(tmp_path)) == {"mode", "actor_port_prio", kfeatures.AD_SELECT_PRIO}
    kfeatures.bond_options.cache_clear()
    (moddir / "bonding.ko").write_bytes(elf({".rodata": rodata}))
    assert kfeatures.AD_SELECT_PRIO in kfeatures.bond_options("6.12.0-1", str(tmp_path))
    kfeatures.bond_options.cache_clear()


def test_bond_options_ignores_names_outside_rodata_and_unknown_words(tmp_path):
    moddir = tmp_path / "lib/modules/6.1.0-1/kernel/drivers/net/bonding"
    moddir.mkdir(parents=True)
    # "prio" only as a BTF member name (a struct field), "lacp_strict" only inside a longer string
    (moddir / "bonding.ko").write_bytes(
        elf({".rodata": b"\0mode\0Setting lacp_strict to %d\0not_an_option\0", ".BTF": b"\0prio\0"}))
    assert kfeatures.bond_options("6.1.0-1", str(tmp_path)) == {"mode"}


def test_bond_options_without_a_module_file_or_with_a_corrupt_one(tmp_path):
    assert kfeatures.bond_options("9.9.9-none", str(tmp_path)) == frozenset()
    moddir = tmp_path / "lib/modules/6.2.0-1/kernel/drivers/net/bonding"
    moddir.mkdir(parents=True)
    (moddir / "bonding.ko.xz").write_bytes(b"not xz at all")
    assert kfeatures.bond_options("6.2.0-1", str(tmp_path)) == frozenset()
    (moddir / "bonding.ko.xz").unlink()
    (moddir / "bonding.ko").write_bytes(b"\x7fELF\x02\x01" + b"\xff" * 100)  # section table beyond the file
    assert kfeatures.bond_options("6.2.0-1", str(tmp_path)) == frozenset()


def test_bond_options_refuses_to_inflate_past_its_bound(tmp_path, monkeypatch):
    install(tmp_path, "6.3.0-1", options=("mode",), suffix=".xz")
    monkeypatch.setattr(kfeatures, "MODULE_MAX_BYTES", 100)
    assert kfeatures.bond_options("6.3.0-1", str(tmp_path)) == frozenset()


def test_bond_options_of_the_installed_kernels_when_present():
    """On this machine's installed kernels (skipped where they are absent): 7.3 alone knows
    lacp_strict; every one knows the options the shipped topologies use."""
    have = {k.version: kfeatures.bond_options(k.version) for k in vmkernel.installed_kernels()}
    if "7.3.4+deb13-amd64" not in have or "6.1.0-56-amd64" not in have:
        pytest.skip("Debian's 6.1 and 7.3 kernels are not installed here")
    assert "lacp_strict" in have["7.3.4+deb13-amd64"] and "lacp_strict" not in have["6.1.0-56-amd64"]
    for options in have.values():
        assert {"mode", "miimon", "updelay", "downdelay", "primary", "xmit_hash_policy", "lacp_rate"} <= options


# ---- features of a kernel that is not running ----------------------------------------------


def test_features_of_another_kernel_ignore_the_running_kernels_loaded_modules(tmp_path, monkeypatch):
    monkeypatch.setattr(caps, "_release", lambda: "6.18.0-host")
    (tmp_path / "sys/module/bonding").mkdir(parents=True)  # loaded in the running kernel
    (tmp_path / "proc").mkdir()
    with gzip.open(tmp_path / "proc/config.gz", "wt") as fh:
        fh.write("CONFIG_NET_CLS_FLOWER=y\n")  # the running kernel's config
    install(tmp_path, "6.1.0-56-amd64", modules=("act_mirred",))
    caps.kernel_config.cache_clear()
    other = kfeatures.features("6.1.0-56-amd64", str(tmp_path))
    assert (other["bonding"], other["flower"], other["mirred"]) == (False, False, True)
    running = kfeatures.features("6.18.0-host", str(tmp_path))
    assert (running["bonding"], running["flower"]) == (True, True)


def test_rxe_netns_needs_rxe_and_linux_7_1(tmp_path):
    install(tmp_path, "7.3.4+deb13-amd64", modules=("bonding", "cls_flower", "act_mirred", "rdma_rxe"))
    install(tmp_path, "6.12.117+deb12-amd64", modules=("bonding", "cls_flower", "act_mirred", "rdma_rxe"))
    install(tmp_path, "7.1.0-norxe", modules=("bonding", "cls_flower", "act_mirred"))
    assert kfeatures.features("7.3.4+deb13-amd64", str(tmp_path))["rxe_netns"] is True
    assert kfeatures.features("6.12.117+deb12-amd64", str(tmp_path))["rxe"] is True
    assert kfeatures.features("6.12.117+deb12-amd64", str(tmp_path))["rxe_netns"] is False
    assert kfeatures.features("7.1.0-norxe", str(tmp_path))["rxe_netns"] is False
    assert "testbed vm --kernel 7.3" in kfeatures.needed_kernel("rxe_netns")


# ---- installed kernels and --kernel VERSION -------------------------------------------------


def test_installed_kernels_finds_boot_and_lib_modules_images_newest_first(tmp_path):
    k61 = install(tmp_path, "6.1.0-56-amd64")
    k612 = install(tmp_path, "6.12.117+deb12-amd64")
    k73 = install(tmp_path, "7.3.4+deb13-amd64", image="lib")
    both = install(tmp_path, "6.6.0-1-amd64")
    (both.parent.parent / "lib/modules/6.6.0-1-amd64/vmlinuz").write_bytes(b"x")  # also beside its modules
    kernels = vmkernel.installed_kernels(tmp_path)
    assert [k.version for k in kernels] == ["7.3.4+deb13-amd64", "6.12.117+deb12-amd64", "6.6.0-1-amd64",
                                            "6.1.0-56-amd64"]
    assert kernels[0].path == str(k73) and kernels[1].path == str(k612) and kernels[3].path == str(k61)
    assert kernels[2].path == str(both)  # /boot wins
    assert vmkernel.find_kernel(tmp_path).version == "7.3.4+deb13-amd64"  # the newest is the default


@pytest.mark.parametrize("spec,release", [
    ("6.1", "6.1.0-56-amd64"), ("6.12", "6.12.117+deb12-amd64"), ("7.3", "7.3.4+deb13-amd64"),
    ("7", "7.3.4+deb13-amd64"), ("6", "6.12.117+deb12-amd64"), ("6.1.0-56-amd64", "6.1.0-56-amd64"),
    ("7.3.4", "7.3.4+deb13-amd64"),
])
def test_find_kernel_by_version(tmp_path, spec, release):
    install(tmp_path, "6.1.0-56-amd64")
    install(tmp_path, "6.12.117+deb12-amd64")
    install(tmp_path, "7.3.4+deb13-amd64", image="lib")
    assert vmkernel.find_kernel(tmp_path, spec=spec).version == release


def test_find_kernel_by_version_names_the_installed_ones_when_none_matches(tmp_path):
    install(tmp_path, "6.1.0-56-amd64")
    install(tmp_path, "6.12.117+deb12-amd64", modules=("bonding",))
    with pytest.raises(VMError, match=r"no installed kernel matches --kernel '7.3' \(installed: "
                                      r"6.12.117\+deb12-amd64, 6.1.0-56-amd64\).*tools/setup installs"):
        vmkernel.find_kernel(tmp_path, spec="7.3")
    with pytest.raises(VMError, match="6.12.117.*lacks cls_flower, act_mirred"):
        vmkernel.find_kernel(tmp_path, spec="6.12")
    assert VMError.exit_code == 9


def test_resolve_kernel_takes_a_path_or_a_version(tmp_path, monkeypatch):
    image = install(tmp_path, "7.3.4+deb13-amd64", image="lib")
    assert vm.resolve_kernel(str(image)).path == str(image)
    monkeypatch.setattr(vm, "find_kernel", lambda spec=None: vm.Kernel("/k", spec or "default"))
    assert vm.resolve_kernel("7.3").version == "7.3"
    assert vm.resolve_kernel(None).version == "default"
    with pytest.raises(VMError, match="kernel /nonexistent/vmlinuz is missing"):
        vm.resolve_kernel("/nonexistent/vmlinuz")


def test_describe_and_render_kernels(tmp_path):
    install(tmp_path, "6.1.0-56-amd64", options=("mode", "miimon"))
    install(tmp_path, "7.3.4+deb13-amd64", image="lib", options=("mode", "miimon", "lacp_strict"),
            modules=("bonding", "cls_flower", "act_mirred", "rdma_rxe"), suffix=".xz")
    install(tmp_path, "7.4.0-broken", modules=("bonding",))
    rows = vmkernel.describe_kernels(tmp_path)
    assert [(r["release"], r["lab"], r["default"]) for r in rows] == [
        ("7.4.0-broken", False, False), ("7.3.4+deb13-amd64", True, True), ("6.1.0-56-amd64", True, False)]
    assert rows[1]["features"]["rxe_netns"] and not rows[2]["features"]["rxe_netns"]
    assert rows[1]["bond_options"] == ["lacp_strict", "miimon", "mode"]
    text = "\n".join(vm_command.render_kernels(rows[1:]))
    assert "7.3.4+deb13-amd64 *" in text and "3 (+lacp_strict)" in text
    assert "-- " not in text
    broken = "\n".join(vm_command.render_kernels(rows))
    assert "lacks cls_flower, act_mirred" in broken
    assert "tools/setup installs" in vm_command.render_kernels([])[0]


def test_list_kernels_refuses_a_command_and_json_needs_it():
    def parse(argv):
        parser = argparse.ArgumentParser()
        vm_command.register(parser.add_subparsers())
        return parser.parse_args(["vm", *argv])

    from testbed.errors import UsageError

    with pytest.raises(UsageError, match="--list-kernels takes no command"):
        vm_command.handle(parse(["--list-kernels", "--", "true"]))
    with pytest.raises(UsageError, match="--json goes with --list-kernels"):
        vm_command.handle(parse(["--json", "--", "true"]))


# ---- the lane's tools when PATH lacks the .venv (sudo's PATH) ------------------------------


def fake_venv(tmp_path: Path, monkeypatch) -> Path:
    """A .venv/bin with python, vng and virtme-run; vng runs virtme-run by name through
    /bin/sh as the real vng does, and virtme-run exits 7.  qemu and busybox are stand-ins
    in tmp_path/sys, which the tests put on PATH."""
    bindir = tmp_path / "venv" / "bin"
    sysbin = tmp_path / "sys"
    scripts = {bindir / "vng": '#!/bin/sh\nexec /bin/sh -c "virtme-run $*"\n',
               bindir / "virtme-run": "#!/bin/sh\nexit 7\n",
               sysbin / "qemu-system-x86_64": "#!/bin/sh\n", sysbin / "busybox": "#!/bin/sh\n"}
    for path, text in scripts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bindir / "python3"))
    return bindir


def test_lane_finds_vng_and_virtme_run_beside_its_python_with_a_bare_path(tmp_path, monkeypatch):
    bindir = fake_venv(tmp_path, monkeypatch)
    monkeypatch.setenv("PATH", f"{tmp_path / 'sys'}:/usr/bin:/bin")  # as under sudo: no .venv/bin
    tools = vm.find_tools()
    assert tools.vng == str(bindir / "vng")
    env = vm.vng_environment(tools.vng, os.environ, str(tmp_path))
    assert env["PATH"].split(":")[:2] == [str(bindir), str(tmp_path / "sys")]
    # the real failure of issue 13: vng's "/bin/sh: virtme-run: not found", exit 127
    assert vm._run_guest([tools.vng, "--run=x"], 30, 30, str(tmp_path)) == 7


def test_lane_prefers_the_vng_beside_its_python_over_one_on_path(tmp_path, monkeypatch):
    bindir = fake_venv(tmp_path, monkeypatch)
    other = tmp_path / "other"
    other.mkdir()
    (other / "vng").write_text("#!/bin/sh\n")
    (other / "vng").chmod(0o755)
    monkeypatch.setenv("PATH", f"{other}:{tmp_path / 'sys'}:/usr/bin:/bin")
    assert vm.find_tools().vng == str(bindir / "vng")


def test_lane_without_virtme_run_is_a_lane_failure_with_the_fix(tmp_path, monkeypatch):
    bindir = fake_venv(tmp_path, monkeypatch)
    (bindir / "virtme-run").unlink()
    monkeypatch.setenv("PATH", f"{tmp_path / 'sys'}:/usr/bin:/bin")
    with pytest.raises(VMError, match="virtme-run not found beside .*vng.*pip install virtme-ng") as err:
        vm.find_tools()
    assert err.value.exit_code == 9
