"""The verbs result as a PNG: one lane per stream, its gaps marked (matplotlib, the ``plot`` extra).

Lanes, top to bottom: each QP end's completions, the bond's kernel UDP arrivals (rx, tx), the
RoCE frames seen on each wire. A tick per event; the largest gap of each lane around the fault
and the repair is shaded and labelled; red line: the fault, green: the repair; the QP's retry
budget is drawn from the fault as a bracket.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from testbed.verify.plot import _largest_gap, _pyplot
from testbed.verify.verbs import largest_gap_ms


def _gap_span(times: Sequence[int], around: Optional[int], window_ms: float) -> Optional[Tuple[int, int]]:
    """The (start, end) ns of the largest gap overlapping the window around ``around``."""
    if around is None:
        return None
    return _largest_gap(sorted(times), around - window_ms * 1e6, around + window_ms * 1e6)


def plot_verbs(result: Any, path: str, window_ms: float = 1000.0) -> str:
    plt = _pyplot()
    s = result.series
    t0 = s.get("start_ns") or 0
    lanes: List[Tuple[str, List[int]]] = []
    for name, times in (s.get("completions") or {}).items():
        end = next((e for e in result.ends if e.name == name), None)
        role = end.role if end else ""
        lanes.append((f"{name} {role} completions", list(times)))
    for d, times in (s.get("bond") or {}).items():
        lanes.append((f"bond {d} (kernel UDP)", list(times)))
    ports = sorted({p for _t, p in s.get("wires") or []})
    for p in ports:
        lanes.append((f"RoCE on {p}", [t for t, q in s["wires"] if q == p]))
    fig, ax = plt.subplots(figsize=(12, 1.0 + 0.7 * len(lanes)))
    for i, (label, times) in enumerate(lanes):
        y = len(lanes) - 1 - i
        xs = [(t - t0) / 1e9 for t in times]
        ax.vlines(xs, y - 0.3, y + 0.3, linewidth=0.4, color="#1f77b4")
        ts = sorted(times)
        steps = sorted(b - a for a, b in zip(ts, ts[1:]))
        usual = steps[len(steps) // 2] if steps else 0
        for at in (s.get("fail_ns"), s.get("repair_ns")):
            span = _gap_span(times, at, window_ms)
            if span and not label.startswith("RoCE on") and span[1] - span[0] > 3 * usual:
                a, b = ((span[0] - t0) / 1e9, (span[1] - t0) / 1e9)
                ax.broken_barh([(a, b - a)], (y - 0.35, 0.7), color="#ff7f0e", alpha=0.45)
                gap = largest_gap_ms(times, at, window_ms)
                ax.text(b, y + 0.32, f" {gap:.0f} ms", fontsize=7, va="bottom")
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([lab for lab, _ in reversed(lanes)], fontsize=8)
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    if s.get("fail_ns"):
        f = (s["fail_ns"] - t0) / 1e9
        ax.axvline(f, color="red", linewidth=1.2, label=f"fault {result.fail}")
        ax.annotate("", xy=(f + result.budget_ms / 1000, -0.55), xytext=(f, -0.55),
                    arrowprops={"arrowstyle": "|-|", "color": "purple"})
        ax.text(f, -0.5, f" QP retry budget {result.budget_ms:.0f} ms", color="purple", fontsize=7, va="bottom")
    if s.get("repair_ns"):
        ax.axvline((s["repair_ns"] - t0) / 1e9, color="green", linewidth=1.2, label="repair")
    ax.set_xlabel("s since the QP connected")
    ax.set_title(f"lab {result.lab}: RC QP {result.peer} <-> {result.target}, agent "
                 f"{'running' if result.agent else 'stopped'}: {result.verdict}", fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
