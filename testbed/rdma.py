"""Soft-RoCE (rdma_rxe) devices of a lab: create, read back, count, remove.

A topology asks for one with ``verbs: true`` on the RDMA function (``nic.rdma``), on a VF
(``nic.vfs[i]``) or on a plain host (its ``eth0``); ``Topology.verbs_devices`` lists them.
``up`` runs ``rdma link add NAME type rxe netdev IF`` inside the netdev's namespace (an argv
list; rxe binds its UDP 4791 socket in that namespace, which works from Linux 7.1), then waits
until the port is ACTIVE and carries the netdev's RoCEv2 IPv4-mapped GID.

RDMA device names are system-wide, so a lab's carry its name: ``tb_<lab>_<host>_<netdev>``
(``naming.rdma_device``; lab and host names have no ``_``). Deleting the netdev removes its
rxe device, so deleting the lab's namespaces removes them -- asynchronously: ``remove(lab)``
waits until none of the lab's is left and deletes any that stays (and ``clean`` does the same
for devices of labs without a record). Nothing else is ever touched.

Reading: sysfs ``/sys/class/infiniband/<dev>`` (the RDMA subsystem's default ``shared``
namespace mode shows every device in every namespace); counters with
``rdma -j statistic show link DEV/1`` (``parse_statistic``).
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any, Callable, Dict, List, Optional

from testbed import naming
from testbed.errors import BuildError, CapabilityError, WaitTimeout
from testbed.nl import wait_until
from testbed.topology import Topology, VerbsDevice

SYSFS = "/sys/class/infiniband"
IPV4_MAPPED = "0000:0000:0000:0000:0000:ffff:"
TOOL_TIMEOUT_S = 60.0  # one `rdma` call in a loaded TCG guest
READY_TIMEOUT_S = 30.0
GONE_TIMEOUT_S = 30.0
# rxe's hardware counters (rdma statistic) that say how the transport coped, with what they mean
COUNTERS = {
    "sent_pkts": "packets sent", "rcvd_pkts": "packets received",
    "retry_exceeded_err": "retry budget exhausted", "retry_rnr_exceeded_err": "RNR retry budget exhausted",
    "completer_retry_err": "retransmissions (requester timeouts / NAKs)",
    "out_of_seq_request": "out-of-sequence requests", "duplicate_request": "duplicate requests",
    "rcvd_seq_err": "sequence-error NAKs received", "rcvd_rnr_err": "RNR NAKs received",
    "send_rnr_err": "RNR NAKs sent", "ack_deferred": "ACKs deferred", "send_err": "send errors",
    "link_downed": "link down events",
}

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def require(topo: Topology) -> None:
    """Refuse, before anything touches the kernel, a topology with verbs devices on a kernel without rxe
    in a namespace."""
    from testbed import kfeatures  # (reads the kernel's config and BTF: only where a lab is built)

    devs = topo.verbs_devices
    if not devs or kfeatures.has("rxe_netns"):
        return
    where = ", ".join(d.owner for d in devs)
    why = "binds rxe in the initial namespace only" if kfeatures.has("rxe") else "has no rdma_rxe"
    raise CapabilityError(
        f"{topo.file}: Soft-RoCE devices ({where}) need {kfeatures.FEATURES['rxe_netns']}; this kernel "
        f"({kfeatures.running_release()}) {why}",
        fix=f"run it on {kfeatures.needed_kernel('rxe_netns')}, or use a topology without 'verbs: true'")


def with_verbs(topo: Topology) -> Topology:
    """The same lab with Soft-RoCE on its first NIC host's RDMA function and its first plain host (the demo's
    real RDMA workload); unchanged when it has neither or already has them. Rebuilt from the raw topology, so
    the lab record (which keeps the raw form) says the same."""
    import copy

    from testbed.loader import build_model

    nic_host = next((h for h in topo.hosts if h.nic and h.nic.rdma), None)
    plain = next((h for h in topo.hosts if not h.nic), None)
    if nic_host is None or plain is None:
        return topo
    raw = copy.deepcopy(topo.raw)
    hosts = raw["hosts"]
    rd = hosts[nic_host.name]["nic"].get("rdma")
    hosts[nic_host.name]["nic"]["rdma"] = {**(rd if isinstance(rd, dict) else {}), "verbs": True}
    hosts[plain.name]["verbs"] = True
    return build_model(raw, topo.file, lab_name=topo.name)


def _tool() -> str:
    import shutil

    tool = shutil.which("rdma") or "/sbin/rdma"
    if not os.path.exists(tool):
        raise CapabilityError("the `rdma` tool (iproute2) is missing", fix="apt-get install iproute2")
    return tool


def _run(argv: List[str], what: str) -> str:
    import subprocess  # the rdma tool's paths only: `status` reads sysfs

    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise WaitTimeout(f"{what}: `{argv[0]}` did not answer in {TOOL_TIMEOUT_S:g} s",
                          fix="the machine is overloaded; retry") from None
    if res.returncode != 0:
        raise BuildError(f"{what}: {(res.stderr or res.stdout).strip() or f'exit status {res.returncode}'}")
    return res.stdout


def load_module() -> None:
    import shutil
    import subprocess

    from testbed import kfeatures

    modprobe = shutil.which("modprobe") or "/sbin/modprobe"
    res = subprocess.run([modprobe, "rdma_rxe"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise CapabilityError(f"modprobe rdma_rxe failed: {res.stderr.strip()}",
                              fix=f"use a kernel with Soft-RoCE: {kfeatures.needed_kernel('rxe_netns')}")


# -- reading ----------------------------------------------------------------------------------------

def devices() -> List[str]:
    try:
        return sorted(os.listdir(SYSFS))
    except OSError:
        return []


def lab_devices(lab: str) -> List[str]:
    return [d for d in devices() if naming.rdma_lab(d) == lab]


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def roce_v2_gid(address: ipaddress.IPv4Address) -> str:
    """The RoCEv2 GID of an IPv4 address as sysfs writes it (IPv4-mapped IPv6, eight groups)."""
    return ipaddress.IPv6Address(f"::ffff:{address}").exploded


def read_device(name: str) -> Dict[str, Any]:
    """name, netdev, port state, GIDs (index, gid, type) of port 1; ``present: False`` when it is gone."""
    port = os.path.join(SYSFS, name, "ports", "1")
    if not os.path.isdir(port):
        return {"name": name, "present": False}
    state = _read(os.path.join(port, "state")) or ""
    gids = []
    for idx in range(16):
        gid = _read(os.path.join(port, "gids", str(idx)))
        if gid is None:
            break
        if gid.replace("0", "").replace(":", "") == "":
            continue
        gids.append({"index": idx, "gid": gid, "type": _read(os.path.join(port, "gid_attrs", "types", str(idx))),
                     "netdev": _read(os.path.join(port, "gid_attrs", "ndevs", str(idx)))})
    netdev = next((g["netdev"] for g in gids if g["netdev"]), None)
    return {"name": name, "present": True, "port": 1, "port_state": state.split(":")[-1].strip(),
            "netdev": netdev, "gids": gids}


def ipv4_gid(info: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The RoCEv2 IPv4-mapped GID entry of ``read_device``'s result."""
    for g in info.get("gids", []):
        v2 = (g.get("type") or "").lower().replace(" ", "") == "rocev2"
        if v2 and g["gid"].startswith(IPV4_MAPPED):
            return g
    return None


