"""The verbs verdict (pure): a real RC queue pair through a port failure and repair.

Inputs are what ``verbs_run`` measured: each end's result from ``traffic.verbs_peer`` (completion
times, completion errors by status, QP state at the end), the fault's instants, the bond's own
kernel UDP stream both ways (``traffic.udpprobe``), the agent's reactions, the RoCE frames per
wire (``traffic.rocewire``) and the rxe counters' change (``rdma statistic``).

Figures: operations completed per end; the largest completion stall (largest interval between
consecutive completions, or from the fault to the first completion after it) overall and around
the fault / the repair, next to the bond's largest arrival gap around the same instants; the retry
budget the QPs had (local ACK timeout 4.096 us x 2^T, times retry count + 1).

Checks (PASS needs all): both QPs in RTS at the end; zero completion errors; every operation the
sender posted completed on both ends; no end stalled; during the fault RoCE crossed a live wire.
A negative control (``expect_survive=False``: the agent stopped before the fault) passes when the
traffic died -- a QP in error, a completion error, a stall past the budget or operations never
completed -- and says so.

Public API:
    budget_ms(ack_timeout, retry) -> float
    largest_gap_ms(times_ns, around_ns=None, window_ms=...) -> float | None
    VerbsResult (dataclass; .passed, .verdict, .summary, .lines(), .to_dict())
    evaluate_verbs(...) -> VerbsResult
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from testbed.verify.checks import Check, check

ACK_UNIT_US = 4.096


def budget_ms(ack_timeout: int, retry: int) -> float:
    """How long an RC QP keeps retransmitting before 'retry exceeded': (retry + 1) local ACK timeouts."""
    return ACK_UNIT_US * (1 << ack_timeout) * (retry + 1) / 1000.0


def largest_gap_ms(times_ns: Sequence[int], around_ns: Optional[int] = None, window_ms: float = 1000.0,
                   end_ns: Optional[int] = None) -> Optional[float]:
    """Largest interval between consecutive times (ns). With ``around_ns``: only intervals that overlap
    [around - window, around + window]; a run that ends in silence counts up to ``end_ns``."""
    ts = sorted(times_ns)
    if end_ns is not None and ts and end_ns > ts[-1]:
        ts = ts + [end_ns]
    if len(ts) < 2:
        return None
    best: Optional[float] = None
    lo = hi = None
    if around_ns is not None:
        lo, hi = around_ns - window_ms * 1e6, around_ns + window_ms * 1e6
    for a, b in zip(ts, ts[1:]):
        if lo is not None and (b < lo or a > hi):
            continue
        gap = (b - a) / 1e6
        if best is None or gap > best:
            best = gap
    return None if best is None else round(best, 1)


@dataclass
class EndFigures:
    name: str  # "client" / "server:rdma0"
    device: str
    role: str  # "sender" / "receiver"
    connected: bool
    completed: int
    posted: int
    expected: Optional[int]
    errors: Dict[str, int]
    first_error: Optional[str]
    stalled: bool
    qp_state: str
    ack_timeout: Optional[int]
    retry_cnt: Optional[int]
    largest_stall_ms: Optional[float]
    stall_at_fail_ms: Optional[float]
    stall_at_repair_ms: Optional[float]
    connect_error: Optional[str] = None


@dataclass
class VerbsResult:
    lab: str
    target: str
    peer: str
    initiator: str
    fail: str
    agent: bool
    expect_survive: bool
    budget_ms: float
    fault_ms: Optional[float]
    ends: List[EndFigures]
    bond_gap_ms: Dict[str, Optional[float]]
    agent_reactions: List[Dict[str, Any]]
    wires: Dict[str, Dict[str, int]]
    counters: Dict[str, Dict[str, int]]
    checks: List[Check]
    survived: bool
    events: List[Dict[str, Any]] = field(default_factory=list)
    series: Dict[str, Any] = field(default_factory=dict, repr=False)
    kind: str = "verbs"

    @property
    def passed(self) -> bool:
        if not self.expect_survive:
            return not self.survived
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> List[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def verdict(self) -> str:
        if not self.expect_survive:
            return ("PASS (negative control: traffic died as expected)" if not self.survived else
                    "FAIL (negative control: the traffic survived without the agent -- the fault missed it?)")
        return "PASS" if self.passed else "FAIL"

    @property
    def summary(self) -> str:
        snd = next((e for e in self.ends if e.role == "sender"), None)
        rcv = next((e for e in self.ends if e.role == "receiver"), None)
        parts = []
        if snd:
            parts.append(f"{snd.completed}/{snd.expected if snd.expected is not None else '?'} operations completed")
            parts.append(f"largest stall {_ms(snd.largest_stall_ms)} (at the fault {_ms(snd.stall_at_fail_ms)})")
        bond = ", ".join(f"{d} {_ms(v)}" for d, v in self.bond_gap_ms.items())
        parts.append(f"bond gap {bond}")
        parts.append(f"budget {self.budget_ms:.0f} ms")
        qps = "/".join(e.qp_state for e in self.ends)
        errs = sum(sum(e.errors.values()) for e in self.ends)
        parts.append(f"QPs {qps}, {errs} completion errors" + (f" ({snd.first_error})" if snd and snd.first_error else
                                                              (f" ({rcv.first_error})" if rcv and rcv.first_error
                                                               else "")))
        return "; ".join(parts)

    def lines(self) -> List[str]:
        out = [f"lab {self.lab}: RC QP {self.peer} <-> {self.target} over RDMA CM, initiator {self.initiator}; "
               f"fault {self.fail} for {_ms(self.fault_ms)}; retry budget {self.budget_ms:.0f} ms; "
               f"agent {'running' if self.agent else 'STOPPED (negative control)'}"]
        hdr = ("end", "device", "role", "completed", "errors", "QP", "largest stall", "stall@fail", "stall@repair")
        rows = [hdr]
        for e in self.ends:
            errs = ", ".join(f"{k} x{v}" for k, v in e.errors.items()) or "0"
            rows.append((e.name, e.device, e.role, f"{e.completed}/{e.expected if e.expected is not None else '?'}",
                         errs, e.qp_state + (" (stalled)" if e.stalled else ""), _ms(e.largest_stall_ms),
                         _ms(e.stall_at_fail_ms), _ms(e.stall_at_repair_ms)))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(hdr))]
        for i, r in enumerate(rows):
            out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        out.append("bond's own gap (kernel UDP through bond0): " +
                   ", ".join(f"{d} {_ms(v)}" for d, v in self.bond_gap_ms.items()))
        for r in self.agent_reactions:
            out.append(f"agent: {r.get('trigger')}: rules applied {r.get('done_after_event_ms')} ms after the fault "
                       f"(event->applied {r.get('latency_ms')} ms), usable {r.get('usable')}")
        if not self.agent_reactions:
            out.append("agent: no reaction" + ("" if self.agent else " (stopped before the fault)"))
        for phase, counts in self.wires.items():
            out.append(f"RoCE frames {phase}: " + ", ".join(f"{p} {n}" for p, n in counts.items()))
        if self.series.get("restamped"):
            out.append(f"RoCE frames whose kernel time stamp was on another clock (moved onto the real "
                       f"time): {self.series['restamped']}")
        for dev, c in self.counters.items():
            shown = {k: v for k, v in c.items() if k not in ("sent_pkts", "rcvd_pkts") and v}
            out.append(f"rxe {dev}: sent {c.get('sent_pkts', 0)}, received {c.get('rcvd_pkts', 0)}" +
                       ("; " + ", ".join(f"{k} {v}" for k, v in shown.items()) if shown else "; no error counters"))
        for c in self.checks:
            out.append(c.line())
        out.append(f"verdict: {self.verdict}")
        return out

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("series", None)
        d.update(passed=self.passed, verdict=self.verdict, summary=self.summary)
        return d


def _ms(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def end_figures(name: str, device: str, res: Dict[str, Any], fail_ns: Optional[int], repair_ns: Optional[int],
                window_ms: float) -> EndFigures:
    if res.get("event") != "result":
        return EndFigures(name, device, "sender" if res.get("sender") else "receiver", False, 0, 0, None, {}, None,
                          False, "none", None, None, None, None, None, connect_error=res.get("error") or "no result")
    times = res.get("completions_ns") or []
    stop_ns = res.get("end_ns")
    return EndFigures(
        name=name, device=device, role="sender" if res.get("sender") else "receiver", connected=True,
        completed=int(res.get("completed", 0)), posted=int(res.get("posted", 0)), expected=res.get("expected"),
        errors=dict(res.get("errors") or {}), first_error=res.get("first_error"), stalled=bool(res.get("stalled")),
        qp_state=str(res.get("qp_state")), ack_timeout=res.get("ack_timeout"), retry_cnt=res.get("retry_cnt"),
        largest_stall_ms=largest_gap_ms(times, end_ns=stop_ns),
        stall_at_fail_ms=largest_gap_ms(times, fail_ns, window_ms, end_ns=stop_ns) if fail_ns else None,
        stall_at_repair_ms=largest_gap_ms(times, repair_ns, window_ms, end_ns=stop_ns) if repair_ns else None)


def evaluate_verbs(*, lab: str, target: str, peer: str, initiator: str, fail: str, agent: bool, expect_survive: bool,
                   ack_timeout: int, retry: int, ends: Sequence[EndFigures], fail_ns: Optional[int],
                   repair_ns: Optional[int], bond_arrivals: Dict[str, Sequence[int]],
                   agent_reactions: List[Dict[str, Any]], wires: Dict[str, Dict[str, int]],
                   counters: Dict[str, Dict[str, int]], failed_port: Optional[str], window_ms: float,
                   events: Optional[List[Dict[str, Any]]] = None, series: Optional[Dict[str, Any]] = None
                   ) -> VerbsResult:
    budget = budget_ms(ack_timeout, retry)
    bond_gap = {}
    for d, arr in bond_arrivals.items():
        bond_gap[f"{d}@fail"] = largest_gap_ms(arr, fail_ns, window_ms) if fail_ns else None
        if repair_ns:
            bond_gap[f"{d}@repair"] = largest_gap_ms(arr, repair_ns, window_ms)
    checks: List[Check] = []
    sent = next((e.expected for e in ends if e.role == "sender" and e.connected), None)
    for e in ends:
        if e.role == "receiver" and e.connected and sent is not None:
            e.expected = sent  # what the sender posted is what the receiver must get
    for e in ends:
        if not e.connected:
            checks.append(check(f"{e.name}: connected over RDMA CM", e.connect_error, False, "connected"))
            continue
        checks.append(check(f"{e.name}: QP state at the end", e.qp_state, e.qp_state == "RTS", "RTS"))
        checks.append(check(f"{e.name}: completion errors", sum(e.errors.values()), not e.errors, "0"))
        want = e.expected
        checks.append(check(f"{e.name}: operations completed", f"{e.completed}/{want if want is not None else '?'}",
                            want is not None and e.completed == want and (e.role != "sender" or e.posted == want),
                            "every operation the sender posted"))
        checks.append(check(f"{e.name}: stalled past {e.ack_timeout and _ms(budget)}", e.stalled, not e.stalled,
                            "no"))
        if e.ack_timeout is not None and (e.ack_timeout != ack_timeout or e.retry_cnt != retry):
            checks.append(check(f"{e.name}: retry budget set", f"timeout {e.ack_timeout}, retry {e.retry_cnt}",
                                False, f"timeout {ack_timeout}, retry {retry}"))
    during = wires.get("during the fault")
    if failed_port and during is not None:
        live = {p: n for p, n in during.items() if p != failed_port}
        checks.append(check(f"RoCE during the fault on a live wire (not {failed_port})", during,
                            sum(live.values()) > 0 and during.get(failed_port, 0) == 0,
                            f"> 0 frames on {', '.join(live) or '-'}, 0 on {failed_port}"))
    qp_checks = [c for c in checks if not c.name.startswith("RoCE during")]
    survived = bool(qp_checks) and all(c.passed for c in qp_checks)
    fault_ms = (repair_ns - fail_ns) / 1e6 if fail_ns and repair_ns else None
    return VerbsResult(lab=lab, target=target, peer=peer, initiator=initiator, fail=fail, agent=agent,
                       expect_survive=expect_survive, budget_ms=round(budget, 1),
                       fault_ms=None if fault_ms is None else round(fault_ms, 1), ends=list(ends),
                       bond_gap_ms=bond_gap, agent_reactions=agent_reactions, wires=wires, counters=counters,
                       checks=checks, survived=survived, events=events or [], series=series or {})
