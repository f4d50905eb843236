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
* **event** (``react``): lay the events' link messages over the links last
  read (``predict.overlay``: no dump) and take the bond state from that; if
  the rules' inputs (usable, receiving ports) did not change, stop; else
  send the change prepared for that state (**precomputed**: one ``sendmsg``
  of an encoded buffer) or, for a state nobody foresaw, plan, diff against
  the rules this process installed and send it the same way (**planned**).
  Then, when the event socket is quiet (``step``): **verify** with a dump
  and correct what the guess got wrong, and prepare the changes for the
  states the bond may move to next (``predict.next_keys``), one per step.
  Events that cannot be laid over the last reading (an interface appeared
  or vanished; the socket held events when it was read, so they may be
  older than it) take the **read** path: dump the links, plan, diff, apply.
  A kernel error on any event path (the cache was wrong: someone deleted a
  rule by hand) falls back to a full resync at once.

Changes are applied in three phases (``rules.apply_order``): the delivery
paths and the gates of ports that receive now, then the TX table, then the
gates of ports that no longer receive, so the survivor delivers before flows
move onto it. Each rule change is a ``tc filter replace`` of the same key
(atomic). On the event paths the phases follow each other in one netlink
buffer (``ops.Change``): the kernel handles its messages in order, so the
order holds without a round trip between phases. (A failure in an early
phase does not stop the later ones there; it triggers the full resync.)
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Tuple

from testbed import nlpipe
from testbed.agent import predict
from testbed.agent import rules as rules_mod
from testbed.bond.state import BondState, LinkTable, read_links
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
    # which way it went: "full" | "read" (links dumped) | "precomputed" | "planned" (events laid over the
    # last reading, one sendmsg) | "verify" (the dump after a fast reaction corrected it); "": not told
    path: str = ""

    @property
    def changed(self) -> int:
        return self.added + self.replaced + self.deleted

    def text(self) -> str:
        what = ("resync" if self.full else "event") + (f" [{self.path}]" if self.path and not self.full else "")
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
            "path": self.path, "text": self.text(),
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
        elif old is not new and old != new:  # plans share their state-independent rules (rules._fixed_rules)
            if old.match == new.match or canonical.mask_shape(old.match) == canonical.mask_shape(new.match):
                replace.append(new)
            else:
                delete.append(old)
                add.append(new)
    delete += [old for key, old in have.items() if key not in want]
    return add, replace, delete


@dataclass(frozen=True)
class Prepared:
    """The rule change to one next state, encoded: the plan it installs and the buffer that does it."""

    plan: rules_mod.Plan
    change: ops.Change
    added: int
    replaced: int
    deleted: int


Quiet = Callable[[], bool]  # True: no event is queued on the NIC's event socket


def plan_diff(old: Optional[rules_mod.Plan], new: rules_mod.Plan, installed: Dict[Key, Rule]) -> Diff:
    """``fast_diff(new.rules, installed)`` where ``installed`` holds ``old``'s rules.

    Two plans of one device set share their fixed rules (the same objects,
    ``rules._fixed_rules``), so only the varying ones (gates, ARP passes, the
    TX table: O(ports x buckets)) are compared -- not every VF's rules, which
    cost tens of ms per diff under TCG with 128 VFs.
    """
    if old is not None and old.fixed and old.fixed is new.fixed:
        return fast_diff(new.varying, {r.key: r for r in old.varying})
    return fast_diff(new.rules, installed)


