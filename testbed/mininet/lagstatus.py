"""``lagstatus [HOST]``: each NIC's bond as the kernel reports it and the agent's mapping table, compact.

``collect`` reads (``status.host_status`` + ``agent.json``); ``render`` is pure::

    server [ab-server]: bond0 active-backup 198.18.0.1/24 active=pf1
      * pf1    carrier=up   bond=active  mii=up
        pf0    carrier=DOWN bond=backup  mii=down
      agent: offload uses pf1; table (entry:port) 0:pf1
      agent: last reaction 12:00:01.234 server: event (pf0,bond0): usable pf1; ... 3.2 ms
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from testbed import status
from testbed.agent import status as agent_status
from testbed.agent.status import AgentStatus
from testbed.commands.render import port_line
from testbed.errors import UsageError
from testbed.topology import Topology


def collect(topo: Topology, host: Optional[str] = None) -> Dict[str, Any]:
    nic_hosts = [h for h in topo.hosts if h.nic]
    if host is not None:
        names = [h.name for h in nic_hosts]
        if host not in names:
            raise UsageError(f"lab {topo.name}: {host!r} is not a host with a NIC; NIC hosts: {', '.join(names)}")
        nic_hosts = [h for h in nic_hosts if h.name == host]
    return {"lab": topo.name, "hosts": [status.host_status(topo, h) for h in nic_hosts],
            "agent": agent_status.read_raw(topo.name)}


def ranges(mapping: Sequence[Optional[str]]) -> str:
    """``[pf0, pf0, pf1, None]`` -> ``0-1:pf0 2:pf1 3:drop`` (runs of equal entries)."""
    out: List[str] = []
    i = 0
    while i < len(mapping):
        j = i
        while j + 1 < len(mapping) and mapping[j + 1] == mapping[i]:
            j += 1
        port = mapping[i] or "drop"
        out.append(f"{i}:{port}" if i == j else f"{i}-{j}:{port}")
        i = j + 1
    return " ".join(out)


def render(data: Dict[str, Any], rules: bool = False) -> str:
    agent = AgentStatus.from_dict(data["lab"], data["agent"]) if data.get("agent") else None
    out: List[str] = []
    for h in data["hosts"]:
        b = h["bond"]
        head = f"{h['name']} [{h['netns']}]: {b['name']}"
        if not b.get("present"):
            out.append(head + " missing")
            continue
        head += f" {b.get('mode')} {b.get('address')}"
        if b.get("mode") == "active-backup":
            head += f" active={b.get('active_port') or '-'}"
        out.append(head + f" offload={h['offload']['mode']}")
        ports = sorted(b["ports"], key=lambda p: p["name"] != b.get("active_port"))
        out += [port_line(p, b.get("active_port")) for p in ports]
        entry = agent.nics.get(h["name"]) if agent else None
        if agent is None:
            out.append("  agent: not running (no agent.json)")
        elif entry is None or "usable" not in entry.raw:
            out.append("  agent: no table for this NIC yet")
        else:
            usable = ",".join(entry.usable) or "no port (rules drop)"
            if not agent.running:
                usable += f"  [agent stopped{': ' + agent.error if agent.error else ''}]"
            out.append(f"  agent: offload uses {usable}; table (entry:port) {ranges(entry.mapping)}")
            for r in entry.reactions[-1:]:
                out.append(f"  agent: last reaction {r.time} {r.text}")
        fns = h.get("vfs", []) + ([h["rdma"]] if h.get("rdma") else [])
        for f in fns:
            out.append(f"    {f['kind']:4} {f['name']:6} [{f['netns']}] {' '.join(f.get('addresses', []))} "
                       f"rep={f['representor']}")
        if rules:
            for r in h.get("rules", []):
                out.append(f"    {r['where']:17} prio {r['prio']:<4} {r['packets']:>8} pkts  "
                           f"{r['label']}")
    return "\n".join(out)
