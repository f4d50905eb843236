"""Readable text for verification results (pure): a table of the figures, the failed checks, the verdict.

Public API:
    render(result, verbose=False) -> str       any result (by its ``kind``); verbose lists every check
    render_failover(result, verbose=False) -> str     (also RdmaResult)
    render_hash(result, verbose=False) -> str
    render_bondhash(result, verbose=False) -> str
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence


def _ms(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = []
    for n, r in enumerate(cells):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _checks(result: Any, verbose: bool) -> List[str]:
    shown = result.checks if verbose else result.failures
    lines = [("checks:" if verbose else "failed checks:")] if shown else []
    lines += [f"  {c.line()}" for c in shown]
    lines.append(f"verdict: {result.verdict} ({sum(c.passed for c in result.checks)}/{len(result.checks)} checks)")
    return lines


def _wires(d: Dict[str, int]) -> str:
    return ",".join(f"{k}:{v}" for k, v in d.items()) or "-"


def render_failover(r: Any, verbose: bool = False) -> str:
    ev = ", ".join(f"{e['name']} at {e['at_s']:g} s" for e in r.events) or "no failure"
    lines = [f"lab {r.lab}: {ev}; {len(r.streams)} streams x {r.rate_pps:g} pps for {r.duration_s:g} s"]
    roce = any(s.roce for s in r.streams)
    header = ["stream", "sent", "lost", "in bond window", "in agent reaction", "beyond", "dup", "reord",
              "gap@fail", "gap@repair", "largest gap", "wire before>after>end"]
    if roce:
        header += ["ICRC bad", "PSN errors"]
    rows = []
    for s in r.streams:
        wires = " > ".join(w or "-" for w in (s.wire_before, s.wire_after, s.wire_end))
        agent = s.lost_in_agent_reaction if s.kind != "bond" else "-"
        row = [s.name, s.sent, s.lost, s.lost_in_bond_window, agent, s.lost_beyond_bond, s.duplicated,
               s.reordered_in_flow, _ms(s.fail_gap_ms), _ms(s.restore_gap_ms), _ms(s.largest_gap_ms), wires]
        if roce:
            ro = s.roce or {}
            row += [ro.get("icrc_bad", "-"), (ro.get("regressions", 0) + ro.get("duplicates", 0)
                                              + ro.get("psn_mismatch", 0)) if ro else "-"]
        rows.append(row)
    lines += _table(header, rows)
    bond = {s.direction: s for s in r.streams if s.kind == "bond"}
    for s in r.streams:
        if s.kind != "bond" and s.direction in bond:
            b = bond[s.direction]
            lines.append(f"{s.name}: gap {_ms(s.fail_gap_ms)} next to the bond's {_ms(b.fail_gap_ms)}; "
                         f"lost {s.lost} (bond {b.lost}): {s.lost_in_bond_window} in the bond's window, "
                         f"{s.lost_in_agent_reaction} while the agent reacted, {s.lost_beyond_bond} beyond")
    lines += _gap_bound(getattr(r, "bound", None) or {})
    for rc in (r.agent or {}).get("reactions") or []:
        lines.append(f"agent: {rc.get('trigger')}: rules applied {rc.get('done_after_event_ms')} ms after the "
                     f"{'failure' if r.events else 'start'} began (event->applied {rc.get('latency_ms')} ms), "
                     f"usable {rc.get('usable')}")
    late = (r.send or {}).get("max_late_ms")
    if late is not None:
        lines.append(f"sender: at most {late:g} ms behind its schedule (losses are judged by send time)")
        if getattr(r, "invalid", False):
            lines.append(f"  more than {r.tolerance.max_send_late_ms:g} ms: an overloaded machine; its timing may "
                         "have skewed the figures")
    for i, a in enumerate(getattr(r, "earlier_attempts", None) or [], start=1):
        lines.append(f"run {i} was redone: it said {a['verdict']} with the sender {a['max_late_ms']:g} ms behind "
                     f"its schedule (an overloaded machine); failed: {'; '.join(a['failed'])}")
    lines += _checks(r, verbose)
    return "\n".join(lines)


def _yes(v: Optional[bool]) -> str:
    return "-" if v is None else ("yes" if v else "no")


def _gap_bound(b: Dict[str, Any]) -> List[str]:
    """Each gap at the failure beside the bound the configuration promises (``bounds.judge_gaps``)."""
    if not b:
        return []
    limit = f"{b['limit_ms']:g} ms"
    lines = [f"gap bound ({b['monitor']}): {b['ms']:g} ms ({b['basis']}) + {b['spacing_ms']:g} ms packet spacing "
             f"= {limit}; informative, not a check"]
    for name, s in b["streams"].items():
        if s["gap_ms"] is None:
            lines.append(f"  {name}: no gap at the failure, bound {limit}")
        else:
            where = "within" if s["within"] else f"beyond by {s['over_ms']:g} ms"
            lines.append(f"  {name}: gap {s['gap_ms']:.1f} ms, bound {limit}: {where}")
    lines.append(f"within the bound: bond {_yes(b['bond_within'])}, offload {_yes(b['offload_within'])}")
    return lines


def render_hash(r: Any, verbose: bool = False) -> str:
    fail = f"; fail {r.fail} ({r.fault})" if r.fail else ""
    lines = [f"lab {r.lab}: {r.flows} flows to/from {r.target}, {r.packets_per_flow} packets each{fail}"]
    ports = sorted({p for ph in r.phases for p in list(ph.per_port) + list(ph.expected_share)})
    header = ["phase", "dir", "lost", "on one wire"] + [f"flows {p}" for p in ports] + \
             ["expected", "chi2", "p", "max dev", "switch hash", "delivered once"]
    rows = []
    for ph in r.phases:
        exp = "/".join(f"{ph.expected_share.get(p, 0):.2f}" for p in ports)
        pred = f"{ph.predicted_agree}/{ph.predicted_total}" if ph.predicted_total is not None else "-"
        dl = ph.delivery
        once = f"{dl['delivered_once']}/{ph.flows}" if dl else "-"
        rows.append([ph.phase, ph.direction, ph.lost, "yes" if ph.sticky else f"no ({len(ph.violators)}+)"]
                    + [ph.per_port.get(p, 0) for p in ports]
                    + [exp, "-" if ph.chi2 is None else f"{ph.chi2:.2f}", f"{ph.p_value:.3g}",
                       f"{ph.max_deviation:.3f}", pred, once])
    lines += _table(header, rows)
    for ph in r.phases:
        dl = ph.delivery
        if dl and (dl["not_once"] or dl["off_receiving"]):
            lines.append(f"{ph.phase} {ph.direction}: not delivered exactly once {dl['examples_not_once']}; "
                         f"on ports not receiving {dl['examples_off_receiving']}")
    for d, mv in r.moves.items():
        switch = mv.get("decided_by") == "switch"
        f = mv.get("failed")
        if f and switch:
            lines.append(f"{d}: after the failure {f['moved']} of {f['flows_on_dead_port']} flows of {f['dead']} "
                         f"moved; switch's figure (its own rehash, not judged): {f['switch_rehash']} flows "
                         f"moved off a surviving port")
        elif f:
            lines.append(f"{d}: after the failure {f['moved']} of {f['flows_on_dead_port']} flows of {f['dead']} "
                         f"moved, {f['moved_unexpectedly']} other flows moved")
        rs = mv.get("restored")
        if rs:
            lines.append(f"{d}: after the repair {rs['returned']}/{rs['of']} flows are back on their port"
                         + (" (switch's figure, not judged)" if switch else ""))
    before = r.buckets.get("before")
    if before:
        per = " ".join(f"{b['entry']}:{b['flows']:g}" for b in before)
        lines.append(f"tx flows per table entry (rule counters / {r.packets_per_flow}): {per}")
    lines += _checks(r, verbose)
    return "\n".join(lines)


def render_bondhash(r: Any, verbose: bool = False) -> str:
    lines = [f"lab {r.lab}: bond0 {r.mode}, transmit hash predicted (traffic.bondhash) vs the wire"]
    rows = []
    for p in r.policies:
        src = ", ".join(f"{k} {v['agree']}/{v['seen']}" for k, v in p.by_source.items())
        rows.append([p.policy, f"{p.seen}/{p.flows}", f"{p.agree}/{p.seen}", f"{100 * p.agreement:.1f} %",
                     _wires(p.per_port), src])
    lines += _table(["policy", "flows seen", "agree", "agreement", "flows per port", "by source"], rows)
    lines += _checks(r, verbose)
    return "\n".join(lines)


def render(result: Any, verbose: bool = False) -> str:
    kind = getattr(result, "kind", "")
    if kind in ("failover", "rdma"):
        return render_failover(result, verbose)
    if kind == "hash":
        return render_hash(result, verbose)
    if kind == "bondhash":
        return render_bondhash(result, verbose)
    if kind == "verbs":
        return "\n".join(result.lines())
    raise ValueError(f"no renderer for {kind!r}")
