"""The agent's ``agent.json``, read back typed: what other layers may know of a running agent.

::

    st = status.read("ab")                 # None: no agent.json (no agent ever ran)
    st.nic("server").usable                # ("pf1",)
    [r.done_ns for r in st.nic("server").reactions]   # epoch ns: compare with time.time_ns()

Reactions carry ``done_ns`` (integer epoch nanoseconds, when the rules were
applied); their ``time`` string is for display only. ``raw`` keeps the
document as written, for ``testbed status --json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from testbed import labstore


@dataclass(frozen=True)
class ReactionStatus:
    """One reconcile of one NIC, as the agent reported it."""

    host: str
    trigger: str
    done_ns: int  # epoch ns when it finished (0: an agent.json from before this field)
    usable: Tuple[str, ...] = ()
    added: int = 0
    replaced: int = 0
    deleted: int = 0
    latency_ms: float = 0.0  # event read -> last rule applied
    apply_ms: float = 0.0  # the tc batches alone
    full: bool = False
    error: Optional[str] = None
    time: str = ""  # local time, for display
    text: str = ""  # the log line, for display

    @property
    def changed(self) -> int:
        return self.added + self.replaced + self.deleted

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReactionStatus:
        return cls(host=str(d.get("host") or ""), trigger=str(d.get("trigger") or ""),
                   done_ns=int(d.get("done_ns") or 0), usable=tuple(d.get("usable") or ()),
                   added=int(d.get("added") or 0), replaced=int(d.get("replaced") or 0),
                   deleted=int(d.get("deleted") or 0), latency_ms=float(d.get("latency_ms") or 0.0),
                   apply_ms=float(d.get("apply_ms") or 0.0),
                   full=bool(d.get("full")), error=d.get("error"), time=str(d.get("time") or ""),
                   text=str(d.get("text") or ""))


@dataclass(frozen=True)
class NicStatus:
    """What the agent programs for one NIC host (empty: the agent does not, or not yet)."""

    host: str
    usable: Tuple[str, ...] = ()  # ports carrying offloaded traffic
    mapping: Tuple[Optional[str], ...] = ()  # table entry -> port (None: drop)
    state: str = ""  # the bond state it last saw, for display
    rules: int = 0
    reactions: Tuple[ReactionStatus, ...] = ()  # the last ones, oldest first
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, host: str, d: Mapping[str, Any]) -> NicStatus:
        return cls(host=host, usable=tuple(d.get("usable") or ()), mapping=tuple(d.get("mapping") or ()),
                   state=str(d.get("state") or ""), rules=int(d.get("rules") or 0),
                   reactions=tuple(ReactionStatus.from_dict(r) for r in d.get("reactions") or ()), raw=d)

    def reactions_since(self, t_ns: int) -> Tuple[ReactionStatus, ...]:
        """The reactions that finished at or after epoch ``t_ns``."""
        return tuple(r for r in self.reactions if r.done_ns >= t_ns)


@dataclass(frozen=True)
class AgentStatus:
    lab: str
    pid: int = 0
    ready: bool = False  # its first full reconcile of every NIC is done
    running: bool = False
    error: Optional[str] = None
    nics: Mapping[str, NicStatus] = field(default_factory=dict)
    reactions: Tuple[ReactionStatus, ...] = ()  # every NIC's, oldest first
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def nic(self, host: str) -> NicStatus:
        return self.nics.get(host) or NicStatus(host=host)

    @classmethod
    def from_dict(cls, lab: str, d: Mapping[str, Any]) -> AgentStatus:
        nics = d.get("nics") if isinstance(d.get("nics"), dict) else {}
        return cls(lab=lab, pid=int(d.get("pid") or 0), ready=bool(d.get("ready")), running=bool(d.get("running")),
                   error=d.get("error"), nics={h: NicStatus.from_dict(h, n or {}) for h, n in nics.items()},
                   reactions=tuple(ReactionStatus.from_dict(r) for r in d.get("reactions") or ()), raw=d)


def read_raw(lab: str) -> Optional[Dict[str, Any]]:
    """``agent.json`` as written (for JSON output), or None."""
    try:
        with open(labstore.lab_file(lab, "agent.json")) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read(lab: str) -> Optional[AgentStatus]:
    """The agent's status, typed; None when there is no (readable) ``agent.json``."""
    data = read_raw(lab)
    return None if data is None else AgentStatus.from_dict(lab, data)


def nic(lab: str, host: str) -> NicStatus:
    """One NIC's entry (empty when there is no agent status)."""
    st = read(lab)
    return st.nic(host) if st is not None else NicStatus(host=host)


def wait_nic(lab: str, host: str, cond: Callable[[NicStatus], bool], timeout: float, what: str, *,
             interval: float = 0.02) -> NicStatus:
    """Until the agent's status for ``host`` satisfies ``cond``; WaitTimeout naming ``what`` (and what the
    agent last said) after ``timeout`` s. The one wait on the agent (``Lab.wait_offload``, the demo, the
    Mininet CLI); ``LabView.wait_settled`` waits on bond, partner and agent together."""
    from testbed.errors import WaitTimeout
    from testbed.nl import wait_until

    seen = [NicStatus(host=host)]

    def ok() -> bool:
        seen[0] = nic(lab, host)
        return cond(seen[0])

    try:
        wait_until(ok, timeout, what, interval=interval)
    except WaitTimeout as exc:
        raise WaitTimeout(f"{exc.message} (the agent uses {list(seen[0].usable) or 'no port'})",
                          fix="raise the timeout on a slow machine; see `testbed status` and the agent log") from None
    return seen[0]
