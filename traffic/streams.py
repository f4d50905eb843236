"""Several sequenced streams side by side, one schedule, captured at their ends and on the wires.

``run_streams`` is ``traffic.run.run_stream`` for many streams at once, which
a side-by-side comparison needs: the engine's one paced loop
(``pacing.run_schedule``) sends packet ``k`` of *every* stream at tick ``k``
(``start + k / rate``), so sequence number ``k`` means the same instant in
every stream and the VF's losses can be laid over the bond's packet by packet.  Around the loop:

- one ``traffic.receiver.Receiver`` per destination (namespace, interface),
  shared by the streams ending there and split by ``stream_id`` afterwards;
  one thread serves all of them (``traffic.receivers.ReceiverGroup``: 64
  VFs are 65 destinations, not 65 threads);
- one raw socket per sending interface, shared by the streams leaving
  there (the client's ``eth0`` sends every VF's ``rx`` stream);
- one for the wires: in the switch namespace, kept to the NIC's switch-side
  ports, both directions (``include_outgoing``: frames the switch sends *to*
  the NIC are outgoing there), so every record says which port carried it
  (not bound to the ports: a socket bound to a port that goes admin down --
  a failure -- ends with ENETDOWN);
- ``events`` -- ``(name, at_s, fn)`` or ``(name, at_s, fn, gap_s)`` run on a
  helper thread at their offset from the schedule's origin (a port failure,
  its repair), but not before ``gap_s`` after the previous event's call
  returned (a failure whose netlink call took long in a slow guest still
  gets its time before the repair); their CLOCK_REALTIME start and end are
  recorded;
- a progress line each second when the stream lasts longer than one;
- UDP "sink" sockets bound to the streams' destination ports in the
  receiving namespaces, so the kernels there take the datagrams quietly
  instead of answering each with ICMP port-unreachable (noise on the wires).

Before the receivers start, every sender sends its first frame once (not
captured; one still in flight when they start is dropped by its send time):
the switch's bridge learns the sources, so the streams do not begin with
flooded frames on every wire.

Public API:
    Station(label, netns, ifname, mac, ip)                          frozen dataclass: one end of a stream
    StreamSpec(name, stream_id, tx, rx, templates)                  dataclass (tx/rx: Station)
    StreamsRun(specs, ticks, rate_pps, start_ns, first_ns, last_ns, elapsed_s, max_late_us, refused,
               records, wire_records, events, rx_stats)            dataclass
    EventRecord(name, at_s, ns, end_ns, error)                      NamedTuple (CLOCK_REALTIME ns)
    write_pcap(path, frames) -> None                                sll2 pcap of CapturedFrames, by time
    run_streams(specs, *, rate_pps, count, wires=None, events=(), settle_s=1.0, pcap=None,
                progress=None, warmup=True) -> StreamsRun
    wires = (switch_netns, {switch_port: host_port}); wire records carry the *host* port name.
"""

from __future__ import annotations

import os
import resource
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from testbed.errors import UsageError, WaitTimeout
from traffic.events import EventRecord, EventRunner
from traffic.netns import run_in_netns
from traffic.pacing import REFUSED, Lane, run_schedule
from traffic.pcap import PcapWriter
from traffic.receiver import CapturedFrame, Receiver
from traffic.receivers import ReceiverGroup
from traffic.records import RxRecord
from traffic.sender import RawSender

FD_HEADROOM = 64  # file descriptors beyond the run's own sockets (the caller's, netlink, pcap, pipes)
START_LEAD_NS = 50_000_000  # the schedule starts 50 ms after the call: every thread is ready

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Station:
    """One end of a stream: the namespace and interface a raw socket uses there, the MAC and IPv4 or IPv6
    address its frames carry (``testbed.verify.stations`` resolves them from a topology)."""

    label: str  # "client", "vf0", "rdma0", "bond"
    netns: str
    ifname: str
    mac: str
    ip: str

    @property
    def version(self) -> int:
        """The IP version of ``ip``: 4 or 6."""
        return 6 if ":" in self.ip else 4


