"""What every verification run needs of the lab: the topology, its ``LabView``, progress, and small shared steps.

Public API:
    RunContext(lab, progress=None)             .topo, .view, .progress
      .record(result) -> result                appends result.to_dict() to lab.results
      .fail_port(spec) -> (Host, port)         "server:pf0", or "server:active": the bond's active port
      .wires(host) -> (switch netns, {switch port: host port})
      .steady(host) -> usable ports            once bond, partner and agent agree on them
    directions(spec) -> tuple                  "rx", "tx", "both" or a sequence of them
    stream_ids(n) -> list[int]                 random, distinct per run
    flow_templates(src, dst, n, proto, stream_id, sport_base) -> templates (scapy, built on demand)
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from testbed.errors import UsageError
from testbed.progress import Progress, quiet
from testbed.topology import Host
from testbed.verify import stations
from testbed.verify.labview import LabView
from traffic.streams import Station

DPORT = 5201
DIRECTIONS = ("rx", "tx")
# bond, partner and agent agreeing after a change: LACP times out in 3 s, but re-aggregating a port after
# LACPDUs return took over 30 s in a loaded TCG guest (TestLacp, on 6.1 and 6.12); the test itself allows 60
SETTLE_TIMEOUT_S = 60.0


def stream_ids(n: int) -> List[int]:
    base = random.SystemRandom().randrange(1 << 20, 1 << 31)
    return [base + i for i in range(n)]


def flow_templates(src: Station, dst: Station, n: int, proto: str, stream_id: int, sport_base: int) -> List[Any]:
    from traffic.packets import build_templates, flows  # scapy: imported only when traffic is built

    fl = flows(n, src.ip, dst.ip, proto=proto, vary="sport", sport_base=sport_base, dport=DPORT,
               src_mac=src.mac, dst_mac=dst.mac)
    return build_templates(fl, stream_id)


def directions(spec: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    if isinstance(spec, str):
        spec = DIRECTIONS if spec == "both" else (spec,)
    bad = [d for d in spec if d not in DIRECTIONS]
    if bad or not spec:
        raise UsageError(f"direction {bad or spec!r}", fix="rx (client -> target), tx (target -> client) or both")
    return tuple(dict.fromkeys(spec))


class RunContext:
    def __init__(self, lab: Any, progress: Optional[Progress] = None) -> None:
        self.lab = lab
        self.topo = lab.topo
        self.view = LabView(lab)
        self.progress: Progress = progress or quiet

    def record(self, result: Any) -> Any:
        self.lab.results.append(result.to_dict())
        return result

    def fail_port(self, spec: str) -> Tuple[Host, str]:
        hname, _, port = spec.partition(":")
        if port == "active":
            host = stations.resolve_target(self.topo, f"{hname}:bond").host
            usable = self.view.bond_usable(host)
            if not usable:
                raise UsageError(f"lab {self.topo.name}: {spec}: {hname}'s bond has no active port")
            return host, usable[0]
        return stations.port_endpoint(self.topo, spec)

    def wires(self, host: Host) -> Tuple[str, Dict[str, str]]:
        return self.topo.switch_netns, stations.wires(self.topo, host)

    def steady(self, host: Host) -> Tuple[str, ...]:
        """Wait until bond, partner and agent agree on the ports in use; return them."""
        usable = self.view.bond_usable(host)
        self.view.wait_settled(host, usable, SETTLE_TIMEOUT_S)
        return usable
