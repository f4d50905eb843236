"""The one error hierarchy of testbed.

Every message names the object it is about and, where there is one, the fix:
``server: bond0: cannot enslave pf1: EBUSY (already in bond1?)``.
The CLI maps each class to an exit status (``exit_code``).
"""

from __future__ import annotations


def one_line(text: str, limit: int = 400) -> str:
    """``text`` as one line of at most ``limit`` characters: control characters escaped, the rest cut with
    an ellipsis (for messages that quote what the user gave: a file name, a value)."""
    if len(text) > limit * 2:
        text = text[:limit * 2]
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


class TestbedError(Exception):
    """Root of every error testbed raises on purpose."""

    __test__ = False  # not a pytest test class despite the name
    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message} (fix: {fix})")


class UsageError(TestbedError):
    """Bad command-line usage."""

    exit_code = 2


class TopologyError(TestbedError):
    """A topology file is malformed; nothing has been created."""

    exit_code = 3

    def __init__(self, file: str, path: str, message: str) -> None:
        self.file = file
        self.path = path
        where = one_line(f"{file}: {path}" if path else file, 200)
        super().__init__(f"{where}: {one_line(message)}")  # one line, bounded, whatever the file held


class CapabilityError(TestbedError):
    """The machine lacks something the lab needs (root, a kernel module, a tool)."""

    exit_code = 4


class ConflictError(TestbedError):
    """A name the lab wants is already taken by something it does not own."""

    exit_code = 5


class LabNotFound(TestbedError):
    """No lab of that name is recorded on this machine."""

    exit_code = 6


class BuildError(TestbedError):
    """A step of realizing a lab failed; what was built has been removed."""

    exit_code = 7


class NetlinkOpError(TestbedError):
    """A netlink operation failed; carries the errno."""

    exit_code = 7

    def __init__(self, message: str, *, errno: int | None = None, fix: str | None = None) -> None:
        self.errno = errno
        super().__init__(message, fix=fix)


class WaitTimeout(TestbedError):
    """A condition did not become true before its deadline; says what was awaited."""

    exit_code = 8


class VMError(TestbedError):
    """The VM lane could not boot or run the guest."""

    exit_code = 9


class AgentError(TestbedError):
    """The offload agent cannot continue (e.g. the lab's namespace vanished)."""

    exit_code = 10


class VerificationFailed(TestbedError):
    """A traffic verification ran and its verdict is FAIL."""

    exit_code = 11
