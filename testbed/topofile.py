"""Reading a topology file safely: bytes -> text -> plain data, bounded at every step.

A topology file is small, hand-written YAML. Anything else is refused with one
``TopologyError`` line naming the file and the place, in bounded time and memory,
before a Python object is built from it:

* the file: a regular file of at most ``MAX_BYTES`` (``stat`` first, so a FIFO,
  a device such as ``/dev/zero`` or a directory is never opened for a blocking
  read; opened ``O_NONBLOCK`` and checked again after opening);
* the text: UTF-8 (a UTF-16/32 byte-order mark is named as such; a bad byte is
  given by line, column and offset), no NUL or other control characters;
* the document: composed by a loader that counts nodes (``MAX_NODES``) and depth
  (``MAX_DEPTH``) as it goes, refuses YAML anchors and aliases (a topology file
  never needs them, and they are how a 2 kB file expands to gigabytes), keys that
  are not plain strings, duplicate keys, and integers longer than ``MAX_INT_CHARS``;
* messages never echo a value whole (``short``).

The composer is in ``testbed.topoyaml``, imported by ``parse`` only: PyYAML is not loaded by the commands
that never read a file.

Public API: ``read_text(path) -> str``, ``parse(text, file) -> Any``, ``short(value)``,
``clip(text)``, ``fmt_path(parts)`` and the limits.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from typing import Any, Iterable

from testbed.errors import TopologyError

MAX_BYTES = 64 * 1024  # the largest shipped topology is ~2 kB; 256 VFs written out in full ~20 kB
MAX_DEPTH = 32  # a topology nests 6 deep
MAX_NODES = 10_000  # a 256-VF host written out in full is ~2,300 nodes
MAX_INT_CHARS = 20  # no topology number comes near; Python's int() refuses > 4300 digits with a traceback
SHORT = 60  # characters of a value shown in an error


_BOMS = (  # UTF-32 first: its LE mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "UTF-32 (little-endian byte-order mark FF FE 00 00)"),
    (codecs.BOM_UTF32_BE, "UTF-32 (big-endian byte-order mark 00 00 FE FF)"),
    (codecs.BOM_UTF16_LE, "UTF-16 (little-endian byte-order mark FF FE)"),
    (codecs.BOM_UTF16_BE, "UTF-16 (big-endian byte-order mark FE FF)"),
)
# What YAML allows in a stream (YAML 1.1 c-printable), as PyYAML's Reader checks it.
_NOT_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


def clip(text: str, limit: int = SHORT) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def short(value: Any, limit: int = SHORT) -> str:
    """``repr(value)`` cut to ``limit`` characters with an ellipsis: an error never echoes a value whole."""
    if isinstance(value, str) and len(value) > limit * 4:
        value = value[:limit * 4]  # repr of a huge string costs its size; the cut below needs only the head
    return clip(repr(value), limit)


def fmt_path(parts: Iterable[Any]) -> str:
    """``["hosts", "server", "nic", "vfs", 0]`` -> ``hosts.server.nic.vfs[0]``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _position(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def _refuse_irregular(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise TopologyError(path, "", f"is {_file_kind(mode)}, not a regular file; give a topology YAML file")


def _refuse_size(path: str, size: int) -> None:
    if size > MAX_BYTES:
        raise TopologyError(path, "", f"is {size:,} bytes or more; a topology file is at most {MAX_BYTES // 1024} KiB "
                                      "(is this the right file?)")


def read_text(path: str) -> str:
    """The file's text; TopologyError for anything that is not a small regular UTF-8 file."""
    try:
        st = os.stat(path)  # no open(): a FIFO or a device is refused without reading from it
        _refuse_irregular(path, st.st_mode)
        _refuse_size(path, st.st_size)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            _refuse_irregular(path, os.fstat(fd).st_mode)  # replaced between stat and open?
            data = fh.read(MAX_BYTES + 1)  # bounded even if the file grows or lies about its size
    except OSError as exc:
        raise TopologyError(path, "", f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL byte in the file name
        raise TopologyError(path, "", f"cannot read: {exc}") from None
    _refuse_size(path, len(data))
    return decode(data, path)


def decode(data: bytes, file: str) -> str:
    for bom, what in _BOMS:
        if data.startswith(bom):
            raise TopologyError(file, "", f"is {what}; save it as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TopologyError(file, _position(data, exc.start),
                            f"byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8; "
                            "save the file as UTF-8") from None


def check_text(text: str, file: str) -> None:
    """Size and characters of already decoded text (``loads`` gets text directly)."""
    if len(text) > MAX_BYTES:
        raise TopologyError(file, "", f"is {len(text):,} characters; a topology file is at most "
                                      f"{MAX_BYTES // 1024} KiB")
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        at = bad.start()
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        char = bad.group()
        what = ("a NUL byte (a binary file, or UTF-16 without a byte-order mark? save it as UTF-8)"
                if char == "\0" else f"control character U+{ord(char):04X}, which YAML does not allow")
        raise TopologyError(file, f"line {line}, column {column}", f"contains {what}")


def parse(text: str, file: str) -> Any:
    """Plain data (dicts, lists, str, int, bool, None, ...) from topology text; TopologyError if refused."""
    check_text(text, file)
    from testbed import topoyaml  # PyYAML only when a file is read: a lab's record is JSON

    return topoyaml.compose(text, file)