@dataclass
class StreamSpec:
    name: str  # "vf0 rx"
    stream_id: int
    tx: Station
    rx: Station
    templates: Sequence[Any]  # traffic.packets.FrameTemplate


@dataclass
class StreamsRun:
    specs: List[StreamSpec]
    ticks: int  # packets sent per stream (seq 0 .. ticks-1)
    rate_pps: float  # per stream
    start_ns: int  # CLOCK_REALTIME origin: tick k is due at start_ns + k / rate
    first_ns: int
    last_ns: int
    elapsed_s: float
    max_late_us: float
    refused: Dict[str, int]  # stream -> frames its sender's device refused
    records: Dict[str, List[RxRecord]]  # stream -> what arrived at its destination
    wire_records: Dict[str, List[RxRecord]]  # stream -> its frames seen on the wires (ifname = host port)
    events: List[EventRecord] = field(default_factory=list)
    rx_stats: Dict[str, Dict[str, int]] = field(default_factory=dict)
    sent_ns: Dict[str, Sequence[int]] = field(default_factory=dict)  # stream -> its frame k's send stamp at [k]

    def tick_of(self, ns: int) -> float:
        """The (fractional) tick due at CLOCK_REALTIME ``ns``."""
        return (ns - self.start_ns) * self.rate_pps / 1e9

    def event(self, prefix: str) -> Optional[EventRecord]:
        return next((e for e in self.events if e.name.startswith(prefix)), None)


# -- pieces -------------------------------------------------------------------------------------------


def _udp_sink(ip: str, port: int) -> Optional[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((ip, port))
    except OSError:
        sock.close()
        return None  # in use or not an address here: the stream works without it
    return sock


class Sinks:
    """UDP sockets bound to the destinations' ports, closed on exit."""

    def __init__(self, specs: Sequence[StreamSpec]) -> None:
        self.specs = specs
        self.socks: List[socket.socket] = []

    def __enter__(self) -> Sinks:
        seen = set()
        for spec in self.specs:
            for t in spec.templates:
                key = (spec.rx.netns, spec.rx.ip, t.flow.dport)
                if key in seen or t.flow.proto == "tcp":
                    continue
                seen.add(key)
                sock = run_in_netns(spec.rx.netns, _udp_sink, spec.rx.ip, t.flow.dport)
                if sock is not None:
                    self.socks.append(sock)
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.socks:
            s.close()
        self.socks.clear()


class _Ticker:
    """A progress line per second while the schedule runs (only for schedules longer than 1 s)."""

    def __init__(self, progress: Optional[Progress], total_s: float, what: str, count: int) -> None:
        self.progress = progress if total_s > 1.0 else None
        self.total_s = total_s
        self.what = what
        self.count = count
        self.tick = [0]  # the sender's progress, written by the pacing loop
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self, t0_mono_ns: int) -> None:
        if self.progress is None:
            return
        self._thread = threading.Thread(target=self._run, args=(t0_mono_ns,), name="verify-progress", daemon=True)
        self._thread.start()

    def _run(self, t0: int) -> None:
        assert self.progress is not None
        second = 1
        while second < self.total_s:
            if self._stop.wait(max(0.0, (t0 + second * 1e9 - time.monotonic_ns()) / 1e9)):
                return
            self.progress(f"{self.what}: {second:.0f} of {self.total_s:.1f} s, packet {self.tick[0]} of {self.count}")
            second += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def write_pcap(path: str, frames: Sequence[CapturedFrame]) -> None:
    with PcapWriter(path, linktype="sll2") as pcap:
        for f in sorted(frames, key=lambda f: f.rx_ns):
            pcap.write(f.data, f.rx_ns, ifindex=f.ifindex, pkttype=f.pkttype)


# -- the run ------------------------------------------------------------------------------------------


