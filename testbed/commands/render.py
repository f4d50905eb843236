"""Human-readable rendering of ``testbed status`` data."""

from __future__ import annotations

from typing import Any, Dict, List


def port_line(p: Dict[str, Any], active: Any) -> str:
    """``  * pf0    carrier=up   bond=active  mii=up`` (``*``: the bond's active port)."""
    if not p.get("present"):
        return f"    {p['name']:6} MISSING"
    flag = "*" if p["name"] == active else " "
    line = (f"  {flag} {p['name']:6} carrier={'up' if p.get('carrier') else 'DOWN':4} "
            f"bond={p.get('bond_state') or '-':7} mii={p.get('mii_status') or '-'}")
    if "lacp_actor" in p:
        line += (f" agg={p.get('aggregator') if p.get('aggregator') is not None else '-'}"
                 f" actor={','.join(p['lacp_actor']) or '-'} partner={','.join(p['lacp_partner']) or '-'}")
    line += "".join(f" {k}={v}" for k, v in (p.get("options") or {}).items())
    return line


def render_status(data: Dict[str, Any]) -> str:
    out: List[str] = [f"lab {data['lab']} ({data['state']}) from {data['file']}"]
    agent = data.get("agent") or {}
    tables = agent.get("nics", {}) if isinstance(agent, dict) else {}
    for h in data["hosts"]:
        if "bond" not in h:
            i = h["interface"]
            addrs = " ".join(i.get("addresses", []))
            out.append(f"host {h['name']} [{h['netns']}]: {i['name']} {i.get('mac')} {addrs}")
            continue
        b = h["bond"]
        out.append(f"host {h['name']} [{h['netns']}]: {b['name']} {b.get('mode')} {b['address']} "
                   + (f"{b['address6']} " if b.get("address6") else "")
                   + f"active={b.get('active_port') or '-'} offload={h['offload']['mode']}"
                   + {True: " (agent in step)", False: " (agent NOT in step with the bond)"}.get(
                       h.get("offload_in_step"), "")
                   + (f" aggregator={b.get('ad_aggregator') if b.get('ad_aggregator') is not None else '-'}"
                      if "ad_aggregator" in b else ""))
        out += [port_line(p, b.get("active_port")) for p in b["ports"]]
        for f in h["vfs"] + ([h["rdma"]] if h.get("rdma") else []):
            out.append(f"    {f['kind']:4} {f['name']:6} [{f['netns']}] {f.get('mac')} "
                       f"{' '.join(f.get('addresses', []))} rep={f['representor']}")
        table = tables.get(h["name"]) if isinstance(tables, dict) else None
        if table and table.get("mapping"):
            out.append("    mapping (bucket -> port): " + " ".join(f"{i}:{p}" for i, p in
                                                                    enumerate(table["mapping"])))
        switches = agent.get("switches", {}) if isinstance(agent, dict) else {}
        for bond, part in ((switches.get(h["name"]) or {}).get("partners") or {}).items():
            out.append(f"    switch {bond} (resilient) bucket -> port: "
                       + " ".join(f"{i}:{p or '-'}" for i, p in enumerate(part.get("table") or [])))
        if h.get("rules"):
            out.append("    rules:")
            for r in h["rules"]:
                out.append(f"      {r['where']:17} prio {r['prio']:<5} handle {r['handle']:<5} "
                           f"{r['packets']:>8} pkts  {r['label']}")
    for v in data.get("verbs") or []:
        if not v.get("present"):
            out.append(f"verbs {v['name']} ({v['owner']}): MISSING")
            continue
        out.append(f"verbs {v['name']} ({v['owner']}) on {v['netns']}:{v.get('netdev') or v['expected_netdev']} "
                   f"port {v['port']} {v['port_state']} RoCEv2 GID[{v.get('roce_v2_gid_index')}] "
                   f"{v.get('roce_v2_gid') or '-'}")
    reactions = agent.get("reactions", []) if isinstance(agent, dict) else []
    if reactions:
        out.append("agent: last reactions")
        for r in reactions[-5:]:
            out.append(f"  {r.get('time', '')} {r.get('text', r)}" if isinstance(r, dict) else f"  {r}")
    return "\n".join(out)
