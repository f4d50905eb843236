"""One call for a whole stream test: capture, send (with timed events), settle, analyse.

Public API:
    Endpoint(netns: str | None, ifname: str | None)         NamedTuple
    EventRecord(name, at_s, ns, end_ns, error)             NamedTuple (CLOCK_REALTIME ns)
    StreamRun(sent, records, report, rx_stats, events)     dataclass; .to_dict()
    run_stream(tx, rx, templates, *, count=None, duration_s=None, rate_pps=None, first_seq=0,
               ifnames=None, events=(), settle_s=0.5, window_ms=500.0, pcap=None) -> StreamRun

``tx`` names the sending namespace and interface, ``rx`` the receiving
namespace and interface (``ifname=None``: namespace-wide, every wire;
``ifnames`` then keeps only some, e.g. the bond's ports).  ``events`` is a
sequence of ``(name, at_s, fn)``: ``fn()`` (e.g. take a wire down
mid-stream) runs on a helper thread ``at_s`` seconds after the first packet
is due -- the sender and the event thread share one schedule origin,
``SendResult.start_ns``; its CLOCK_REALTIME start and end are recorded, and
the first event's start is what ``report.event_gap_ms`` is measured around.  After the last packet the
receiver gets ``settle_s`` for stragglers (less if everything is already in).
An event that raised is re-raised after the stream, once the capture stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Dict, List, NamedTuple, Optional, Sequence, Tuple

from testbed.errors import UsageError, WaitTimeout
from traffic.analysis import StreamReport, analyze_stream
from traffic.events import EventRecord, EventRunner
from traffic.receiver import Receiver
from traffic.records import RxRecord
from traffic.sender import RawSender, SendResult

START_LEAD_NS = 20_000_000  # the stream starts 20 ms after the call: both threads are ready


class Endpoint(NamedTuple):
    netns: Optional[str]
    ifname: Optional[str]


@dataclass
class StreamRun:
    sent: SendResult
    records: List[RxRecord]
    report: StreamReport
    rx_stats: Dict[str, int]
    events: List[EventRecord] = field(default_factory=list)

    def to_dict(self, with_records: bool = False) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "sent": self.sent.to_dict(),
            "report": self.report.to_dict(),
            "rx_stats": dict(self.rx_stats),
            "events": [e._asdict() for e in self.events],
        }
        if with_records:
            out["records"] = [r.to_dict() for r in self.records]
        return out


def run_stream(
    tx: Tuple[Optional[str], str],
    rx: Tuple[Optional[str], Optional[str]],
    templates: Sequence[Any],
    *,
    count: Optional[int] = None,
    duration_s: Optional[float] = None,
    rate_pps: Optional[float] = None,
    first_seq: int = 0,
    ifnames: Optional[Collection[str]] = None,
    events: Sequence[Tuple[str, float, Callable[[], Any]]] = (),
    settle_s: float = 0.5,
    window_ms: float = 500.0,
    pcap: Optional[str] = None,
) -> StreamRun:
    if not templates:
        raise UsageError("run_stream: no templates", fix="build some with traffic.packets")
    stream_ids = {t.stream_id for t in templates}
    if len(stream_ids) != 1:
        raise UsageError(f"run_stream: templates of several streams {sorted(stream_ids)}")
    if events and rate_pps is None:
        raise UsageError("run_stream: timed events need a paced stream", fix="give rate_pps")
    tx_ep, rx_ep = Endpoint(*tx), Endpoint(*rx)
    if not tx_ep.ifname:
        raise UsageError("run_stream: the sender needs an interface", fix="tx=(netns, ifname)")
    runner = EventRunner(events)
    receiver = Receiver(rx_ep.netns, rx_ep.ifname, stream_id=stream_ids.pop(), ifnames=ifnames, pcap=pcap)
    with receiver, RawSender(tx_ep.netns, tx_ep.ifname) as sender:
        t0 = time.monotonic_ns() + START_LEAD_NS  # one origin for the schedule and the events
        runner.start(t0)
        try:
            sent = sender.send(
                templates,
                count=count,
                duration_s=duration_s,
                rate_pps=rate_pps,
                first_seq=first_seq,
                start_mono_ns=t0,
            )
        except BaseException:
            runner.finish(cancel=True)
            raise
        runner.finish()
        try:
            receiver.wait_count(sent.sent, timeout_s=settle_s)
        except WaitTimeout:
            pass  # losses: the report says how many
    if runner.errors:
        raise runner.errors[0]
    records = receiver.records
    event_ns = runner.done[0].ns if runner.done else None
    report = analyze_stream(records, expected=sent.sent, first_seq=first_seq, event_ns=event_ns, window_ms=window_ms)
    return StreamRun(sent, records, report, receiver.stats(), list(runner.done))