def _check(specs: Sequence[StreamSpec], rate_pps: float, count: int) -> None:
    if not specs:
        raise UsageError("run_streams: no streams", fix="give at least one StreamSpec")
    if count < 1 or rate_pps <= 0:
        raise UsageError(f"run_streams: count {count} and rate {rate_pps} pps must be positive")
    ids = [s.stream_id for s in specs]
    if len(set(ids)) != len(ids) or len({s.name for s in specs}) != len(specs):
        raise UsageError("run_streams: stream ids and names must be distinct")


def _reserve_fds(specs: Sequence[StreamSpec]) -> None:
    """Room for the run's sockets (a sender per sending interface, a sink and a receiver per destination, the
    wires'): the soft RLIMIT_NOFILE raised toward the hard one when 256 VFs would not fit the usual 1,024."""
    want = (len({(s.tx.netns, s.tx.ifname) for s in specs}) + 2 * len({(s.rx.netns, s.rx.ifname) for s in specs})
            + FD_HEADROOM + _open_fds())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or want <= soft:
        return
    if hard != resource.RLIM_INFINITY and want > hard:
        raise UsageError(f"{len(specs)} streams need about {want} file descriptors; the hard limit is {hard}",
                         fix=f"raise it (ulimit -Hn {want}) or run fewer targets at once")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


def _warm_up(senders: Sequence[RawSender], specs: Sequence[StreamSpec]) -> None:
    """Each sender's first frame once, not captured: the switch's bridge learns the sources."""
    for snd, s in zip(senders, specs):
        try:
            snd.sock.send(s.templates[0].stamp(0, time.time_ns()))
        except OSError as exc:
            if exc.errno not in REFUSED:
                raise


def _settle(receivers: Mapping[Tuple[str, str], Receiver], specs: Sequence[StreamSpec], count: int,
            settle_s: float) -> None:
    """Stragglers: until every stream is complete at its destination or the settle time is over."""
    deadline = time.monotonic() + settle_s
    for key, rx in receivers.items():
        want = count * sum(1 for s in specs if (s.rx.netns, s.rx.ifname) == key)
        try:
            rx.wait_count(want, timeout_s=max(0.0, deadline - time.monotonic()))
        except WaitTimeout:
            pass  # losses (or other streams' frames counted): the analysis tells


def _split(specs: Sequence[StreamSpec], dest: Mapping[Tuple[str, str], List[RxRecord]],
           wire: List[RxRecord], port_of: Mapping[str, str]) -> Tuple[Dict[str, List[RxRecord]], ...]:
    """Records per stream: at its own destination, and on the wires (``ifname`` -> the host's port)."""
    by_id = {s.stream_id: s.name for s in specs}
    dest_of = {s.stream_id: (s.rx.netns, s.rx.ifname) for s in specs}
    records: Dict[str, List[RxRecord]] = {s.name: [] for s in specs}
    for key, recs in dest.items():
        for r in recs:
            if dest_of.get(r.stream_id) == key:
                records[by_id[r.stream_id]].append(r)
    wire_records: Dict[str, List[RxRecord]] = {s.name: [] for s in specs}
    for r in wire:
        name = by_id.get(r.stream_id)
        if name is not None:
            wire_records[name].append(r._replace(ifname=port_of[r.ifname]))
    return records, wire_records


class _Captures:
    """The receivers of a run: one per destination (namespace, interface), all served by one thread (a
    ``ReceiverGroup``), and one for the wires."""

    def __init__(self) -> None:
        self.dest: Dict[Tuple[str, str], Receiver] = {}
        self.group: Optional[ReceiverGroup] = None
        self.wire: Optional[Receiver] = None

    def start(self, specs: Sequence[StreamSpec], wires: Optional[Tuple[str, Mapping[str, str]]],
              keep_frames: bool) -> None:
        """Each capture is kept as soon as it runs: ``stop()`` stops those started before a failure."""
        dest = {(s.rx.netns, s.rx.ifname): Receiver(s.rx.netns, s.rx.ifname) for s in specs}
        self.group = ReceiverGroup(list(dest.values())).start()
        self.dest = dest
        if wires is not None:
            # namespace-wide, kept to the ports: a socket bound to a port that goes admin down (a failure)
            # would end with ENETDOWN
            self.wire = Receiver(wires[0], None, ifnames=set(wires[1]), include_outgoing=True,
                                 keep_frames=keep_frames).start()

    def stop(self) -> Tuple[Dict[Tuple[str, str], List[RxRecord]], List[RxRecord]]:
        if self.group is not None:
            self.group.stop()
        return {k: rx.stop() for k, rx in self.dest.items()}, (self.wire.stop() if self.wire else [])

    def stats(self, wires: Optional[Tuple[str, Mapping[str, str]]]) -> Dict[str, Dict[str, int]]:
        out = {f"{k[0]}/{k[1]}": rx.stats() for k, rx in self.dest.items()}
        if self.wire is not None and wires is not None:
            out[f"{wires[0]}/wires"] = self.wire.stats()
        return out