def parse_statistic(text: str) -> Dict[str, Dict[str, int]]:
    """``rdma -j statistic show link ...`` -> {"dev/port": {counter: value}} (numbers only)."""
    try:
        data = json.loads(text or "[]")
    except ValueError:
        return {}
    out: Dict[str, Dict[str, int]] = {}
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, dict) or "ifname" not in entry:
            continue
        key = f"{entry['ifname']}/{entry.get('port', 1)}"
        counters = entry.get("counters") if isinstance(entry.get("counters"), dict) else entry
        out[key] = {k: int(v) for k, v in counters.items() if isinstance(v, int) and not isinstance(v, bool)
                    and k != "port"}
    return out


def counters(name: str) -> Dict[str, int]:
    text = _run([_tool(), "-j", "statistic", "show", "link", f"{name}/1"], f"rdma statistic of {name}")
    return parse_statistic(text).get(f"{name}/1", {})


def counter_delta(before: Dict[str, int], after: Dict[str, int]) -> Dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


# -- creating / removing ----------------------------------------------------------------------------

def create(dev: VerbsDevice, timeout: float = READY_TIMEOUT_S) -> Dict[str, Any]:
    """``rdma link add`` inside the netdev's namespace; wait for an ACTIVE port with the IPv4 GID."""
    if os.path.isdir(os.path.join(SYSFS, dev.name)):
        raise BuildError(f"RDMA device {dev.name} already exists",
                         fix="`testbed clean` removes a leftover of a lab of this name")
    _run(["ip", "netns", "exec", dev.netns, _tool(), "link", "add", dev.name, "type", "rxe", "netdev", dev.netdev],
         f"{dev.netns}: rdma link add {dev.name} type rxe netdev {dev.netdev}")
    want = roce_v2_gid(dev.address.ip) if dev.address else None

    def ready() -> bool:
        info = read_device(dev.name)
        g = ipv4_gid(info)
        return info.get("port_state") == "ACTIVE" and (want is None or (g is not None and g["gid"] == want))

    wait_until(ready, timeout, f"{dev.name} on {dev.netns}:{dev.netdev} to be ACTIVE with its RoCEv2 GID",
               interval=0.05, fix="raise the timeout on a loaded machine; check `rdma link` and `dmesg`")
    return read_device(dev.name)


