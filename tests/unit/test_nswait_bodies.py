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


def test_lost_events_resync_from_the_kernels_ids(monkeypatch):
    """ENOBUFS on the event socket (a 256-VF lab's ~520 nsid messages): the waiter asks the kernel which ids
    still exist instead of failing `down`."""
    import errno as _errno
    import struct as _struct

    from testbed import nswait

    def msg(nsid: int) -> bytes:
        attr = _struct.pack("=HHi", 8, nswait.NETNSA_NSID, nsid)
        return _struct.pack("=IHHII", 16 + 4 + len(attr), nswait.RTM_NEWNSID, 0, 0, 0) + bytes(4) + attr

    monkeypatch.setattr(nswait.nlpipe, "dump", lambda sock, t, body, what: [msg(5)])

    class Sock:
        def __init__(self):
            self.calls = 0

        def fileno(self):
            return r

        def recv(self, n):
            self.calls += 1
            raise OSError(_errno.ENOBUFS, "No buffer space available")

        def close(self):
            pass

    import os as _os
    r, w = _os.pipe()
    _os.write(w, b"x")  # readable once: select() wakes, recv() reports the overflow
    waiter = nswait.NetnsDeletion()
    waiter.sock.close()
    waiter.sock = Sock()
    waiter.pending = {5: "lab-vf0", 7: "lab-vf1"}
    monkeypatch.setattr(nswait.NetnsDeletion, "_resync", lambda self: self.pending.pop(7, None))
    try:
        waiter.wait(0.5)
    except nswait.WaitTimeout as exc:
        assert "lab-vf0" in str(exc) and "lab-vf1" not in str(exc)
    finally:
        _os.close(r)
        _os.close(w)
    assert waiter.sock.calls >= 1 and waiter.pending == {5: "lab-vf0"}
    monkeypatch.undo()
    monkeypatch.setattr(nswait.nlpipe, "dump", lambda sock, t, body, what: [msg(5)])
    waiter.pending = {5: "lab-vf0", 7: "lab-vf1"}
    nswait.NetnsDeletion._resync(waiter)
    assert waiter.pending == {5: "lab-vf0"}


def test_the_destruction_deadline_grows_with_the_namespaces(monkeypatch):
    """The kernel destroys removed namespaces batch after batch: a 256-VF lab's 260 get far more than a
    small lab's 15 s (130 of them took longer than that on 6.12 in a loaded TCG guest), and ``delete_netns``
    waits by that deadline."""
    from testbed import teardown

    assert teardown.destroy_deadline(4) == 16.0
    assert teardown.destroy_deadline(260) == 80.0
    waited = []

    class Waiter:
        pending = {i: f"ns{i}" for i in range(260)}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def arm(self, paths):
            list(paths)

        def wait(self, timeout):
            waited.append(timeout)
            return 0.0

    monkeypatch.setattr(teardown, "NetnsDeletion", Waiter)
    monkeypatch.setattr(teardown.netns, "remove", lambda name: None)
    lines = []
    names = [f"ns{i}" for i in range(260)]
    assert teardown.delete_netns(names, "delete namespace", lines.append) == names
    assert waited == [80.0]
    assert "waiting for the kernel to destroy 260 namespaces" in lines
