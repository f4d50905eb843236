"""One NIC's reconciler: bond state -> desired rules -> diff -> apply only the difference.

Two paths, both ending with the kernel holding exactly ``plan(nic, state).rules``
on the NIC's ports and representors (both clsact hooks) and in its shared
blocks (``rules.BLOCKS``); everything else there is deleted:

* **full** (start, ENOBUFS, SIGHUP, a device appeared or vanished, after
  any failed apply): give every device its clsact qdisc bound to its block
  (``rules.bindings``; a clsact bound otherwise is rebound), *dump* what the
  kernel holds, diff, apply. This is how a restarted agent adopts the rules
  it finds: a rule that is already right is neither replaced nor re-added,
  so traffic never notices.
* **fast** (a link event): read the bond state; if nothing the rules depend
  on changed, stop; else diff against the rules this process last
  installed (kept in memory) and apply. A kernel error on this path (the
  cache was wrong: someone deleted a rule by hand) falls back to a full
  resync at once.

Changes are applied in three batches (``rules.apply_order``): the delivery
paths and the gates of ports that receive now, then the TX table, then the
gates of ports that no longer receive, so the survivor delivers before flows
move onto it. Each rule change is a ``tc filter replace`` of the same key
(atomic).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from testbed.agent import rules as rules_mod
from testbed.bond.state import BondState, read_state
from testbed.errors import NetlinkOpError, TestbedError
from testbed.tc import canonical, ops
from testbed.tc.rule import Key, Rule
from testbed.topology import Host

Diff = Tuple[List[Rule], List[Rule], List[Rule]]


def stamp(t: float) -> str:
    """Local time with milliseconds: ``2025-01-01T12:00:00.123``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


@dataclass
class Reaction:
    """What one reconcile did, and how long it took (ms)."""

    host: str
    trigger: str
    full: bool
    state: str = ""
    usable: Tuple[str, ...] = ()
    mapping: str = ""
    added: int = 0
    replaced: int = 0
    deleted: int = 0
    read_ms: float = 0.0  # bond state (full: + rule dump)
    plan_ms: float = 0.0  # rules + diff
    apply_ms: float = 0.0
    latency_ms: float = 0.0  # event received -> last rule applied
    wall_ns: int = field(default_factory=time.time_ns)  # when it finished (epoch ns)
    error: Optional[str] = None

    @property
    def changed(self) -> int:
        return self.added + self.replaced + self.deleted

    def text(self) -> str:
        what = "resync" if self.full else "event"
        if self.error:
            return f"{self.host}: {what} ({self.trigger}): FAILED: {self.error}"
        if not self.changed:
            return (f"{self.host}: {what} ({self.trigger}): rules already right "
                    f"[{self.mapping}] in {self.latency_ms:.1f} ms")
        return (f"{self.host}: {what} ({self.trigger}): {self.mapping}: +{self.added} ~{self.replaced} "
                f"-{self.deleted} rules, event->applied {self.latency_ms:.1f} ms (apply {self.apply_ms:.1f} ms)")

    def as_dict(self) -> Dict[str, Any]:
        return {
            "time": stamp(self.wall_ns / 1e9), "done_ns": self.wall_ns,
            "host": self.host, "trigger": self.trigger, "full": self.full, "state": self.state,
            "usable": list(self.usable), "mapping": self.mapping, "added": self.added, "replaced": self.replaced,
            "deleted": self.deleted, "read_ms": round(self.read_ms, 3), "plan_ms": round(self.plan_ms, 3),
            "apply_ms": round(self.apply_ms, 3), "latency_ms": round(self.latency_ms, 3), "error": self.error,
            "text": self.text(),
        }


def fast_diff(desired: Tuple[Rule, ...], have: Dict[Key, Rule]) -> Diff:
    """``ops.diff`` for two sets of canonical rules: plain ``==``, no re-canonicalizing (the event path).

    Same result as ``ops.diff`` when both sides are canonical: a changed rule is
    replaced in place if its mask shape is unchanged, else deleted and added.
    """
    add: List[Rule] = []
    replace: List[Rule] = []
    delete: List[Rule] = []
    want = set()
    for new in desired:
        want.add(new.key)
        old = have.get(new.key)
        if old is None:
            add.append(new)
        elif old != new:
            if old.match == new.match or canonical.mask_shape(old.match) == canonical.mask_shape(new.match):
                replace.append(new)
            else:
                delete.append(old)
                add.append(new)
    delete += [old for key, old in have.items() if key not in want]
    return add, replace, delete


