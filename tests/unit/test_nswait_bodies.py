"""nswait's raw RTM_NEWNSID / RTM_GETNSID bodies, and reading the id back out of a reply."""

from __future__ import annotations

import struct

from testbed import nswait, rawnl


def test_fd_bodies_carry_the_fd_and_an_any_id():
    assert nswait._fd_body(7) == b"\0" * 4 + struct.pack("=HHI", 8, nswait.NETNSA_FD, 7)
    assert nswait._fd_body(7, nswait.NSID_ANY) == nswait._fd_body(7) + struct.pack("=HHi", 8, nswait.NETNSA_NSID, -1)


def test_nsid_of_a_reply():
    body = b"\0" * 4 + struct.pack("=HHi", 8, nswait.NETNSA_NSID, 42)
    msg = rawnl.header(len(body), nswait.RTM_NEWNSID, 0, 1) + body
    assert nswait._nsid_of(msg, 0, len(msg)) == 42
    bare = rawnl.header(4, nswait.RTM_NEWNSID, 0, 1) + b"\0" * 4
    assert nswait._nsid_of(bare, 0, len(bare)) == -1
