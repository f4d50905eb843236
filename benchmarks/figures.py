"""What the benchmarks share: percentiles, a process's memory, comma lists, and the figures file.

Every ``bench_*.py`` that ``run_all.py`` drives takes ``--json-out PATH`` and writes its figures there
(one JSON object, via ``write``); ``run_all.py`` reads them back for its summary table.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, TypeVar

T = TypeVar("T")


def pct(values: List[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def comma_list(cast: Callable[[str], T]) -> Callable[[str], List[T]]:
    """An argparse ``type``: ``"2,64,256"`` -> ``[2, 64, 256]``."""
    return lambda text: [cast(part) for part in text.split(",") if part]


def memory_mb(pid: int) -> Dict[str, float]:
    """``VmRSS`` (resident now) and ``VmHWM`` (its peak) of a live process, in MB (10^6 bytes)."""
    out: Dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024 / 1e6
    return out


def write(path: Optional[str], figures: Dict[str, Any]) -> None:
    """Write ``figures`` (plus the kernel release) to ``path`` as JSON; nothing when ``path`` is None."""
    if not path:
        return
    doc = dict(figures, kernel=os.uname().release)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, path)


def read(path: str) -> Optional[Dict[str, Any]]:
    """A figures file, or None if the benchmark wrote none (it failed before the end)."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
