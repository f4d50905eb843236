"""One end of a real RDMA conversation: a reliable-connected QP over RDMA CM, with Debian's pyverbs.

Run inside a lab namespace (``ip netns exec NS python -m traffic.verbs_peer ...``, an argv list).
The ``listen`` end waits for one connection on ``--address``:``--port``; the ``connect`` end
resolves ``--peer`` through RDMA CM -- which itself runs over RoCEv2 (UDP 4791), so it is
steered like the data -- and connects.  Both ends build their own CQ and RC QP and move it
through INIT/RTR/RTS with the CM's attributes, overriding the retransmission budget:
``--ack-timeout`` (local ACK timeout exponent: 4.096 us x 2^T) and ``--retry`` (retry count).

The end given ``--send`` posts SEND_WITH_IMM work requests (immediate = sequence number) at
``--rate`` per second until a ``stop`` line on stdin (at most ``--duration`` s), at most
``--depth`` outstanding; the other end keeps
receives posted and stops at the last sequence number.  Each end stops early on a completion
error, or after ``--stall-limit`` s without a completion while work is outstanding (the QP is
then reported "stalled").  Output: JSON lines on stdout -- ``{"event": "ready"}`` once
listening, ``{"event": "connected", ...}``, and one ``{"event": "result", ...}`` with the
completion times (CLOCK_REALTIME ns), completion errors by status, the QP's final state and
its timeout / retry count.

Exit status 0 when the program ran to its end (whatever the verdict), 2 on bad usage, 3 when
the connection could not be made (the reason is in a ``{"event": "error"}`` line).
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import sys
import time
from typing import Any, Dict, List, Optional

IMM_LAST = 0x80000000
QP_STATES = {0: "RESET", 1: "INIT", 2: "RTR", 3: "RTS", 4: "SQD", 5: "SQE", 6: "ERR"}
WC_STATUS = {1: "local length error", 2: "local QP operation error", 4: "local protection error",
             5: "work request flushed", 7: "bad response", 8: "local access error", 9: "remote invalid request",
             10: "remote access error", 11: "remote operation error", 12: "transport retry counter exceeded",
             13: "RNR retry counter exceeded", 21: "response timeout", 22: "general error"}
POLL_IDLE_S = 0.001  # the CQ is polled; between empty polls the thread sleeps at most this long


def emit(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def stop_requested() -> bool:
    """A ``stop`` line (or end of file) on stdin, without blocking."""
    if not select.select([sys.stdin], [], [], 0)[0]:
        return False
    line = sys.stdin.readline()
    return not line or line.strip() == "stop"


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_REALTIME)


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        import pyverbs.cm_enums as ce
        import pyverbs.enums as e

        self.args = args
        self.e, self.ce = e, ce
        self.cmid: Any = None
        self.listen_id: Any = None
        self.qp: Any = None
        self.cq: Any = None
        self.pd: Any = None
        self.mr: Any = None
        self.completions: List[int] = []
        self.errors: Dict[str, int] = {}
        self.first_error: Optional[str] = None
        self.posted = 0
        self.stalled = False

    # -- connection ------------------------------------------------------------------------------
    def _resources(self) -> None:
        from pyverbs.cq import CQ
        from pyverbs.mr import MR
        from pyverbs.pd import PD
        from pyverbs.qp import QP, QPCap, QPInitAttr

        e, a = self.e, self.args
        ctx = self.cmid.context
        self.pd = PD(ctx)
        depth = max(4, a.depth * 2)
        self.cq = CQ(ctx, depth * 2, None, None, 0)
        cap = QPCap(max_send_wr=depth, max_recv_wr=depth, max_send_sge=1, max_recv_sge=1)
        init = QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq, cap=cap)
        self.qp = QP(self.pd, init)  # RESET; the CM's attributes take it to INIT, RTR, RTS
        access = e.IBV_ACCESS_LOCAL_WRITE
        self.mr = MR(self.pd, a.size * depth, access)
        self.depth = depth

    def _modify(self, state: int) -> None:
        attr, mask = self.cmid.init_qp_attr(state)
        if state == self.e.IBV_QPS_RTS:
            attr.timeout = self.args.ack_timeout
            attr.retry_cnt = self.args.retry
            attr.rnr_retry = self.args.rnr_retry
            mask |= self.e.IBV_QP_TIMEOUT | self.e.IBV_QP_RETRY_CNT | self.e.IBV_QP_RNR_RETRY
        self.qp.modify(attr, mask)

    def _conn_param(self) -> Any:
        from pyverbs.cmid import ConnParam

        return ConnParam(qp_num=self.qp.qp_num, retry=self.args.retry, rnr_retry=self.args.rnr_retry)

    def connect(self) -> None:
        from pyverbs.cmid import CMID, AddrInfo

        ce, e, a = self.ce, self.e, self.args
        signal.alarm(int(a.connect_timeout))  # default action ends the process: bounded
        if a.role == "listen":
            ai = AddrInfo(src=a.address, src_service=str(a.port), port_space=ce.RDMA_PS_TCP, flags=ce.RAI_PASSIVE)
            self.listen_id = CMID(creator=ai)
            self.listen_id.listen()
            emit({"event": "ready", "t_ns": now_ns()})
            self.cmid = self.listen_id.get_request()
            self._resources()
            self._modify(e.IBV_QPS_INIT)
            self._post_recvs(self.depth)
            self._modify(e.IBV_QPS_RTR)
            self._modify(e.IBV_QPS_RTS)
            self.cmid.accept(self._conn_param())
        else:
            ai = AddrInfo(src=a.address, dst=a.peer, dst_service=str(a.port), port_space=ce.RDMA_PS_TCP)
            self.cmid = CMID(creator=ai)
            self._resources()
            self._modify(e.IBV_QPS_INIT)
            self._post_recvs(self.depth)
            self.cmid.connect(self._conn_param())
            self._modify(e.IBV_QPS_RTR)
            self._modify(e.IBV_QPS_RTS)
            self.cmid.establish()
        signal.alarm(0)
        emit({"event": "connected", "t_ns": now_ns(), "device": self.cmid.dev_name, "qpn": self.qp.qp_num,
              **self.qp_info()})

    # -- work ------------------------------------------------------------------------------------
    def _post_recvs(self, n: int) -> None:
        from pyverbs.wr import SGE, RecvWR

        for _ in range(n):
            sge = SGE(self.mr.buf, self.args.size, self.mr.lkey)
            self.qp.post_recv(RecvWR(num_sge=1, sg=[sge]))

    def _post_send(self, seq: int, last: bool) -> None:
        from pyverbs.wr import SGE, SendWR

        sge = SGE(self.mr.buf, self.args.size, self.mr.lkey)
        imm = (seq & 0x7FFFFFFF) | (IMM_LAST if last else 0)
        wr = SendWR(wr_id=seq, opcode=self.e.IBV_WR_SEND_WITH_IMM, num_sge=1, sg=[sge],
                    send_flags=self.e.IBV_SEND_SIGNALED, imm_data=imm)
        self.qp.post_send(wr)
        self.posted += 1

    def _poll(self) -> List[Any]:
        n, wcs = self.cq.poll(16)
        out = []
        for wc in wcs[:n]:
            if wc.status != self.e.IBV_WC_SUCCESS:
                name = WC_STATUS.get(wc.status, f"status {wc.status}")
                self.errors[name] = self.errors.get(name, 0) + 1
                if self.first_error is None:
                    self.first_error = name
            else:
                out.append(wc)
        return out

    def run_sender(self) -> None:
        """Post at ``rate`` until ``stop`` arrives on stdin (or ``duration`` passed); the last operation
        carries the LAST flag; then wait for every outstanding completion."""
        a = self.args
        interval = 1.0 / a.rate
        t0 = time.monotonic()
        seq = 0
        outstanding = 0
        last_seq: Optional[int] = None
        last_progress = next_stdin = t0
        while not self.errors:
            now = time.monotonic()
            if last_seq is None and (now >= t0 + a.duration or (now >= next_stdin and stop_requested())):
                last_seq = seq  # the next operation is the last
            next_stdin = now + 0.05 if now >= next_stdin else next_stdin
            while outstanding < a.depth and now >= t0 + seq * interval and (last_seq is None or seq <= last_seq):
                self._post_send(seq, seq == last_seq)
                seq += 1
                outstanding += 1
            if last_seq is not None and seq > last_seq and not outstanding:
                break
            done = self._poll()
            if done:
                t = now_ns()
                self.completions.extend([t] * len(done))
                outstanding -= len(done)
                last_progress = time.monotonic()
                continue
            if outstanding and time.monotonic() - last_progress > a.stall_limit:
                self.stalled = True
                break
            due = t0 + seq * interval - time.monotonic() if outstanding < a.depth else POLL_IDLE_S
            time.sleep(min(max(due, 0.0), POLL_IDLE_S))  # poll: the CQ, paced to the send schedule
        self.total = seq if last_seq is None else last_seq + 1

    def run_receiver(self) -> None:
        a = self.args
        self.total = None
        last_progress = time.monotonic()
        deadline = time.monotonic() + a.duration + a.stall_limit + 5.0  # bounded even if the sender vanished
        got_last = False
        while not got_last and not self.errors:
            done = self._poll()
            if done:
                t = now_ns()
                for wc in done:
                    self.completions.append(t)
                    if wc.imm_data & IMM_LAST:
                        got_last = True
                        self.total = (wc.imm_data & 0x7FFFFFFF) + 1
                self._post_recvs(len(done))
                last_progress = time.monotonic()
                continue
            if self.completions and time.monotonic() - last_progress > a.stall_limit:
                self.stalled = True
                break
            if time.monotonic() > deadline:
                self.stalled = True
                break
            time.sleep(POLL_IDLE_S)  # poll: the CQ

    def qp_info(self) -> Dict[str, Any]:
        e = self.e
        try:
            attr, _ = self.qp.query(e.IBV_QP_STATE | e.IBV_QP_TIMEOUT | e.IBV_QP_RETRY_CNT | e.IBV_QP_RNR_RETRY)
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the QP may be gone
            return {"qp_state": f"unknown ({exc})"}
        return {"qp_state": QP_STATES.get(attr.qp_state, str(attr.qp_state)), "ack_timeout": attr.timeout,
                "retry_cnt": attr.retry_cnt, "rnr_retry": attr.rnr_retry}

    def result(self) -> Dict[str, Any]:
        return {"event": "result", "end_ns": now_ns(), "role": self.args.role, "sender": self.args.send,
                "posted": self.posted,
                "expected": self.total, "completed": len(self.completions), "completions_ns": self.completions,
                "errors": self.errors, "first_error": self.first_error, "stalled": self.stalled,
                "stall_limit_s": self.args.stall_limit, **self.qp_info()}

    def close(self) -> None:
        for obj in (self.qp, self.mr, self.cq, self.pd, self.cmid, self.listen_id):
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # noqa: BLE001, S110 - best effort at exit; the kernel frees the rest
                pass


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m traffic.verbs_peer", description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=("listen", "connect"), required=True)
    p.add_argument("--address", required=True, help="this end's IPv4 address")
    p.add_argument("--peer", help="the listening end's IPv4 address (connect)")
    p.add_argument("--port", type=int, default=7471)
    p.add_argument("--send", action="store_true", help="this end posts the SENDs")
    p.add_argument("--rate", type=float, default=200.0, help="operations per second (sender)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of sending at most ('stop' on stdin ends it)")
    p.add_argument("--size", type=int, default=1024, help="bytes per operation")
    p.add_argument("--depth", type=int, default=16, help="outstanding operations at most")
    p.add_argument("--ack-timeout", type=int, default=16, help="local ACK timeout exponent (4.096 us x 2^T)")
    p.add_argument("--retry", type=int, default=6, help="retry count (0..6; rxe treats 7 as infinite)")
    p.add_argument("--rnr-retry", type=int, default=7, help="RNR retry count (7: infinite)")
    p.add_argument("--stall-limit", type=float, default=10.0, help="s without a completion before giving up")
    p.add_argument("--connect-timeout", type=float, default=60.0)
    a = p.parse_args(argv)
    if a.role == "connect" and not a.peer:
        p.error("--role connect needs --peer")
    if not (0 < a.ack_timeout < 32 and 0 <= a.retry <= 6 and 0 <= a.rnr_retry <= 7 and a.rate > 0 and a.depth > 0):
        p.error("ack timeout 1..31, retry 0..6, rnr-retry 0..7, positive rate and depth")
    return a


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    peer = Peer(args)
    try:
        try:
            peer.connect()
        except Exception as exc:  # noqa: BLE001 - one line for the caller, not a traceback
            emit({"event": "error", "stage": "connect", "error": f"{type(exc).__name__}: {exc}"})
            return 3
        if args.send:
            peer.run_sender()
        else:
            peer.run_receiver()
        emit(peer.result())
        return 0
    finally:
        peer.close()


if __name__ == "__main__":
    sys.exit(main())
