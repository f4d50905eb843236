"""Verdicts as lists of named checks (pure): what was measured, against which tolerance, passed or not.

Every verification result holds ``checks``; it passed when every check did.
A check names its subject (``vf0 rx: lost beyond the bond's window``), the
measured value, the tolerance it was held to, and the outcome, so a report
says *why* a verdict is FAIL, not only that it is.

Public API:
    Check(name, passed, measured, tolerance)       frozen dataclass; .to_dict(), .line()
    Verdicts                                        mixin: .passed, .verdict ("PASS"/"FAIL"), .failures
    check(name, measured, ok, tolerance) -> Check
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    measured: Any
    tolerance: str

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'} {self.name}: {_fmt(self.measured)} (want {self.tolerance})"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def check(name: str, measured: Any, ok: bool, tolerance: str) -> Check:
    return Check(name, bool(ok), measured, tolerance)


class Verdicts:
    """For dataclasses with a ``checks: List[Check]`` field."""

    checks: List[Check]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def failures(self) -> List[Check]:
        return [c for c in self.checks if not c.passed]
