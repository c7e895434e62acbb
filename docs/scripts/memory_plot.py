#!/usr/bin/env python3
"""Draw the memory-suite figure of docs/understanding/transformers.md from the suite's JSON results.

    python docs/scripts/memory_plot.py benchmarks/results/memory_adding200.json [more.json ...]

One bar per (model, T): the CPU seconds to reach the bar (MSE < 0.01 on the adding problem), or the
whole budget, hatched, when the model did not get there. Writes docs/figures/memory_adding.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rnnkit.analysis.plots import new_figure, save_figure

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main(paths: list[str]) -> int:
    rows = [r for p in paths for r in json.loads(Path(p).read_text())["results"]]
    fig, axes = new_figure(8, 3.6)
    ax = axes[0]
    labels = [f"{r['model']}\nT={r['length']}" for r in rows]
    colours = ["tab:green" if r["solved"] else "tab:red" for r in rows]
    bars = ax.bar(range(len(rows)), [r["seconds"] for r in rows], color=colours)
    for bar, r in zip(bars, rows):
        if not r["solved"]:
            bar.set_hatch("//")
        ax.annotate(f"MSE {r['value']:.3g}\n{r['steps']} steps", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("CPU seconds (1 thread)")
    ax.set_title("adding problem: time to MSE < 0.01 (green) or budget spent (red, hatched)", fontsize=9)
    ax.margins(y=0.2)
    save_figure(fig, FIGURES / "memory_adding.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["benchmarks/results/memory_adding200.json"]))
