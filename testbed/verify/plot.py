"""PNG figures of verification results (matplotlib, the optional ``plot`` extra; Agg backend, no display).

- failover / rdma: one lane per stream (a tick per packet delivered, the
  largest gap at the failure and at the repair shaded and labelled), and
  packets per ms on each wire (one panel per port, a line per stream), with
  the failure and the repair marked;
- verbs: one lane per QP end, the bond's UDP both ways and the RoCE frames
  per wire, gaps labelled, the QP's retry budget drawn from the failure
  (``verbs_plot``);
- hash: flows per table entry (the TX table's ``entry:<e>`` rule counters,
  coloured by the port the entry points to) and flows per port per phase and
  direction against the expected share;
- bondhash: flows per port per policy, agreement in the title.

Public API:
    plot(result, path) -> str          writes ``path`` (PNG), returns it; CapabilityError without matplotlib
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from typing import Any, Dict, List

from testbed.errors import CapabilityError

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _config_dir() -> None:
    """matplotlib wants a writable config/cache directory; in the VM lane $HOME is the host's, read-only.
    Without one it warns on every run and rebuilds its font cache: give it one under the temp dir."""
    if "MPLCONFIGDIR" in os.environ:
        return
    home = os.path.join(os.path.expanduser("~"), ".config", "matplotlib")
    probe = home if os.path.isdir(home) else os.path.dirname(home)
    if not os.access(probe, os.W_OK):
        path = os.path.join(tempfile.gettempdir(), f"testbed-matplotlib-{os.getuid()}")
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.environ["MPLCONFIGDIR"] = path


def _pyplot() -> Any:
    _config_dir()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CapabilityError("--plot needs matplotlib",
                              fix="pip install 'testbed[plot]' (or: pip install matplotlib)") from None
    return plt


def _largest_gap(xs: List[float], lo: float, hi: float) -> Any:
    """(start, end) of the largest interval between consecutive values overlapping [lo, hi], or None."""
    best = None
    for a, b in zip(xs, xs[1:]):
        if b < lo or a > hi:
            continue
        if best is None or b - a > best[1] - best[0]:
            best = (a, b)
    return best


def _failover(r: Any, path: str) -> None:
    """Top: one lane per stream, a tick per packet delivered, the largest gap around the failure and around
    the repair shaded and labelled. Below: packets per ms on each wire (switch side), a line per stream."""
    plt = _pyplot()
    s = r.series
    wires: Dict[str, Dict[str, List[int]]] = s.get("wires", {})
    arrivals: Dict[str, List[float]] = s.get("arrivals", {})
    bucket = s.get("bucket_ms", 10.0)
    start = s.get("start_ns", 0)
    window = getattr(getattr(r, "tolerance", None), "window_ms", 500.0)
    names = [st.name for st in r.streams]
    color = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}
    marks = [((ev["ns"] - start) / 1e6, (ev.get("end_ns", ev["ns"]) - start) / 1e6,
              "red" if ev["name"].startswith("fail") else "green") for ev in s.get("events", [])]
    fig, axes = plt.subplots(len(wires) + 1, 1, figsize=(11, 0.55 * len(names) + 1.9 * len(wires) + 1.6),
                             sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [max(1.5, 0.45 * len(names))] + [1.6] * len(wires)})
    lanes = axes[0, 0]
    for i, name in enumerate(names):
        y = len(names) - 1 - i
        xs = arrivals.get(name) or []
        lanes.vlines(xs, y - 0.32, y + 0.32, color=color[name], linewidth=0.5)
        for x0, _x1, _c in marks:
            gap = _largest_gap(xs, x0 - window, x0 + window)
            if gap and gap[1] - gap[0] > 3 * 1000.0 / max(r.rate_pps, 1):
                lanes.broken_barh([(gap[0], gap[1] - gap[0])], (y - 0.38, 0.76), color=color[name], alpha=0.3)
                lanes.text(gap[1], y, f" {gap[1] - gap[0]:.0f} ms", fontsize=7, va="center")
    lanes.set_yticks(range(len(names)))
    lanes.set_yticklabels(list(reversed(names)), fontsize=8)
    lanes.set_ylim(-0.6, len(names) - 0.4)
    lanes.set_title("delivered at the destination: a tick per packet; shaded: the largest gap at the failure "
                    "and at the repair", fontsize=9, loc="left")
    for ax, panel in zip(axes[1:, 0], wires):
        for name in names:
            counts = wires[panel].get(name)
            if not counts:
                continue
            xs = [i * bucket for i in range(len(counts))]
            ax.step(xs, [c / bucket for c in counts], where="post", label=name, color=color[name], linewidth=1)
        ax.set_ylabel("packets/ms")
        ax.set_title(f"wire {panel} (switch side)", fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        for x0, x1, mark in marks:
            ax.axvline(x0, color=mark, linestyle="--", linewidth=1)
            if x1 - x0 > 1:
                ax.axvspan(x0, x1, color=mark, alpha=0.12)  # the netlink call that made the event
    if len(axes) > 1:
        axes[1, 0].legend(fontsize=7, ncol=min(6, len(names)), loc="upper right")
    axes[-1, 0].set_xlabel(f"ms since the first packet (wires: {bucket:g} ms buckets; red: failure, green: repair; "
                           "shaded: while the call that made it ran)")
    summary = textwrap.fill(r.summary, 150)
    fig.suptitle(f"{r.kind} on lab {r.lab}: {r.fail} -- {r.verdict}\n{summary}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _hash(r: Any, path: str) -> None:
    plt = _pyplot()
    from matplotlib.patches import Patch

    buckets = r.buckets.get("before") or []
    ports = sorted({p for ph in r.phases for p in ph.expected_share})
    pcolor = {p: COLORS[i % len(COLORS)] for i, p in enumerate(ports)}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    if buckets:
        ax1.bar([b["entry"] for b in buckets], [b["flows"] for b in buckets],
                color=[pcolor.get(b["port"], "#999999") for b in buckets])
        mean = sum(b["flows"] for b in buckets) / len(buckets)
        line = ax1.axhline(mean, color="black", linestyle=":", linewidth=1, label=f"mean {mean:.1f}")
        handles = [Patch(color=pcolor[p], label=f"entry -> {p}") for p in ports]
        ax1.legend(handles=[line] + handles, fontsize=8)
        ax1.set_xlabel("TX table entry (hash & mask)")
        ax1.set_ylabel("flows (rule packets / packets per flow)")
        ax1.set_title("before the failure: flows per table entry", fontsize=9, loc="left")
    else:
        ax1.text(0.5, 0.5, "no per-entry counters (no tx direction)", ha="center", transform=ax1.transAxes)
    groups = [f"{ph.phase}\n{ph.direction}" for ph in r.phases]
    width = 0.8 / max(1, len(ports))
    for i, p in enumerate(ports):
        xs = [g + (i - (len(ports) - 1) / 2) * width for g in range(len(groups))]
        ax2.bar(xs, [ph.per_port.get(p, 0) for ph in r.phases], width, color=pcolor[p], label=p)
        ax2.scatter(xs, [ph.expected_share.get(p, 0) * ph.flows for ph in r.phases], marker="_", s=200,
                    color="black", zorder=3)
    ax2.set_xticks(range(len(groups)))
    ax2.set_xticklabels(groups, fontsize=8)
    ax2.set_ylabel("flows")
    ax2.set_title("flows per port (bars) vs expected (black)", fontsize=9, loc="left")
    ax2.legend(fontsize=8)
    fig.suptitle(f"hash on lab {r.lab}: {r.flows} flows of {r.target}"
                 + (f", fail {r.fail}" if r.fail else "") + f" -- {r.verdict}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bondhash(r: Any, path: str) -> None:
    plt = _pyplot()
    ports = sorted({p for pol in r.policies for p in pol.usable})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(ports))
    for i, p in enumerate(ports):
        xs = [g + (i - (len(ports) - 1) / 2) * width for g in range(len(r.policies))]
        ax.bar(xs, [pol.per_port.get(p, 0) for pol in r.policies], width, color=COLORS[i % len(COLORS)], label=p)
    ax.set_xticks(range(len(r.policies)))
    ax.set_xticklabels([f"{p.policy}\n{100 * p.agreement:.0f} % predicted" for p in r.policies], fontsize=8)
    ax.set_ylabel("flows")
    ax.legend(fontsize=8)
    ax.set_title(f"bond0 transmit hash on lab {r.lab} ({r.mode}) -- {r.verdict}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(result: Any, path: str) -> str:
    kind = getattr(result, "kind", "")
    if kind in ("failover", "rdma"):
        _failover(result, path)
    elif kind == "hash":
        _hash(result, path)
    elif kind == "bondhash":
        _bondhash(result, path)
    elif kind == "verbs":
        from testbed.verify.verbs_plot import plot_verbs

        _config_dir()
        plot_verbs(result, path)
    else:
        raise ValueError(f"no plot for {kind!r}")
    return path
