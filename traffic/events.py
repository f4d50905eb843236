"""Timed events beside a running stream (a port failure at 1 s, its repair at 3 s), on one helper thread.

Public API:
    EventRecord(name, at_s, ns, end_ns, error)     NamedTuple; ns/end_ns: CLOCK_REALTIME around fn()
    EventRunner(events)                             events: (name, at_s, fn[, min_gap_s]) tuples
        .start(t0_mono_ns)  .finish(cancel=False)  .done (EventRecords)  .errors (exceptions raised by fn)

``at_s`` counts from ``t0_mono_ns`` (CLOCK_MONOTONIC); ``min_gap_s`` keeps an event at least that long
after the previous one returned (a repair never sooner than the failure took effect). An exception in
``fn`` is recorded, not raised: the caller re-raises it once its capture stopped.
"""

from __future__ import annotations

import threading
import time
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple


class EventRecord(NamedTuple):
    name: str
    at_s: float
    ns: int  # CLOCK_REALTIME when fn() was called
    end_ns: int  # ... when it returned
    error: Optional[str]


class EventRunner:
    def __init__(self, events: Sequence[Tuple[Any, ...]], thread_name: str = "traffic-events") -> None:
        self.events = sorted(((e[0], e[1], e[2], e[3] if len(e) > 3 else 0.0) for e in events), key=lambda e: e[1])
        self.done: List[EventRecord] = []
        self.errors: List[BaseException] = []
        self._cancel = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._name = thread_name

    def start(self, t0_mono_ns: int) -> None:
        if self.events:
            self._thread = threading.Thread(target=self._run, args=(t0_mono_ns,), name=self._name, daemon=True)
            self._thread.start()

    def _run(self, t0: int) -> None:
        prev_end = 0
        for name, at_s, fn, gap_s in self.events:
            due = max(t0 + int(at_s * 1e9), prev_end + int(gap_s * 1e9))
            if self._cancel.wait(max(0.0, (due - time.monotonic_ns()) / 1e9)):
                return  # cancelled: the send failed
            ns = time.time_ns()
            try:
                fn()
                self.done.append(EventRecord(name, at_s, ns, time.time_ns(), None))
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller once the capture stopped
                self.errors.append(exc)
                self.done.append(EventRecord(name, at_s, ns, time.time_ns(), repr(exc)))
            prev_end = time.monotonic_ns()

    def finish(self, cancel: bool = False) -> None:
        if cancel:
            self._cancel.set()
        if self._thread is not None:
            self._thread.join()