def run_streams(
    specs: Sequence[StreamSpec],
    *,
    rate_pps: float,
    count: int,
    wires: Optional[Tuple[str, Mapping[str, str]]] = None,
    events: Sequence[Tuple[Any, ...]] = (),
    settle_s: float = 1.0,
    pcap: Optional[str] = None,
    progress: Optional[Progress] = None,
    warmup: bool = True,
) -> StreamsRun:
    _check(specs, rate_pps, count)
    _reserve_fds(specs)
    senders: Dict[Tuple[Optional[str], str], RawSender] = {}  # one socket per sending interface, shared
    caps = _Captures()
    runner = EventRunner(events, "verify-events")
    ticker = _Ticker(progress, count / rate_pps, "traffic", count)
    try:
        for s in specs:
            if (s.tx.netns, s.tx.ifname) not in senders:
                senders[(s.tx.netns, s.tx.ifname)] = RawSender(s.tx.netns, s.tx.ifname)
        lanes = [senders[(s.tx.netns, s.tx.ifname)] for s in specs]
        with Sinks(specs):
            if warmup:
                _warm_up(lanes, specs)
            caps.start(specs, wires, keep_frames=pcap is not None)
            t0 = time.monotonic_ns() + START_LEAD_NS
            runner.start(t0)
            ticker.start(t0)
            try:
                sched = run_schedule([Lane(snd.sock.send, [t.stamp for t in s.templates])
                                      for snd, s in zip(lanes, specs)],
                                     count=count, rate_pps=rate_pps, start_mono_ns=t0, tick=ticker.tick,
                                     record=True)
            except BaseException:
                runner.finish(cancel=True)
                raise
            finally:
                ticker.stop()
            runner.finish()
            elapsed = (time.monotonic_ns() - t0) / 1e9
            if progress is not None:
                progress(f"sent {count} packets x {len(specs)} streams in {elapsed:.1f} s "
                         f"(at most {sched.max_late_ns / 1e6:.0f} ms behind the schedule); collecting")
            _settle(caps.dest, specs, count, settle_s)
    finally:
        for snd in senders.values():
            snd.close()
        dest, wire = caps.stop()
    if runner.errors:
        raise runner.errors[0]
    # a warm-up frame still in flight when the captures opened (a slow guest) is no packet of the run: it
    # carries the stamp of flow 0's packet 0, and would be a duplicate of it
    dest = {key: [r for r in recs if r.tx_ns >= sched.first_ns] for key, recs in dest.items()}
    wire = [r for r in wire if r.tx_ns >= sched.first_ns]
    records, wire_records = _split(specs, dest, wire, dict(wires[1]) if wires else {})
    if pcap is not None and caps.wire is not None:
        write_pcap(pcap, caps.wire.frames)
    return StreamsRun(
        specs=list(specs), ticks=count, rate_pps=rate_pps, start_ns=sched.start_ns, first_ns=sched.first_ns,
        last_ns=sched.last_ns, elapsed_s=elapsed, max_late_us=sched.max_late_ns / 1000,
        refused={s.name: n for s, n in zip(specs, sched.refused)},
        records=records, wire_records=wire_records, events=list(runner.done), rx_stats=caps.stats(wires),
        sent_ns={s.name: stamps for s, stamps in zip(specs, sched.stamps_ns or [])},
    )
