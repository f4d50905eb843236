"""``LabTraffic``: the verifications on a running lab (``lab.traffic``), each returning a result with a verdict.

::

    lab = Lab.up("topologies/active-backup.yaml")
    r = lab.traffic.failover(targets=["server:vf0", "server:rdma0"], fail="server:pf0")
    print(r.summary, r.verdict)   # vf0 rx gap 91.0 ms (bond 46.0 ms), lost 8 (0 during the agent's ... PASS
    assert r.lost == 0            # nothing lost beyond the bond's own failover window and the agent's reaction

Streams run between a target on the NIC host (``server:vf0``,
``server:rdma0``, ``server:bond``) and a plain host (``client``), in both
directions by default: ``rx`` client -> target exercises the NIC's RX
steering, ``tx`` target -> client its TX steering.  Which port carried each
frame is read on the switch side of the wires.  Every result is appended
to ``lab.results`` (``to_dict()``, with its ``kind``), which the pytest
plugin attaches to the JUnit report.

Methods (tolerances are dataclasses with stated defaults; see the modules):

- ``failover(target="server:vf0", fail="server:pf0", *, targets=None, rate_pps=None, duration_s=3.0,
  fail_at_s=1.0, restore_after_s=None, flap=None, directions=("rx", "tx"), flows=1, compare_bond=True,
  fault="carrier", tolerance=None, pcap=None, peer=None) -> FailoverResult`` -- the port fails
  ``fail_at_s`` into the streams (and is repaired ``restore_after_s`` later; ``flap="server:pf1"``
  fails that port at the same moment, the bonding selftests' recovery case; the repair waits at least
  0.5 s after the failure's netlink call returned); a bond stream per
  direction runs beside the targets' (``compare_bond``).  Without ``restore_after_s`` the port stays
  failed (``lab.restore(...)`` repairs it).  ``fail="server:active"`` picks the bond's active port.
  ``targets`` takes ranges: ``["server:vf0-vf63"]`` (64 VFs), ``["server:vfs"]`` (every VF of the host).
  ``rate_pps=None``: 100 per stream, lowered for many streams so that all of them together send at
  most ``traffic.pacing.FRAME_BUDGET_PPS`` (400 frames/s: 64 VFs x 2 directions + the bond's run at
  3 pps each).  ``family=6`` runs every stream over IPv6 (a dual-stack lab), 4 over IPv4; None (the
  default): IPv4 where a target has it, IPv6 for an IPv6-only VF.  ``agent=False`` is the negative
  control: the agent is stopped before the fault (and left stopped) and the result passes when every
  offload stream lost packets beyond the bond's window.
- ``rdma(target="server:rdma0", fail="server:pf0", *, qps=4, ...) -> RdmaResult`` -- the same with
  RoCEv2 (one flow per QP; ``family=6``: RoCEv2 over IPv6); ``fail=None`` checks integrity without a failure.
- ``hash(flows=256, fail=None, *, target="server:vf0", directions=("rx", "tx"), packets_per_flow=4,
  rate_pps=400, restore=True, fault="carrier", tolerance=None, pcap=None, peer=None) -> HashResult``
  -- active-active labs (offload ``hash`` / ``vf-split``): phases before / failed / restored.
- ``bond_hash(policy=None, *, host=None, flows=64, stack_flows=16, packets_per_flow=2, rate_pps=500,
  pcap=None) -> BondHashResult`` -- balance-xor / 802.3ad: ``policy`` one of layer2, layer2+3, layer3+4,
  a list of them, or "all"; the bond's policy is switched over netlink for the run and put back.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from testbed.errors import UsageError
from testbed.progress import Progress
from testbed.verify import context, failover_run, hashdist_run, stations, txhash_run
from testbed.verify.context import DIRECTIONS, RunContext
from testbed.verify.failover import FailoverResult, FailoverTolerance, RdmaResult
from testbed.verify.hashdist import HashResult, HashTolerance
from testbed.verify.txhash import BondHashResult


class LabTraffic:
    """``lab.traffic``: each method makes a frozen plan, runs it (``*_run`` modules) and records the result."""

    def __init__(self, lab: Any, progress: Optional[Progress] = None) -> None:
        self.ctx = RunContext(lab, progress)
        self.lab, self.topo, self.view = lab, lab.topo, self.ctx.view

    @property
    def progress(self) -> Progress:
        return self.ctx.progress

    def failover(self, target: str = "server:vf0", fail: Optional[str] = "server:pf0", *,
                 targets: Optional[Sequence[str]] = None, rate_pps: Optional[float] = None, duration_s: float = 3.0,
                 fail_at_s: float = 1.0, restore_after_s: Optional[float] = None, flap: Optional[str] = None,
                 directions: Union[str, Sequence[str]] = DIRECTIONS, flows: int = 1, compare_bond: bool = True,
                 fault: str = "carrier", tolerance: Optional[FailoverTolerance] = None, pcap: Optional[str] = None,
                 peer: Optional[str] = None, attempts: int = 2, agent: bool = True,
                 family: Optional[int] = None) -> FailoverResult:
        plan = failover_run.FailoverPlan(
            tuple(targets or [target]), fail, rate_pps, duration_s, fail_at_s, restore_after_s, flap,
            context.directions(directions), flows, compare_bond, fault, tolerance or FailoverTolerance(), pcap, peer,
            agent, family)
        return self._run(FailoverResult, plan, attempts)

    def rdma(self, target: str = "server:rdma0", fail: Optional[str] = "server:pf0", *, qps: int = 4,
             rate_pps: Optional[float] = None, duration_s: float = 3.0, fail_at_s: float = 1.0,
             restore_after_s: Optional[float] = None, directions: Union[str, Sequence[str]] = DIRECTIONS,
             compare_bond: bool = True, fault: str = "carrier", tolerance: Optional[FailoverTolerance] = None,
             pcap: Optional[str] = None, peer: Optional[str] = None, attempts: int = 2,
             family: Optional[int] = None) -> RdmaResult:
        t = stations.resolve_target(self.topo, target)
        if t.kind != "rdma":
            rdma = t.host.nic.rdma if t.host.nic else None
            raise UsageError(f"{target} is a {t.kind}, not an RDMA function",
                             fix=f"use {t.host.name}:{rdma.name}" if rdma else "this lab has no RDMA function "
                                                                              "(topology: rdma: true)")
        plan = failover_run.FailoverPlan(
            (target,), fail, rate_pps, duration_s, fail_at_s, restore_after_s, None,
            context.directions(directions), qps, compare_bond, fault, tolerance or FailoverTolerance(), pcap, peer,
            family=family)
        return self._run(RdmaResult, plan, attempts)

    def verbs(self, target: str = "server:rdma0", fail: Optional[str] = "auto", *, agent: bool = True,
              **kwargs: Any) -> Any:
        """A real RDMA workload through a failover (``verbs_run.run_verbs``); ``agent=False`` is the negative
        control (the agent stopped before the fault; passes when the traffic died)."""
        from testbed.verify.verbs_run import run_verbs

        return self.ctx.record(run_verbs(self.lab, target, fail=fail, agent=agent, progress=self.progress, **kwargs))

    def _run(self, cls: Any, plan: failover_run.FailoverPlan, attempts: int) -> Any:
        return self.ctx.record(failover_run.with_attempts(
            lambda settle_on: failover_run.run(self.ctx, cls, plan, settle_on), plan, attempts, self.ctx.progress))

    def hash(self, flows: int = 256, fail: Optional[str] = None, *, target: str = "server:vf0",
             directions: Union[str, Sequence[str]] = DIRECTIONS, packets_per_flow: int = 4,
             rate_pps: float = 400.0, restore: bool = True, fault: str = "carrier",
             tolerance: Optional[HashTolerance] = None, pcap: Optional[str] = None,
             peer: Optional[str] = None) -> HashResult:
        plan = hashdist_run.HashPlan(flows, fail, target, context.directions(directions), packets_per_flow,
                                     rate_pps, restore, fault, tolerance or HashTolerance(), pcap, peer)
        return self.ctx.record(hashdist_run.run(self.ctx, plan))

    def bond_hash(self, policy: Union[None, str, Sequence[str]] = None, *, host: Optional[str] = None,
                  flows: int = 64, stack_flows: int = 16, packets_per_flow: int = 2,
                  rate_pps: float = 500.0, pcap: Optional[str] = None) -> BondHashResult:
        plan = txhash_run.BondHashPlan(policy if policy is None or isinstance(policy, str) else tuple(policy),
                                       host, flows, stack_flows, packets_per_flow, rate_pps, pcap)
        return self.ctx.record(txhash_run.run(self.ctx, plan))

