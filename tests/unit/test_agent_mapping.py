"""Bucket -> port tables: every port count, bucket count and set of live ports (pure, no root)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from testbed.agent import mapping

PORTS = (1, 2, 3, 4)
BUCKETS = (1, 2, 4, 16)
CASES = [(p, b) for p in PORTS for b in BUCKETS]


def subsets(n: int):
    for k in range(n + 1):
        for combo in itertools.combinations(range(n), k):
            yield frozenset(combo)


@pytest.mark.parametrize("ports,buckets", CASES)
def test_table_is_a_power_of_two_holding_every_bucket(ports, buckets):
    size = mapping.table_size(ports, buckets)
    assert size & (size - 1) == 0
    assert ports * buckets <= size < 2 * ports * buckets


@pytest.mark.parametrize("ports,buckets", CASES)
def test_native_mapping_with_every_port_live(ports, buckets):
    table = mapping.select(ports, buckets, frozenset(range(ports)))
    size = len(table)
    assert table == mapping.native(ports, size)
    counts = Counter(table)
    assert set(counts) == set(range(ports))
    assert max(counts.values()) - min(counts.values()) <= 1  # as even as integers allow
    if ports * buckets == size:  # mlx5's layout: entry i -> port i // buckets
        assert table == tuple(i // buckets for i in range(size))


@pytest.mark.parametrize("ports,buckets", CASES)
def test_every_live_set(ports, buckets):
    native = mapping.select(ports, buckets, frozenset(range(ports)))
    for live in subsets(ports):
        table = mapping.select(ports, buckets, live)
        assert len(table) == len(native)
        if not live:
            assert set(table) == {None}, "no live port: everything drops"
            continue
        for i, port in enumerate(table):
            assert port in live, f"entry {i} points at dead port {port}"
            if native[i] in live:
                assert port == native[i], f"entry {i} of live port {native[i]} moved"


@pytest.mark.parametrize("ports,buckets", CASES)
def test_a_failure_moves_only_the_dead_ports_entries(ports, buckets):
    for live in subsets(ports):
        before = mapping.select(ports, buckets, live)
        for q in live:
            after = mapping.select(ports, buckets, live - {q})
            for i, (b, a) in enumerate(zip(before, after)):
                if b != q:
                    assert a == b, f"live={sorted(live)} -{q}: entry {i} moved {b}->{a} though {b} still lives"


@pytest.mark.parametrize("ports,buckets", CASES)
def test_a_recovery_moves_entries_only_onto_the_recovered_port(ports, buckets):
    for live in subsets(ports):
        before = mapping.select(ports, buckets, live)
        for p in set(range(ports)) - live:
            after = mapping.select(ports, buckets, live | {p})
            for i, (b, a) in enumerate(zip(before, after)):
                if a != b:
                    assert a == p, f"live={sorted(live)} +{p}: entry {i} moved {b}->{a}"


@pytest.mark.parametrize("ports,buckets", CASES)
def test_the_table_depends_only_on_the_live_set(ports, buckets):
    """No history: any path of failures and recoveries ends in the same table (a restarted agent agrees)."""
    full = frozenset(range(ports))
    for target in subsets(ports):
        path = [full, frozenset(), target, full - target, target]
        tables = [mapping.select(ports, buckets, live) for live in path]
        assert tables[2] == tables[4] == mapping.select(ports, buckets, target)
        assert tables[0] == mapping.native(ports, len(tables[0]))


def test_two_ports_sixteen_buckets_failover_and_back():
    native = mapping.select(2, 16, {0, 1})
    assert native == (0,) * 16 + (1,) * 16
    assert mapping.select(2, 16, {1}) == (1,) * 32
    assert mapping.select(2, 16, {0}) == (0,) * 32
    assert mapping.select(2, 16, set()) == (None,) * 32


def test_dead_port_entries_spread_round_robin_over_survivors():
    table = mapping.select(4, 16, {1, 2, 3})
    moved = Counter(table[0:16])
    assert set(moved) == {1, 2, 3}
    assert sorted(moved.values()) == [5, 5, 6]


def test_three_ports_fold_into_the_next_power_of_two():
    assert mapping.table_size(3, 16) == 64
    assert sorted(Counter(mapping.native(3, 64)).values()) == [21, 21, 22]


def test_vf_split_is_one_entry_per_port():
    assert mapping.select(2, 1, {0, 1}) == (0, 1)
    assert mapping.select(2, 1, {1}) == (1, 1)  # all halves to the survivor
    assert mapping.select(2, 1, {0, 1}) == (0, 1)  # the same halves back


def test_by_name():
    assert mapping.by_name((0, 1, None), ("pf0", "pf1")) == ("pf0", "pf1", None)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        mapping.table_size(0, 16)
    with pytest.raises(ValueError):
        mapping.next_pow2(0)
