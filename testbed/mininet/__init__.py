"""The Mininet front end: a testbed lab built from the same YAML file inside Mininet, with its CLI.

Mininet creates the hosts, the wires and the switch (Mininet's
``LinuxBridge``, in a namespace of its own); everything else is the same
library code as ``testbed up``: ``realize.Builder`` attaches the wires on the
switch (partner bond for balance-xor/802.3ad) and builds the NIC (bond, VFs,
RDMA function, clsact, RPS), and the offload agent runs as usual.

::

    LagTopo (topo.py)   the YAML model as a Mininet Topo: plain data
    LagNet  (net.py)    Mininet + the lab record, named marked namespaces, the NIC, the agent, teardown
    LagCLI  (cli.py)    Mininet's CLI + fail, restore, lagstatus, traffic, HOST:PORT links, VF commands
    custom.py           ``mn --custom`` entry point (topos, CLI, Mininet for mn)
    session.py          ``testbed mininet FILE``: build, CLI, always clean up

Every Mininet node's network namespace is bind-mounted as
``/run/netns/<lab>-<host>`` (the switch as ``<lab>-switch``) after its ``lo``
got the lab's mark, and recorded in the lab record first, so ``status``,
``fail``, the agent, ``ip netns exec``, ``testbed down`` and ``testbed clean``
treat a Mininet lab like any other.
"""
