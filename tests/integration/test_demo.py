"""The main job, as the README's `tools/demo` runs it: `testbed demo --json` as a user's subprocess.

Up the default lab with its agent, ping the bond and vf0, fail the active port, see the bond and the
offload move, ping again, restore, real VF/RDMA/bond traffic through a second failover, down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pyroute2 import netns

from testbed import labstore

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_fails_over_bond_and_offload_and_leaves_nothing():
    before = sorted(netns.listnetns())
    res = subprocess.run([sys.executable, "-m", "testbed", "demo", "--name", "itdemo", "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=900, check=False)
    assert res.stdout, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert res.returncode == 0 and out["verdict"] == "PASS", (out, res.stderr[-3000:])
    # the bond and the offload left the failed port for the survivor
    assert out["before"]["active_port"] == out["failed_port"] == "pf0"
    assert out["after"]["active_port"] == out["survivor"] == "pf1"
    assert out["before"]["offload_usable"] == ["pf0"] and out["after"]["offload_usable"] == ["pf1"]
    assert out["after"]["ports"] == {"pf0": False, "pf1": True}
    assert out["bond_moved_ms"] > 0 and out["offload_moved_ms"] >= out["bond_moved_ms"] - 50
    for when in ("before", "after"):
        assert set(out[when]["ping"]) == {"bond", "vf0"}
        assert all(p["received"] > 0 for p in out[when]["ping"].values()), out[when]["ping"]
    # real traffic through the second failover: nothing lost beyond the bond's own window
    tr = out["traffic"]
    assert tr["verdict"] == "PASS" and tr["lost"] == 0 and not tr["failed"], tr
    assert tr["targets"] == ["server:vf0", "server:rdma0"] and tr["fail"] == "server:pf0"
    assert set(tr["offload_gap_ms"]) == {"vf0 rx", "vf0 tx", "rdma0 rx", "rdma0 tx"}
    assert all(g is not None for g in tr["bond_gap_ms"].values())
    print(f"demo: bond moved after {out['bond_moved_ms']} ms, offload after {out['offload_moved_ms']} ms; "
          f"traffic: {tr['summary']}")
    # everything removed
    assert labstore.try_read("itdemo") is None
    assert sorted(netns.listnetns()) == before
