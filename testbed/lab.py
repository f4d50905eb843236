"""A handle on a running lab for Python callers (the pytest plugin, scripts, Mininet front end).

    lab = Lab.up("topologies/active-backup.yaml", name="t1")
    lab.fail("server:pf0"); lab.wait_active("server", "pf1"); lab.restore("server:pf0")
    lab.traffic.failover(target="server:vf0", fail="server:pf0")
    lab.down()
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from testbed import bringup, loader, status, teardown, wire
from testbed.agent import status as agent_status
from testbed.errors import UsageError
from testbed.nl import wait_until
from testbed.progress import Progress, quiet
from testbed.topology import Host, Topology, split_endpoint


class Lab:
    def __init__(self, topo: Topology, *, agent: bool) -> None:
        self.topo = topo
        self.name = topo.name
        self.agent = agent
        self.results: List[Dict[str, Any]] = []  # verification results, for reports (JUnit properties)
        self._traffic: Any = None

    @classmethod
    def up(cls, path: str, *, name: Optional[str] = None, agent: bool = True,
           progress: Progress = quiet, agent_timeout: float = bringup.AGENT_TIMEOUT) -> Lab:
        topo = loader.load(path, lab_name=name)
        bringup.up(topo, agent=agent, agent_timeout=agent_timeout, progress=progress)
        return cls(topo, agent=agent)

    def down(self) -> List[str]:
        return teardown.down(self.name)

    # -- looking -------------------------------------------------------------
    def host(self, name: str) -> Host:
        try:
            return self.topo.host(name)
        except KeyError:
            raise UsageError(f"lab {self.name}: no host {name!r}") from None

    def status(self) -> Dict[str, Any]:
        return status.lab_status(self.name)

    def host_status(self, name: str) -> Dict[str, Any]:
        return status.host_status(self.topo, self.host(name))

    def active_port(self, host: str) -> Optional[str]:
        return self.host_status(host)["bond"].get("active_port")

    def agent_nic(self, host: str) -> Dict[str, Any]:
        """The agent's ``agent.json`` entry for ``host`` as written ({} without one); typed: ``agent_status``."""
        return dict(agent_status.nic(self.name, host).raw)

    def agent_status(self, host: str) -> agent_status.NicStatus:
        """What the agent programs for ``host`` now (typed; empty without an agent)."""
        return agent_status.nic(self.name, host)

    # -- acting --------------------------------------------------------------
    def fail(self, endpoint: str) -> None:
        host, port = split_endpoint(endpoint)
        wire.set_wire(self.name, host, port, up=False)

    def restore(self, endpoint: str) -> None:
        host, port = split_endpoint(endpoint)
        wire.set_wire(self.name, host, port, up=True)

    def wait_active(self, host: str, port: str, timeout: float = 15.0) -> None:
        wait_until(lambda: self.active_port(host) == port, timeout, f"{host}: bond0 active port {port}")

    def wait_offload(self, host: str, usable: List[str], timeout: float = 15.0) -> None:
        """Until the agent reports exactly ``usable`` as the ports carrying offloaded traffic."""
        agent_status.wait_nic(self.name, host, lambda n: sorted(n.usable) == sorted(usable), timeout,
                              f"{host}: the agent to use {usable}")

    @property
    def traffic(self) -> Any:
        if self._traffic is None:
            from testbed.verify import LabTraffic

            self._traffic = LabTraffic(self)
        return self._traffic
