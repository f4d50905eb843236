"""The failover gap bound a bond's configuration promises (issue 12, item 6): MII, ARP, LACP; within or not."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from testbed.topology import Bond
from testbed.verify.bounds import GapBound, failure_bound, judge_gaps, notice_ms


def test_carrier_fault_mii_monitor_is_miimon_plus_downdelay():
    b = failure_bound(Bond(mode="active-backup", miimon=10, downdelay=20), "carrier", 100.0)
    assert b == GapBound(30.0, "mii", "miimon 10 + downdelay 20", 10.0)
    assert b.limit_ms == 40.0 and b.within(40.0) and not b.within(40.1) and b.within(None) is None
    assert b.describe() == "bound 30 ms (miimon 10 + downdelay 20) + 10 ms packet spacing"


def test_carrier_fault_arp_monitor_is_interval_times_missed_probes():
    bond = SimpleNamespace(mode="active-backup", miimon=0, downdelay=0, arp_interval=100)
    b = failure_bound(bond, "carrier", 500.0)
    assert (b.ms, b.monitor, b.basis, b.spacing_ms) == (200.0, "arp", "arp_interval 100 x arp_missed_max 2", 2.0)
    bond.arp_missed_max = 3
    assert failure_bound(bond, "carrier", 500.0).ms == 300.0


@pytest.mark.parametrize("rate, ms, basis", [("fast", 3000.0, "LACP short timeout, lacp_rate fast"),
                                             ("slow", 90000.0, "LACP long timeout, lacp_rate slow"),
                                             (None, 90000.0, "LACP long timeout, lacp_rate slow")])
def test_lacp_fault_is_the_lacp_timeout(rate, ms, basis):
    b = failure_bound(Bond(mode="802.3ad", miimon=10, lacp_rate=rate), "lacp", 100.0)
    assert (b.ms, b.monitor, b.basis) == (ms, "lacp", basis)


def test_no_bound_where_the_configuration_promises_none():
    assert failure_bound(Bond(mode="active-backup", miimon=10), "lacp", 100.0) is None  # no LACP there
    assert failure_bound(Bond(mode="balance-xor", miimon=0), "carrier", 100.0) is None  # no monitor at all
    assert judge_gaps(None, {"vf0 rx": ("vf", 12.0)}) == {}


def test_gaps_are_judged_per_stream_and_for_bond_and_offload():
    b = failure_bound(Bond(mode="active-backup", miimon=10), "carrier", 100.0)  # limit 20 ms
    out = judge_gaps(b, {"vf0 rx": ("vf", 112.0), "rdma0 rx": ("rdma", None), "bond rx": ("bond", 18.5)})
    assert out["ms"] == 10.0 and out["limit_ms"] == 20.0 and out["monitor"] == "mii"
    assert out["streams"]["vf0 rx"] == {"kind": "vf", "gap_ms": 112.0, "within": False, "over_ms": 92.0}
    assert out["streams"]["rdma0 rx"]["within"] is None
    assert out["streams"]["bond rx"]["within"] is True and out["streams"]["bond rx"]["over_ms"] == 0.0
    assert (out["bond_within"], out["offload_within"]) == (True, False)
    out = judge_gaps(b, {"vf0 rx": ("vf", 15.0)})
    assert (out["bond_within"], out["offload_within"]) == (None, True)


def test_the_agents_notice_grows_with_the_arp_monitor_only():
    """The ARP/NS monitor notifies netlink late, so the judge lets the agent hear of a failover two ARP
    intervals later than with miimon; a miimon bond keeps the tolerance as given."""
    assert notice_ms(Bond(mode="active-backup", miimon=10), 150.0) == 150.0
    arp = Bond(mode="active-backup", miimon=0, settings=(("arp_interval", 100), ("arp_ip_target", ("198.18.0.100",))))
    assert notice_ms(arp, 150.0) == 350.0
    assert notice_ms(arp, 500.0) == 700.0


def test_the_arp_bound_reads_a_topologys_bond_options():
    arp = Bond(mode="active-backup", miimon=0, settings=(("arp_interval", 100), ("arp_missed_max", 3)))
    assert failure_bound(arp, "carrier", 100.0).ms == 300.0
