"""Traffic verifications on a running lab: failover, hash distribution, bond transmit hash, RDMA.

``lab.traffic`` (``testbed.lab.Lab``) is a ``LabTraffic``; each method runs
real traffic through the lab's namespaces (``traffic`` engine: prebuilt
frames from raw sockets, kernel-timestamped capture at the destinations and
on the switch side of the wires) and returns a result dataclass with the
measured figures, the checks against stated tolerances, ``.passed``,
``.verdict`` and ``.to_dict()`` (also appended to ``lab.results``).

Modules:

- ``lab_traffic`` -- ``LabTraffic``: the thin facade: failover, rdma, hash, bond_hash -> a frozen plan -> a run
- ``failover_run``, ``hashdist_run``, ``txhash_run`` -- one run per verification (touches the kernel),
  beside its pure judge; ``context`` -- what every run needs of the lab
- (the stream engine itself is ``traffic.streams``: streams on one schedule, captured at both ends and on the wires)
- ``faults``      -- port failures prepared ahead: carrier loss, LACPDUs blocked
- ``labview``     -- which ports the bond, the switch's partner bond and the agent use
- ``stations``    -- targets and peers resolved from the topology (pure)
- ``failover``, ``hashdist``, ``txhash``, ``psn``, ``checks`` -- the verdicts (pure; ``failover_result``
  and ``windows`` hold the failover verdict's data and its time-window arithmetic)
- ``verbs_run``   -- a real RC queue pair (Soft-RoCE, RDMA CM) through a failover; ``verbs`` its verdict (pure)
- ``render``      -- text tables;  ``plot`` (``verbs_plot``) -- PNG figures (matplotlib, the ``plot`` extra)

Importing this package loads neither scapy nor matplotlib.
"""

from testbed.verify.failover import FailoverResult, FailoverTolerance, RdmaResult
from testbed.verify.hashdist import HashResult, HashTolerance
from testbed.verify.lab_traffic import LabTraffic
from testbed.verify.txhash import BondHashResult

__all__ = [
    "BondHashResult",
    "FailoverResult",
    "FailoverTolerance",
    "HashResult",
    "HashTolerance",
    "LabTraffic",
    "RdmaResult",
]
