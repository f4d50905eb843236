"""What a verification reads from a running lab: which ports the bond, its switch-side partner and the agent use.

- ``bond_usable``: the ports the NIC's bond transmits on now, by the agent's
  own rule (``testbed.bond.ports.usable_ports`` over the bond's netlink
  state) -- active-backup: the active port; balance-xor: MII up; 802.3ad:
  collecting+distributing in the active aggregator.
- ``bond_receiving``: the ports the bond takes frames from
  (``receiving_ports``) -- where the NIC's RX rules deliver, not drop.
- ``partner_usable``: the same for the switch-side partner bond
  ``<host>-lag`` (balance-xor / 802.3ad labs), which decides the port of
  every frame *to* the NIC; reported as the NIC's port names.
- ``agent_view``: the agent's typed status for the host (usable, mapping,
  reactions) -- ``None`` without an agent.
- ``wait_settled``: until bond, partner, agent (and a resilient switch's tables) all use exactly the
  expected ports (a deadline; says which of them did not).
- ``reactions_since``: the agent's reactions finished after a moment.

Public API:
    LabView(lab)                                      -- lab: testbed.lab.Lab
    .bond_usable(host) -> tuple[str, ...]
    .bond_receiving(host) -> tuple[str, ...]
    .port_carrier(host, port) -> bool
    .partner(host) -> (switch netns, bond name, policy name) | None   (the first partner bond's)
    .partner_nics(host) -> tuple[Nic, ...]                  the switch's partner bonds (``topology.partner_nics``)
    .partner_usable(host) -> tuple[str, ...] | None       with two partners: the one facing the NIC's aggregator
    .switch_table_usable(host) -> tuple[str, ...] | None   ports a resilient switch's tables point at
    .agent_view(host) -> agent.status.NicStatus | None
    .wait_settled(host, usable, timeout=30.0) -> None          WaitTimeout naming what lagged
    .reactions_since(host, t_ns) -> list[dict]
    .set_xmit_hash_policy(host, policy) -> str                  returns the previous policy
    .updelay(host) -> int                                       the bond's updelay (ms), from the kernel
    .set_updelay(host, ms) -> int                               returns the previous updelay (ms)
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from testbed import naming
from testbed.agent import status as agent_status
from testbed.bond import options
from testbed.errors import UsageError, WaitTimeout
from testbed.nl import open_ns, wait_until
from testbed.topology import Host, Nic, partner_nics


class LabView:
    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.topo = lab.topo

    def _nic(self, host: Host) -> Nic:
        if host.nic is None:
            raise UsageError(f"lab {self.topo.name}: host {host.name} has no NIC")
        return host.nic

    def partner_nics(self, host: Host) -> Tuple[Nic, ...]:
        """The switch-side partner bonds (``topology.partner_nics``); UsageError for a host without a NIC."""
        self._nic(host)
        return partner_nics(host)

    def bond_usable(self, host: Host) -> Tuple[str, ...]:
        from testbed.bond.ports import usable_ports

        return self._bond_ports(host, usable_ports)

    def bond_receiving(self, host: Host) -> Tuple[str, ...]:
        """The ports the bond takes frames from now -- the ports the NIC's RX rules deliver on."""
        from testbed.bond.ports import receiving_ports

        return self._bond_ports(host, receiving_ports)

    def _bond_ports(self, host: Host, which: Any) -> Tuple[str, ...]:
        from testbed.bond.state import read_state

        nic = self._nic(host)
        with open_ns(host.netns) as ipr:
            return tuple(which(nic, read_state(ipr, nic, host.netns)))

    def port_carrier(self, host: Host, port: str) -> bool:
        from testbed.bond.state import read_state

        nic = self._nic(host)
        with open_ns(host.netns) as ipr:
            return read_state(ipr, nic, host.netns).port(port).carrier

    def partner(self, host: Host) -> Optional[Tuple[str, str, str]]:
        """The first partner bond's (switch netns, name, transmit hash policy); None without one."""
        pns = self.partner_nics(host)
        if not pns:
            return None
        pn = pns[0]
        ns = self.topo.switch_netns
        with open_ns(ns) as ipr:
            policy = options.get(ipr, pn.bond.name, "xmit_hash_policy", ns)
        return ns, pn.bond.name, str(policy or "layer2")

    def partner_usable(self, host: Host) -> Optional[Tuple[str, ...]]:
        from testbed.bond.ports import usable_ports
        from testbed.bond.state import read_state

        pns = self.partner_nics(host)
        if not pns:
            return None
        back = {naming.switch_port(host.name, p): p for p in self._nic(host).ports}
        with open_ns(self.topo.switch_netns) as ipr:
            each = [tuple(back[p] for p in usable_ports(pn, read_state(ipr, pn, self.topo.switch_netns)))
                    for pn in pns]
        if len(each) == 1:
            return each[0]
        # Two partner switches: the one facing the NIC's selected aggregator. Linux bonding leaves the ports
        # of an aggregator it stops using in sync (it only disables them), so the other switch may keep
        # distributing on its link, and the NIC drops what arrives there (seen on 7.3: a partner still
        # using pf1 for minutes after the NIC reselected pf2 + pf3).
        nic_uses = set(self.bond_usable(host))
        facing = [u for u in each if nic_uses & set(u)] or each
        return tuple(p for u in facing for p in u)

    def switch_table_usable(self, host: Host) -> Optional[Tuple[str, ...]]:
        """The NIC ports the switch's resilient tables point at (``agent.json`` ``switches``, sorted); None
        when the switch selects by its bond's own hash or the lab has no agent."""
        nic = self._nic(host)
        if not nic.resilient_switch or not self.lab.agent:
            return None
        st = agent_status.read(self.topo.name)
        entry = ((st.raw.get("switches") or {}).get(host.name) or {}) if st is not None else {}
        back = {naming.switch_port(host.name, p): p for p in nic.ports}
        partners = entry.get("partners") or {}
        return tuple(sorted({back[p] for part in partners.values() for p in part.get("table") or () if p in back}))

    def agent_view(self, host: Host) -> Optional[agent_status.NicStatus]:
        if not self.lab.agent:
            return None
        return agent_status.nic(self.topo.name, host.name)

    def wait_settled(self, host: Host, usable: Sequence[str], timeout: float = 30.0, interval: float = 0.05) -> None:
        """Until the bond, the switch's partner bond and the agent (those the lab has) all use ``usable``
        (every verification waits so; ``agent.status.wait_nic`` waits on the agent alone)."""
        want = tuple(sorted(usable))
        seen: Dict[str, Any] = {}

        def settled() -> bool:
            seen["bond"] = tuple(sorted(self.bond_usable(host)))
            partner = self.partner_usable(host)
            seen["partner"] = None if partner is None else tuple(sorted(partner))
            agent = self.agent_view(host)
            seen["agent"] = None if agent is None else tuple(sorted(agent.usable))
            seen["switch table"] = self.switch_table_usable(host)
            return all(v is None or v == want for v in seen.values())

        what = f"{host.name}: bond, switch partner and agent to use {list(want)}"
        try:
            wait_until(settled, timeout, what, interval=interval)
        except WaitTimeout:
            lagging = "; ".join(f"{k} uses {list(v)}" for k, v in seen.items() if v is not None and v != want)
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what} ({lagging})",
                              fix="see `testbed status` and the agent log") from None

    def reactions_since(self, host: Host, t_ns: int) -> List[Dict[str, Any]]:
        """The agent's reactions for ``host`` that finished at or after epoch ``t_ns``."""
        return [{"trigger": r.trigger, "usable": list(r.usable), "latency_ms": r.latency_ms, "done_ns": r.done_ns,
                 "done_after_event_ms": round((r.done_ns - t_ns) / 1e6, 1), "error": r.error}
                for r in agent_status.nic(self.topo.name, host.name).reactions_since(t_ns)]

    def set_xmit_hash_policy(self, host: Host, policy: str) -> str:
        nic = self._nic(host)
        with open_ns(host.netns) as ipr:
            return str(options.change(ipr, nic.bond.name, "xmit_hash_policy", policy, host.netns) or "layer2")

    def updelay(self, host: Host) -> int:
        nic = self._nic(host)
        with open_ns(host.netns) as ipr:
            return int(options.get(ipr, nic.bond.name, "updelay", host.netns) or 0)

    def set_updelay(self, host: Host, ms: int) -> int:
        """The bond's updelay (a multiple of miimon, as the kernel wants it); returns the previous one."""
        nic = self._nic(host)
        if ms < 0 or (nic.bond.miimon and ms % nic.bond.miimon):
            raise UsageError(f"updelay {ms} ms", fix=f"a multiple of miimon ({nic.bond.miimon} ms)")
        with open_ns(host.netns) as ipr:
            return int(options.change(ipr, nic.bond.name, "updelay", ms, host.netns) or 0)
