"""Readable text for verification results (pure): a table of the figures, the failed checks, the verdict.

Public API:
    render(result, verbose=False) -> str       any result (by its ``kind``); verbose lists every check
    render_failover(result, verbose=False) -> str     (also RdmaResult)
    render_hash(result, verbose=False) -> str
    render_bondhash(result, verbose=False) -> str
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

MANY_STREAMS = 8  # more offload streams: a row per target, and their gaps summed up against the bond's

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


def _wire_path(s: Any) -> str:
    return " > ".join(w or "-" for w in (s.wire_before, s.wire_after, s.wire_end))


def _target_table(r: Any) -> List[str]:
    """A row per target (the bond's first), its directions side by side: many targets at a glance."""
    dirs = [d for d in ("rx", "tx") if any(s.direction == d for s in r.streams)]
    by_target: Dict[str, Dict[str, Any]] = {}
    for s in sorted(r.streams, key=lambda s: s.kind != "bond"):  # stable: the bond's first, else as run
        by_target.setdefault(s.target, {})[s.direction] = s
    header = (["target"] + [f"gap@fail {d}" for d in dirs] + [f"gap@repair {d}" for d in dirs]
              + ["lost", "in agent reaction", "beyond", "dup", "reord"] + [f"wire {d} before>after>end" for d in dirs])
    rows = []
    for target, per in by_target.items():
        ss = list(per.values())
        bond = ss[0].kind == "bond"
        rows.append([target] + [_ms(per[d].fail_gap_ms) if d in per else "-" for d in dirs]
                    + [_ms(per[d].restore_gap_ms) if d in per else "-" for d in dirs]
                    + [sum(s.lost for s in ss), "-" if bond else sum(s.lost_in_agent_reaction for s in ss),
                       sum(s.lost_beyond_bond for s in ss), sum(s.duplicated for s in ss),
                       sum(s.reordered_in_flow for s in ss)]
                    + [_wire_path(per[d]) if d in per else "-" for d in dirs])
    return _table(header, rows)


def _spread(r: Any) -> List[str]:
    """Per direction with several offload streams: their gaps at the failure, least to worst, by the bond's."""
    lines = []
    for d, g in r.gap_spread.items():
        if g["streams"] < 2:
            continue
        if g["with_gap"]:
            gaps = (f"gap at the failure {g['min_ms']:.1f}..{g['max_ms']:.1f} ms (median {g['median_ms']:.1f}, "
                    f"worst {g['worst']})")
            if g["with_gap"] < g["streams"]:
                gaps += f", {g['streams'] - g['with_gap']} without a gap"
        else:
            gaps = "no gap at the failure"
        bond = (f" next to the bond's {_ms(g['bond_gap_ms'])} ({g['over_bond']} above it)"
                if g["bond_gap_ms"] is not None else "")
        lines.append(f"{d}: {g['streams']} offload streams, {gaps}{bond}; lost {g['lost']}, "
                     f"{g['lost_beyond_bond']} beyond the bond's window and the agent's reaction")
    return lines


def render_failover(r: Any, verbose: bool = False) -> str:
    ev = ", ".join(f"{e['name']} at {e['at_s']:g} s" for e in r.events) or "no failure"
    lines = [f"lab {r.lab}: {ev}; {len(r.streams)} streams x {r.rate_pps:g} pps for {r.duration_s:g} s"]
    if getattr(r, "negative_control", False):
        lines.append("negative control: the agent was stopped before the fault; every offload stream must lose "
                     "packets beyond the bond's window (PASS: they all did)")
    many = sum(s.kind != "bond" for s in r.streams) > MANY_STREAMS
    lines += _target_table(r) if many else _stream_table(r)
    bond = {s.direction: s for s in r.streams if s.kind == "bond"}
    for s in r.streams if not many else ():
        if s.kind != "bond" and s.direction in bond:
            b = bond[s.direction]
            lines.append(f"{s.name}: gap {_ms(s.fail_gap_ms)} next to the bond's {_ms(b.fail_gap_ms)}; "
                         f"lost {s.lost} (bond {b.lost}): {s.lost_in_bond_window} in the bond's window, "
                         f"{s.lost_in_agent_reaction} while the agent reacted, {s.lost_beyond_bond} beyond")
    lines += _spread(r)
    lines += _gap_bound(getattr(r, "bound", None) or {}, many)
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


def _stream_table(r: Any) -> List[str]:
    roce = any(s.roce for s in r.streams)
    header = ["stream", "sent", "lost", "in bond window", "in agent reaction", "beyond", "dup", "reord",
              "gap@fail", "gap@repair", "largest gap", "wire before>after>end"]
    if roce:
        header += ["ICRC bad", "PSN errors"]
    rows = []
    for s in r.streams:
        wires = _wire_path(s)
        agent = s.lost_in_agent_reaction if s.kind != "bond" else "-"
        row = [s.name, s.sent, s.lost, s.lost_in_bond_window, agent, s.lost_beyond_bond, s.duplicated,
               s.reordered_in_flow, _ms(s.fail_gap_ms), _ms(s.restore_gap_ms), _ms(s.largest_gap_ms), wires]
        if roce:
            ro = s.roce or {}
            row += [ro.get("icrc_bad", "-"), (ro.get("regressions", 0) + ro.get("duplicates", 0)
                                              + ro.get("psn_mismatch", 0)) if ro else "-"]
        rows.append(row)
    return _table(header, rows)


def _yes(v: Optional[bool]) -> str:
    return "-" if v is None else ("yes" if v else "no")


def _gap_bound(b: Dict[str, Any], many: bool = False) -> List[str]:
    """Each gap at the failure beside the bound the configuration promises (``bounds.judge_gaps``); with
    ``many`` streams the bond's each and the offload's counted, the furthest beyond named."""
    if not b:
        return []
    limit = f"{b['limit_ms']:g} ms"
    lines = [f"gap bound ({b['monitor']}): {b['ms']:g} ms ({b['basis']}) + {b['spacing_ms']:g} ms packet spacing "
             f"= {limit}; informative, not a check"]
    shown = {n: s for n, s in b["streams"].items() if not many or s["kind"] == "bond"}
    if many:
        off = [(s["over_ms"], n) for n, s in b["streams"].items() if s["kind"] != "bond" and s["gap_ms"] is not None]
        beyond = sorted(o for o in off if o[0] > 0)
        worst = f" (furthest: {beyond[-1][1]}, by {beyond[-1][0]:g} ms)" if beyond else ""
        lines.append(f"  offload: {len(off) - len(beyond)} of {len(off)} gaps within the bound, {len(beyond)} "
                     f"beyond{worst}")
    for name, s in shown.items():
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
        resilient = mv.get("switch_select") == "resilient"  # the switch's table: judged like the NIC's
        switch = mv.get("decided_by") == "switch" and not resilient
        f = mv.get("failed")
        if f and switch:
            lines.append(f"{d}: after the failure {f['moved']} of {f['flows_on_dead_port']} flows of {f['dead']} "
                         f"moved; switch's figure (its own rehash, not judged): {f['switch_rehash']} flows "
                         f"moved off a surviving port")
        elif f and resilient:
            lines.append(f"{d}: after the failure {f['moved']} of {f['flows_on_dead_port']} flows of {f['dead']} "
                         f"moved; the switch's resilient table moved {f['switch_rehash']} flows off a surviving "
                         f"port")
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
