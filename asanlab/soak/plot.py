"""Soak samples -> pictures: a PNG for the bug report, a chart for the terminal."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def _lines(samples: list[dict], metric: str, scale: float = 2**20) -> dict[str, list[tuple[int, float]]]:
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for s in samples:
        for pid, p in s["processes"].items():
            if p.get(metric) is not None:
                lines[f"{p.get('role', 'process')} {pid}"].append((s["requests"], p[metric] / scale))
    return lines


# Counts drawn under the memory when they grow: (analysis key, sample field, axis label).
COUNTS = (("descriptors", "fds", "open file descriptors"), ("coroutines", "coroutines", "Swoole coroutines alive"))


def panels(analysis: dict) -> list[tuple[str, str]]:
    """The counts worth a panel of their own: those the soak judged LEAK (a descriptor leak is the
    finding even when memory grows too), as (sample field, label)."""
    return [(field, label) for key, field, label in COUNTS
            if (analysis.get(key) or {}).get("verdict") == "LEAK"]


def png(samples: list[dict], analysis: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = figure(samples, analysis)
    fig.savefig(path)
    plt.close(fig)
    return path


def figure(samples: list[dict], analysis: dict):
    """The memory of every process against requests, and a panel under it for each count that grows."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    extra = panels(analysis)
    fig, axes = plt.subplots(1 + len(extra), 1, figsize=(9, 5 + 3 * len(extra)), dpi=110, sharex=True,
                             squeeze=False)
    ax = axes[0][0]
    for name, pts in sorted(_lines(samples, analysis["metric"]).items()):
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker=".", label=name)
    ax.set_ylabel(f"MiB ({analysis['metric']})")
    bpr = analysis["bytes_per_request"]
    ax.set_title(f"{analysis['verdict']}" + (f": {bpr:.1f} B/request" if bpr is not None else ""))
    for (field, label), row in zip(extra, axes[1:]):
        for name, pts in sorted(_lines(samples, field, scale=1).items()):
            row[0].plot([x for x, _ in pts], [y for _, y in pts], marker=".", label=name)
        row[0].set_ylabel(label)
    warmup = analysis["criteria"]["warmup"]
    for (a,) in axes:
        for cp in analysis["checkpoints"][1:]:
            a.axvline(cp["requests"], color="grey", linestyle=":", linewidth=1)
        if warmup:
            a.axvspan(0, warmup, color="grey", alpha=0.1, label="warm-up" if a is ax else None)
        a.legend(fontsize="small", loc="upper left")
        a.grid(alpha=0.3)
    axes[-1][0].set_xlabel("requests")
    fig.tight_layout()
    return fig


def terminal(samples: list[dict], analysis: dict, width: int = 80, height: int = 18) -> str:
    """The memory chart, and one under it for each count that grows (descriptors, coroutines)."""
    import plotext as plt

    charts = [(analysis["metric"], f"{analysis['metric']} (MiB) against requests", 2**20)]
    charts += [(field, f"{label} against requests", 1) for field, label in panels(analysis)]
    built = []
    for field, title, scale in charts:
        plt.clear_figure()
        plt.plotsize(width, height)
        for name, pts in sorted(_lines(samples, field, scale).items()):
            plt.plot([x for x, _ in pts], [y for _, y in pts], label=name, marker="braille")
        plt.title(title)
        plt.xlabel("requests")
        plt.theme("clear")
        built.append(plt.build())
    return "\n".join(built)
