"""Soak samples -> pictures: a PNG for the bug report, a chart for the terminal."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def _lines(samples: list[dict], metric: str) -> dict[str, list[tuple[int, float]]]:
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for s in samples:
        for pid, p in s["processes"].items():
            if p.get(metric) is not None:
                lines[f"{p.get('role', 'process')} {pid}"].append((s["requests"], p[metric] / 2**20))
    return lines


def png(samples: list[dict], analysis: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    for name, pts in sorted(_lines(samples, analysis["metric"]).items()):
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker=".", label=name)
    for row in analysis["checkpoints"][1:]:
        ax.axvline(row["requests"], color="grey", linestyle=":", linewidth=1)
    warmup = analysis["criteria"]["warmup"]
    if warmup:
        ax.axvspan(0, warmup, color="grey", alpha=0.1, label="warm-up")
    ax.set_xlabel("requests")
    ax.set_ylabel(f"MiB ({analysis['metric']})")
    bpr = analysis["bytes_per_request"]
    ax.set_title(f"{analysis['verdict']}" + (f": {bpr:.1f} B/request" if bpr is not None else ""))
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def terminal(samples: list[dict], analysis: dict, width: int = 80, height: int = 18) -> str:
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    for name, pts in sorted(_lines(samples, analysis["metric"]).items()):
        plt.plot([x for x, _ in pts], [y for _, y in pts], label=name, marker="braille")
    plt.title(f"{analysis['metric']} (MiB) against requests")
    plt.xlabel("requests")
    plt.theme("clear")
    return plt.build()