class NicReconciler:
    """Keeps one NIC's eswitch rules equal to what its bond state asks for."""

    def __init__(self, host: Host, ipr: Any, quiet: Optional[Quiet] = None) -> None:
        if host.nic is None:
            raise ValueError(f"host {host.name} has no NIC")
        self.host = host
        self.nic = host.nic
        self.ipr = ipr
        # None: events are never laid over a reading (every event dumps), as for a caller without a socket
        self.quiet = quiet
        self.state: Optional[BondState] = None
        self.plan: Optional[rules_mod.Plan] = None
        self.installed: Optional[Dict[Key, Rule]] = None  # what we last left in the kernel (canonical)
        self.links: Optional[LinkTable] = None  # the last reading, with the events since laid over it
        self.trusted = False  # no event was queued when self.links was read: all later events are newer
        self.resyncs = 0
        self._diffs: Dict[Tuple[int, int], Tuple[Any, Any, Diff]] = {}  # (old plan, new plan) -> diff
        self.prepared: Dict[predict.Key, Optional[Prepared]] = {}  # next state -> its change (None: too big)
        self._todo: Deque[predict.Key] = deque()  # next states still to prepare
        self._verify: Optional[Tuple[str, float]] = None  # (trigger, t_event) of a fast reaction to verify
        self._verify_at = 0.0  # time.monotonic() from which the verify may run
        self._limit: Optional[int] = None  # messages one buffer may hold (nlpipe.max_requests)
        self.stats = {"fast": 0, "precomputed": 0, "planned": 0, "read": 0, "verified": 0, "corrected": 0}
        # called when a reaction leaves the fast path for the read path, which may take long: the
        # agent's loop drops its real-time priority there (agent.priority)
        self.slow_path: Callable[[], None] = lambda: None

    # -- kernel I/O -----------------------------------------------------------------
    def _present_devices(self, state: BondState) -> List[str]:
        return [d for d in rules_mod.devices(self.nic) if state.devices is None or d in state.devices]

    def _dump(self, state: BondState) -> Dict[Key, Rule]:
        devs = self._present_devices(state)
        have = ops.clsact_blocks(self.ipr)
        want = rules_mod.bindings(self.nic)
        ops.ensure_clsacts(self.ipr, {dev: want[dev] for dev in devs if have.get(dev) != want[dev]}, have)
        return {inst.rule.key: inst.rule for inst in ops.dump(self.ipr, devs, rules_mod.BLOCKS)}

    def _phases(self, plan: rules_mod.Plan, add: List[Rule], replace: List[Rule],
                delete: List[Rule]) -> List[ops.Phase]:
        """The three make-before-break phases (``rules.apply_order``), each (add, replace, delete)."""
        split = [rules_mod.apply_order(self.nic, group, plan.receiving) for group in (add, replace, delete)]
        return [(split[0][p], split[1][p], split[2][p]) for p in range(3)]

    def _apply(self, plan: rules_mod.Plan, add: List[Rule], replace: List[Rule], delete: List[Rule]) -> None:
        index = dict(self.links.index) if self.links is not None else None
        for a, r, d in self._phases(plan, add, replace, delete):
            if a or r or d:
                ops.apply(self.ipr, add=a, replace=r, delete=d, links=index)

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
        diff = plan_diff(old if self.installed is not None else None, plan, self.installed or {})
        if old is not None and self.installed is not None:
            if len(self._diffs) >= 8:
                self._diffs.clear()
            self._diffs[key] = (old, plan, diff)
        return diff

    def _read(self) -> BondState:
        """Dump the links (``read_links``).

        Events queued *before* the dump may be older than it: laid over it they
        could bring an old state back, so the next batch then takes the read
        path. An event queued after the request was sent was built after it
        (rtnetlink builds and queues a notification in one go) and holds the
        link's state at that moment, never older than what the dump can have
        seen of it.
        """
        self.trusted = self.quiet is not None and self.quiet()
        table = read_links(self.ipr, self.nic, self.host.netns)
        self.links = table
        return table.state

    def _installed(self, state: BondState, plan: rules_mod.Plan) -> None:
        """``plan`` is in the kernel now: remember it; what was prepared from the old rules is void."""
        if plan is not self.plan or self.installed is None:
            self.prepared.clear()
            self._todo.clear()
        self.installed = {r.key: r for r in plan.rules}  # plan rules are canonical (unit-tested)
        self.state, self.plan = state, plan
        if not self._todo and not self.prepared and self.quiet is not None:
            self._todo.extend(predict.next_keys(self.nic, state, (plan.usable, plan.receiving)))

    def _forget(self) -> None:
        """The kernel's rules are unknown (a failed apply): the next reconcile dumps."""
        self.installed = None
        self.prepared.clear()
        self._todo.clear()

    # -- the reconcile ---------------------------------------------------------------
    def reconcile(self, trigger: str, t_event: float, full: bool = False) -> Optional[Reaction]:
        """Bring the kernel in line with the bond (read path); None if it found nothing to do.

        ``t_event`` (time.monotonic()) is when the triggering event was read.
        Raises TestbedError only when even a full resync cannot be done.
        """
        full = full or self.installed is None
        t_read = time.monotonic()
        state = self._read()
        t_plan = time.monotonic()
        if not full and state == self.state:
            return None
        if not full and self.state is not None and state.devices != self.state.devices:
            full = True  # a new device needs its clsact bound to its block before the rules mean anything
            trigger = f"{trigger}; devices changed"
        plan = rules_mod.plan(self.nic, state)
        reaction = Reaction(host=self.host.name, trigger=trigger, full=full, state=state.describe(),
                            usable=plan.usable, mapping=plan.summary(), read_ms=(t_plan - t_read) * 1000,
                            path="full" if full else "read")
        try:
            if full:
                have = self._dump(state)
                reaction.read_ms = (time.monotonic() - t_read) * 1000
                t_plan = time.monotonic()
                add, replace, delete = ops.diff(plan.rules, have.values())
                prepared = None
            else:
                prepared = self.prepared.get((plan.usable, plan.receiving))
                prepared = prepared if prepared is not None and prepared.plan is plan else None
                add, replace, delete = self._plan_diff(plan) if prepared is None else ([], [], [])
            t_apply = time.monotonic()
            reaction.plan_ms = (t_apply - t_plan) * 1000
            if prepared is not None:  # foreseen: one sendmsg, as on the fast path
                ops.send(self.ipr, prepared.change)
            else:
                self._apply(plan, add, replace, delete)
        except NetlinkOpError as exc:
            self._forget()
            if not full:
                return self.reconcile(f"{trigger}; resync after: {exc.message}", t_event, full=True)
            raise
        done = time.monotonic()
        reaction.wall_ns = time.time_ns()
        reaction.apply_ms = (done - t_apply) * 1000
        reaction.latency_ms = (done - t_event) * 1000
        if prepared is not None:
            reaction.added, reaction.replaced, reaction.deleted = prepared.added, prepared.replaced, prepared.deleted
        else:
            reaction.added, reaction.replaced, reaction.deleted = len(add), len(replace), len(delete)
        self._installed(state, plan)
        if full:
            self.resyncs += 1
        else:
            self.stats["read"] += 1
        return reaction

    # -- the event path ----------------------------------------------------------------
    def react(self, trigger: str, t_event: float, links: Mapping[str, bytes], names: Iterable[str] = (),
              deleted: Iterable[str] = ()) -> Optional[Reaction]:
        """A batch of link events: the fast path when the events can be laid over the last reading, else
        the read path (``reconcile``). ``links``: each interface's last RTM_NEWLINK in the batch (raw).

        None when nothing the rules depend on changed (a verify is still due).
        """
        if self.installed is None or self.links is None or self.plan is None or not self.trusted:
            self.slow_path()
            return self.reconcile(trigger, t_event)
        t_read = time.monotonic()
        table = predict.overlay(self.links, self.nic, links, names, deleted)
        if table is None:
            self.slow_path()
            return self.reconcile(trigger, t_event)
        self.links = table
        state = table.state
        if state == self.state:
            return None
        key = predict.key_of(self.nic, state)
        t_plan = time.monotonic()
        if key == (self.plan.usable, self.plan.receiving):
            # Nothing for the rules (carrier lost, the bond not yet decided). No verify: its dump would
            # race the bond's own notifications and act on them before they are read.
            self.state = state
            return None
        if predict.in_failover(self.nic, state):
            # The bond's next active port is on its way (predict.in_failover). self.state stays the
            # applied one, so if no notification follows within a monitor interval the verify's dump
            # finds the difference and applies whatever the bond then says.
            self._verify = (trigger, t_event)
            self._verify_at = time.monotonic() + predict.monitor_interval(self.nic)
            return None
        self._verify, self._verify_at = (trigger, t_event), 0.0
        prepared = self.prepared.get(key)
        path = "precomputed" if prepared is not None else "planned"
        reaction = Reaction(host=self.host.name, trigger=trigger, full=False, usable=key[0],
                            read_ms=(t_plan - t_read) * 1000, path=path)
        try:
            if prepared is None:
                prepared = self._prepare(key, state.devices)
            plan = prepared.plan if prepared is not None else rules_mod.plan_for(self.nic, *key, state.devices)
            t_apply = time.monotonic()
            reaction.plan_ms = (t_apply - t_plan) * 1000
            if prepared is not None:
                ops.send(self.ipr, prepared.change)
                counts = prepared.added, prepared.replaced, prepared.deleted
            else:  # more messages than one buffer may hold: phase by phase
                add, replace, delete = self._plan_diff(plan)
                self._apply(plan, add, replace, delete)
                counts = len(add), len(replace), len(delete)
        except NetlinkOpError as exc:
            self._forget()
            self._verify = None
            self.slow_path()
            return self.reconcile(f"{trigger}; resync after: {exc.message}", t_event, full=True)
        done = time.monotonic()
        reaction.wall_ns = time.time_ns()
        reaction.apply_ms = (done - t_apply) * 1000
        reaction.latency_ms = (done - t_event) * 1000
        reaction.added, reaction.replaced, reaction.deleted = counts
        reaction.state, reaction.mapping = state.describe(), plan.summary()  # text: after the clock stopped
        self.stats["fast"] += 1
        self.stats[path] += 1
        self._installed(state, plan)
        return reaction

    def _prepare(self, key: predict.Key, devices: Any) -> Optional[Prepared]:
        """The change from the installed rules to the plan of ``key``, encoded (None: it would not fit
        one buffer; the caller applies it phase by phase)."""
        assert self.installed is not None and self.links is not None
        plan = rules_mod.plan_for(self.nic, *key, devices)
        add, replace, delete = plan_diff(self.plan, plan, self.installed)
        if self._limit is None:
            self._limit = nlpipe.max_requests(self.ipr)
        if len(add) + len(replace) + len(delete) > self._limit:
            return None
        change = ops.encode(dict(self.links.index), self._phases(plan, add, replace, delete))
        return Prepared(plan, change, len(add), len(replace), len(delete))

    # -- background work -------------------------------------------------------------
    def due_in(self) -> Optional[float]:
        """Seconds until background work is due (0: now; None: there is none)."""
        if self._todo:
            return 0.0
        if self._verify is not None:
            return max(0.0, self._verify_at - time.monotonic())
        return None

    def busy(self) -> bool:
        """Work is due now, waiting for a quiet moment (``step``)."""
        return self.due_in() == 0.0

    def step(self) -> Optional[Reaction]:
        """One unit of background work: verify the last fast reaction (a dump; a Reaction only if it had
        to correct something), else prepare the change for one next state.

        Call it only when no event is queued: a reaction always goes first.
        """
        if self._verify is not None and time.monotonic() >= self._verify_at:
            trigger, t_event = self._verify
            self._verify = None
            self.stats["verified"] += 1
            reaction = self.reconcile(f"{trigger}; verify", t_event)
            if reaction is None or not (reaction.changed or reaction.full):
                return None
            self.stats["corrected"] += 1
            if not reaction.full:
                reaction.path = "verify"
            return reaction
        if self._todo and self.installed is not None and self.state is not None and self.links is not None:
            key = self._todo.popleft()
            if key not in self.prepared:
                try:
                    self.prepared[key] = self._prepare(key, self.state.devices)
                except NetlinkOpError:  # cannot be encoded (an interface missing): left to the event path
                    self.prepared[key] = None
        return None

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
        out["fast"] = dict(self.stats, prepared=[predict.describe(k) for k, v in self.prepared.items() if v])
        return out


def safe_call(rec: NicReconciler, trigger: str, t_event: float,
              call: Callable[[], Optional[Reaction]]) -> Optional[Reaction]:
    """Run ``call`` (a reconcile, a reaction, a step of ``rec``); a failure becomes a Reaction with
    ``error`` (the agent keeps running; the next reconcile dumps)."""
    try:
        return call()
    except TestbedError as exc:
        rec._forget()
        return Reaction(host=rec.host.name, trigger=trigger, full=True, error=str(exc),
                        latency_ms=(time.monotonic() - t_event) * 1000)


def safe_reconcile(rec: NicReconciler, trigger: str, t_event: float, full: bool = False) -> Optional[Reaction]:
    """``reconcile`` that turns a failure into a Reaction with ``error`` (the agent keeps running)."""
    return safe_call(rec, trigger, t_event, lambda: rec.reconcile(trigger, t_event, full))