class NicReconciler:
    """Keeps one NIC's eswitch rules equal to what its bond state asks for."""

    def __init__(self, host: Host, ipr: Any) -> None:
        if host.nic is None:
            raise ValueError(f"host {host.name} has no NIC")
        self.host = host
        self.nic = host.nic
        self.ipr = ipr
        self.state: Optional[BondState] = None
        self.plan: Optional[rules_mod.Plan] = None
        self.installed: Optional[Dict[Key, Rule]] = None  # what we last left in the kernel (canonical)
        self.resyncs = 0
        self._diffs: Dict[Tuple[int, int], Tuple[Any, Any, Diff]] = {}  # (old plan, new plan) -> diff

    # -- kernel I/O -----------------------------------------------------------------
    def _present_devices(self, state: BondState) -> List[str]:
        return [d for d in rules_mod.devices(self.nic) if state.devices is None or d in state.devices]

    def _dump(self, state: BondState) -> Dict[Key, Rule]:
        devs = self._present_devices(state)
        have = ops.clsact_blocks(self.ipr)
        want = rules_mod.bindings(self.nic)
        for dev in devs:
            if have.get(dev) != want[dev]:
                ops.ensure_clsact(self.ipr, dev, *want[dev])
        return {inst.rule.key: inst.rule for inst in ops.dump(self.ipr, devs, rules_mod.BLOCKS)}

    def _apply(self, plan: rules_mod.Plan, add: List[Rule], replace: List[Rule], delete: List[Rule]) -> None:
        phases = [rules_mod.apply_order(self.nic, group, plan.receiving) for group in (add, replace, delete)]
        for p in range(3):
            a, r, d = phases[0][p], phases[1][p], phases[2][p]
            if a or r or d:
                ops.apply(self.ipr, add=a, replace=r, delete=d)

    def _plan_diff(self, plan: rules_mod.Plan) -> Diff:
        """Diff from what we installed (= ``self.plan``'s rules) to ``plan``.

        Plans are cached and immutable (``rules._plan``), so a port that flaps
        alternates between the same two plans; their diff is kept too.
        """
        old = self.plan
        key = (id(old), id(plan))
        hit = self._diffs.get(key)
        if hit is not None and hit[0] is old and hit[1] is plan:
            return hit[2]
        diff = fast_diff(plan.rules, self.installed or {})
        if old is not None and self.installed is not None:
            if len(self._diffs) >= 8:
                self._diffs.clear()
            self._diffs[key] = (old, plan, diff)
        return diff

    # -- the reconcile ---------------------------------------------------------------
    def reconcile(self, trigger: str, t_event: float, full: bool = False) -> Optional[Reaction]:
        """Bring the kernel in line with the bond; None if a fast reconcile found nothing to do.

        ``t_event`` (time.monotonic()) is when the triggering event was read.
        Raises TestbedError only when even a full resync cannot be done.
        """
        full = full or self.installed is None
        t_read = time.monotonic()
        state = read_state(self.ipr, self.nic, self.host.netns)
        t_plan = time.monotonic()
        if not full and state == self.state:
            return None
        if not full and self.state is not None and state.devices != self.state.devices:
            full = True  # a new device needs its clsact bound to its block before the rules mean anything
            trigger = f"{trigger}; devices changed"
        plan = rules_mod.plan(self.nic, state)
        reaction = Reaction(host=self.host.name, trigger=trigger, full=full, state=state.describe(),
                            usable=plan.usable, mapping=plan.summary(), read_ms=(t_plan - t_read) * 1000)
        try:
            if full:
                have = self._dump(state)
                reaction.read_ms = (time.monotonic() - t_read) * 1000
                t_plan = time.monotonic()
                add, replace, delete = ops.diff(plan.rules, have.values())
            else:
                add, replace, delete = self._plan_diff(plan)
            t_apply = time.monotonic()
            reaction.plan_ms = (t_apply - t_plan) * 1000
            self._apply(plan, add, replace, delete)
        except NetlinkOpError as exc:
            self.installed = None  # unknown now: the next reconcile dumps
            if not full:
                return self.reconcile(f"{trigger}; resync after: {exc.message}", t_event, full=True)
            raise
        done = time.monotonic()
        reaction.wall_ns = time.time_ns()
        reaction.apply_ms = (done - t_apply) * 1000
        reaction.latency_ms = (done - t_event) * 1000
        reaction.added, reaction.replaced, reaction.deleted = len(add), len(replace), len(delete)
        self.installed = {r.key: r for r in plan.rules}  # plan rules are canonical (unit-tested)
        self.state, self.plan = state, plan
        if full:
            self.resyncs += 1
        return reaction

    def status(self) -> Dict[str, Any]:
        """This NIC's part of agent.json (see ``testbed.agent.report``)."""
        nic, plan = self.nic, self.plan
        out: Dict[str, Any] = {
            "netns": self.host.netns, "bond": nic.bond.name, "bond_mode": nic.bond.mode,
            "offload": nic.offload.mode, "ports": list(nic.ports), "resyncs": self.resyncs,
        }
        if nic.offload.mode == "hash":
            out["buckets"] = nic.offload.buckets
        if self.state is not None:
            out["state"] = self.state.describe()
        if plan is not None:
            out["usable"] = list(plan.usable)
            out["receiving"] = list(plan.receiving)
            out["mapping"] = list(plan.table)
            out["tx"] = {fn: list(ports) for fn, ports in plan.tx.items()}
            out["rules"] = len(plan.rules)
        return out


def safe_reconcile(rec: NicReconciler, trigger: str, t_event: float, full: bool = False) -> Optional[Reaction]:
    """``reconcile`` that turns a failure into a Reaction with ``error`` (the agent keeps running)."""
    try:
        return rec.reconcile(trigger, t_event, full)
    except TestbedError as exc:
        rec.installed = None
        return Reaction(host=rec.host.name, trigger=trigger, full=True, error=str(exc),
                        latency_ms=(time.monotonic() - t_event) * 1000)