def create_all(topo: Topology, progress: Progress = _quiet) -> List[str]:
    devs = topo.verbs_devices
    if devs:
        load_module()
    made = []
    for dev in devs:
        progress(f"Soft-RoCE {dev.name} on {dev.netns}:{dev.netdev}")
        create(dev)
        made.append(dev.name)
    return made


def delete(name: str) -> None:
    _run([_tool(), "link", "delete", name], f"rdma link delete {name}")


def remove(lab: Optional[str] = None, *, orphans_of: Optional[Callable[[str], bool]] = None,
           timeout: float = GONE_TIMEOUT_S, progress: Progress = _quiet) -> List[str]:
    """After the lab's namespaces are gone: wait until its rxe devices went with their netdevs, delete any
    that stayed; returns the names deleted here. ``orphans_of(lab) -> True`` selects, instead of one lab,
    every testbed device whose lab it approves (``clean``: labs without a record)."""

    def ours() -> List[str]:
        if orphans_of is not None:
            return [d for d in devices() if naming.rdma_lab(d) and orphans_of(naming.rdma_lab(d) or "")]
        return lab_devices(lab or "")

    if not ours():
        return []
    try:
        wait_until(lambda: not ours(), min(timeout, 10.0), "the lab's rxe devices to go with their netdevs",
                   interval=0.05)
        return []
    except WaitTimeout:
        pass
    deleted = []
    for name in ours():
        progress(f"delete leftover RDMA device {name}")
        try:
            delete(name)
            deleted.append(name)
        except BuildError:
            if os.path.isdir(os.path.join(SYSFS, name)):
                raise
    wait_until(lambda: not ours(), timeout, f"RDMA devices {', '.join(deleted)} to be removed", interval=0.05,
               fix="check `rdma link` and `dmesg`")
    return deleted


def status(topo: Topology) -> List[Dict[str, Any]]:
    """Each verbs device of the lab: what ``read_device`` says, with its owner and namespace."""
    out = []
    for dev in topo.verbs_devices:
        info = read_device(dev.name)
        g = ipv4_gid(info)
        out.append({"owner": dev.owner, "netns": dev.netns, "expected_netdev": dev.netdev, **info,
                    "roce_v2_gid": g["gid"] if g else None, "roce_v2_gid_index": g["index"] if g else None})
    return out
