"""The progress callback every long library call takes: one line per step (the CLI prints them)."""

from __future__ import annotations

from typing import Callable

Progress = Callable[[str], None]


def quiet(_msg: str) -> None:
    """A ``Progress`` that says nothing."""
