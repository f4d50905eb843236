"""The offload agent: the NIC driver's LAG logic (ice, mlx5) as a process that mirrors bond state into tc rules.

Modules, each with one job:

The bond's state reader, its wire format and which ports it uses live below, in
``testbed.bond``; other layers use of the agent only ``launcher`` (start/stop), ``status``
(the typed ``agent.json`` reader) and ``mapping`` (the pure bucket table).

* ``mapping``   bucket -> port tables (native, failover, recovery); pure
* ``rules``     ``desired_rules(nic, state)`` / ``plan()``: the flower rules; pure
* ``reconcile`` one NIC: state -> plan -> diff against the kernel -> phased apply
* ``events``    link-event sockets per namespace, namespace-deletion watch
* ``report``    agent.log / agent.json
* ``loop``      the process: select over every NIC namespace
* ``launcher``  run in-process, or start detached and wait until ready

This package's ``__init__`` imports nothing: the CLI reads ``AGENT_TIMEOUT`` from it while registering
its options, and every command pays that.
"""

AGENT_TIMEOUT = 120.0  # seconds for the agent's first reconcile: sized for a loaded TCG guest
