"""``nl.open_ns`` used from several threads: pyroute2 makes a socket per thread, and none of them may
close a descriptor it does not own (the 7.3 guest showed the traffic sender's socket dying with EBADF
when ``open_ns`` handed pyroute2 a ``fileno=``)."""

from __future__ import annotations

import socket
import threading

import pytest
from pyroute2 import netns

from testbed.nl import open_ns

pytestmark = pytest.mark.integration


def test_open_ns_from_many_threads_closes_no_foreign_descriptor():
    name = "tbnlthreads"
    netns.create(name)
    try:
        ipr = open_ns(name)
        mine, errors = [], []

        def use() -> None:
            try:
                for _ in range(5):
                    assert ipr.get_links()
                    mine.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=use) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ipr.close()
        assert not errors, errors
        closed = 0
        for s in mine:
            try:
                s.getsockname()
            except OSError:
                closed += 1
            s.close()
        assert len(mine) == 20 and closed == 0
    finally:
        netns.remove(name)
