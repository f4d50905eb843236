"""Mininet custom file: ``sudo mn --custom testbed/mininet/custom.py --topo lag,topologies/active-backup.yaml``.

Gives ``mn``::

    topos   = {"lag": LagTopo}   --topo lag,FILE[,name=LAB]: the topology file as a Mininet topology
    Mininet = LagNet             the network class mn builds: the NIC (bond, VFs, RDMA, tc), the
                                 offload agent, and removal of everything when mn ends
    CLI     = LagCLI             fail, restore, lagstatus, traffic, link HOST:PORT, VF commands

(``mn`` documents that a custom file may replace its globals, CLI included.)
The switch is always Mininet's LinuxBridge whatever ``--switch`` says; no
OpenFlow controller is needed (mn falls back to none when it finds none).

``mn`` runs under Debian's ``/usr/bin/python3`` and ``exec()``s this file
without ``__file__``: the repository is found from the code object's file
name, and when the project's dependencies (pyroute2, ...) are not
importable, the repository's ``.venv`` site-packages (made by ``tools/setup``
from the same Debian Python) are added to ``sys.path`` and to ``PYTHONPATH``
(the offload agent is started as ``sys.executable -m testbed agent``).
"""


def _load():
    import os
    import sys

    here = os.path.abspath(sys._getframe().f_code.co_filename)
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site = os.path.join(root, ".venv", "lib", ver, "site-packages")
        if not os.path.isdir(site):
            raise ImportError(f"testbed: pyroute2 is not importable and {site} does not exist; "
                              f"run tools/setup, or run mn with the project's Python: "
                              f"sudo {root}/.venv/bin/python /usr/bin/mn --custom ...") from None
        sys.path.append(site)
        # the agent runs as `sys.executable -m testbed agent`: it needs the same packages
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))
    from testbed.mininet.cli import LagCLI
    from testbed.mininet.net import LagNet
    from testbed.mininet.topo import LagTopo

    return {"lag": LagTopo}, LagNet, LagCLI


topos, Mininet, CLI = _load()
del _load
