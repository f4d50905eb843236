"""The offload agent: the NIC driver's LAG logic (ice, mlx5) as a process that mirrors bond state into tc rules.

Modules, each with one job:

* ``bondnl``    wire format of a bond port's IFLA_INFO_SLAVE_DATA (what pyroute2 lacks)
* ``state``     read the bond and its ports over netlink -> frozen ``BondState``
* ``mapping``   bucket -> port tables (native, failover, recovery); pure
* ``rules``     ``desired_rules(nic, state)`` / ``plan()``: the flower rules; pure
* ``reconcile`` one NIC: state -> plan -> diff against the kernel -> phased apply
* ``events``    link-event sockets per namespace, namespace-deletion watch
* ``report``    agent.log / agent.json
* ``loop``      the process: select over every NIC namespace
* ``launcher``  run in-process, or start detached and wait until ready
"""
