"""``RawSender``: prebuilt frames out of an AF_PACKET socket opened in a namespace.

The socket is created on a thread that entered the namespace (see ``netns``)
and bound to one interface there with protocol 0, so it never receives.
Packet ``i`` of a send is ``templates[i % len(templates)]`` stamped with
``seq = first_seq + i`` and the current CLOCK_REALTIME; frames go out in that
order.  With ``rate_pps`` the loop is deadline-paced: packet ``i`` is due at
``start + i / rate`` (``traffic.pacing.run_schedule``, the engine's one send
loop).

A frame the device refuses (ENOBUFS: a bond with no usable port drops it
so; ENETDOWN: the interface is admin down) is not retried -- it was sent at its time and lost there, exactly what a
NIC would do; ``SendResult.refused`` counts them, ``sent`` includes them.

Public API:
    SendResult(sent, first_seq, start_ns, first_ns, last_ns, elapsed_s, rate_pps, max_late_us,
               refused)
        .to_dict() -> dict
    RawSender(netns: str | None, ifname: str)            -- context manager
    RawSender.send(templates, *, count=None, duration_s=None, rate_pps=None, first_seq=0,
        start_mono_ns=None) -> SendResult        (exactly one of count / duration_s)
    RawSender.send_frames(frames: Sequence[bytes], *, count=None, duration_s=None,
        rate_pps=None, start_mono_ns=None) -> SendResult       (fixed bytes, no stamping)
    RawSender.close() -> None

``start_mono_ns`` (CLOCK_MONOTONIC, ``time.monotonic_ns()``) sets the origin
of the schedule, so that another thread can act at known offsets from it
(``run.run_stream`` does); by default the schedule starts at the call.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from testbed.errors import TestbedError, UsageError
from traffic.netns import run_in_netns
from traffic.pacing import Lane, Schedule, run_schedule

if TYPE_CHECKING:  # scapy-free at run time
    from traffic.packets import FrameTemplate


@dataclass(frozen=True)
class SendResult:
    sent: int
    first_seq: int
    start_ns: int  # CLOCK_REALTIME origin of the schedule: frame i is due at start + i / rate
    first_ns: int  # CLOCK_REALTIME stamp of the first frame (its tx_ns)
    last_ns: int  # ... of the last frame
    elapsed_s: float
    rate_pps: float  # achieved: (sent - 1) / (last - first)
    max_late_us: float  # worst lateness against the pacing schedule (0 unpaced)
    refused: int  # frames the device refused (ENOBUFS), e.g. a bond with no usable port

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _open_tx_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.bind((ifname, 0))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.ENODEV:
            raise UsageError(f"no interface {ifname} here", fix="check the interface name") from None
        raise
    return sock


class RawSender:
    def __init__(self, netns: Optional[str], ifname: str) -> None:
        self.netns = netns
        self.ifname = ifname
        where = f"netns {netns}" if netns else "this namespace"
        try:
            self.sock = run_in_netns(netns, _open_tx_socket, ifname)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc.message}", fix=exc.fix) from None
        except PermissionError:
            raise TestbedError(f"{where}: {ifname}: raw socket refused", fix="run as root") from None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self,
        templates: Sequence[FrameTemplate],
        *,
        count: Optional[int] = None,
        duration_s: Optional[float] = None,
        rate_pps: Optional[float] = None,
        first_seq: int = 0,
        start_mono_ns: Optional[int] = None,
    ) -> SendResult:
        if not templates:
            raise UsageError(f"{self.ifname}: nothing to send", fix="pass at least one template")
        stamps = [t.stamp for t in templates]
        return self._run(stamps, count, duration_s, rate_pps, first_seq, start_mono_ns)

    def send_frames(
        self,
        frames: Sequence[bytes],
        *,
        count: Optional[int] = None,
        duration_s: Optional[float] = None,
        rate_pps: Optional[float] = None,
        start_mono_ns: Optional[int] = None,
    ) -> SendResult:
        if not frames:
            raise UsageError(f"{self.ifname}: nothing to send", fix="pass at least one frame")
        stamps = [_fixed(f) for f in frames]
        if count is None and duration_s is None:
            count = len(frames)
        return self._run(stamps, count, duration_s, rate_pps, 0, start_mono_ns)

    # -- the loops -----------------------------------------------------------

    def _run(
        self,
        stamps: List[Callable[[int, int], Any]],
        count: Optional[int],
        duration_s: Optional[float],
        rate_pps: Optional[float],
        first_seq: int,
        start_mono_ns: Optional[int],
    ) -> SendResult:
        if (count is None) == (duration_s is None):
            raise UsageError(f"{self.ifname}: give exactly one of count and duration_s")
        if (count is not None and count < 1) or (duration_s is not None and duration_s <= 0):
            raise UsageError(f"{self.ifname}: count/duration must be positive")
        if rate_pps is not None and rate_pps <= 0:
            raise UsageError(f"{self.ifname}: rate_pps {rate_pps} must be positive")
        sched = run_schedule([Lane(self.sock.send, stamps, first_seq)], count=count, duration_s=duration_s,
                             rate_pps=rate_pps, start_mono_ns=start_mono_ns)
        return _result(sched, first_seq)


def _fixed(frame: bytes) -> Callable[[int, int], bytes]:
    def stamp(seq: int, tx_ns: int) -> bytes:
        return frame

    return stamp


def _result(sched: Schedule, first_seq: int) -> SendResult:
    span = (sched.last_ns - sched.first_ns) / 1e9
    rate = (sched.sent - 1) / span if sched.sent > 1 and span > 0 else 0.0
    return SendResult(sent=sched.sent, first_seq=first_seq, start_ns=sched.start_ns, first_ns=sched.first_ns,
                      last_ns=sched.last_ns, elapsed_s=sched.elapsed_s, rate_pps=rate,
                      max_late_us=sched.max_late_ns / 1000, refused=sched.refused[0])
