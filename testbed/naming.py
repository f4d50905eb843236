"""Names and MACs every lab object gets, derived from the topology alone (pure).

Namespaces carry the lab prefix (``<lab>-<host>``) so two labs coexist and
``ip netns`` shows whose they are. Interfaces live inside the lab's own
namespaces, so their names carry no prefix and can never clash with the
host's; they are still held to the kernel's 15-character limit (IFNAMSIZ-1).
"""

from __future__ import annotations

import hashlib

IFNAMSIZ_MAX = 15
MARK_PREFIX = "testbed:"  # ifalias of every interface (and of lo in every namespace) a lab creates
SWITCH = "switch"  # the switch namespace suffix; reserved as a host name
BRIDGE = "br0"
BOND = "bond0"
HOST_IF = "eth0"  # a plain host's interface
# shared tc filter blocks of a NIC host's eswitch (block indexes are per network namespace)
BLOCK_REPS = 1  # every representor's clsact ingress is bound to it
BLOCK_PORTS = 2  # every port's clsact ingress is bound to it
ESWITCH_BLOCKS = (BLOCK_REPS, BLOCK_PORTS)


def mark(lab: str) -> str:
    return f"{MARK_PREFIX}{lab}"


def host_netns(lab: str, host: str) -> str:
    return f"{lab}-{host}"


def switch_netns(lab: str) -> str:
    return f"{lab}-{SWITCH}"


def vf_netns(lab: str, host: str, vf: str) -> str:
    return f"{lab}-{host}-{vf}"


def port_name(index: int) -> str:
    return f"pf{index}"


def representor(fn: str) -> str:
    return f"{fn}-rep"


def switch_port(host: str, ifname: str) -> str:
    """The switch-side end of a host's wire: ``server-pf0``, ``client-eth0``."""
    return f"{host}-{ifname}"


def partner_bond(host: str, index: int = 0) -> str:
    """The switch-side partner bond of a balance-xor / 802.3ad NIC: ``server-lag``; with two partner
    switches (``nic.partners: 2``) the second is ``server-lag1``."""
    return f"{host}-lag" + (str(index) if index else "")


RDMA_PREFIX = "tb_"  # RDMA device names are system-wide: tb_<lab>_<host>_<netdev> (lab/host names have no "_")


def rdma_device(lab: str, host: str, netdev: str) -> str:
    """The Soft-RoCE device a lab makes on ``netdev`` of ``host``."""
    return f"{RDMA_PREFIX}{lab}_{host}_{netdev}"


def rdma_lab(device: str) -> str | None:
    """The lab a device name says it belongs to, or None if it is not a testbed device."""
    if not device.startswith(RDMA_PREFIX):
        return None
    lab = device[len(RDMA_PREFIX):].split("_", 1)
    return lab[0] if len(lab) == 2 and lab[0] else None


def stable_mac(lab: str, *parts: str) -> str:
    """A locally administered unicast MAC that depends only on its owner's names."""
    digest = hashlib.sha256("/".join((lab,) + parts).encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])
