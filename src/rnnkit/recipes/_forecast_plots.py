"""Report-ready PNGs for forecasting and anomaly detection (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rnnkit._files import output_file

__all__ = ["plot_forecast", "plot_detection"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib; install it with pip install 'rnnkit[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _dates(ax: Any, index: Any) -> None:
    if isinstance(index, pd.DatetimeIndex):
        import matplotlib.dates as mdates
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _band(ax: Any, frame: pd.DataFrame, prefix: str, lo: float, hi: float, alpha: float) -> None:
    a, b = f"{prefix}q{lo:g}", f"{prefix}q{hi:g}"
    if a in frame and b in frame:
        ax.fill_between(frame.index, frame[a], frame[b], color="tab:orange", alpha=alpha, lw=0,
                        label=f"{round((hi - lo) * 100)}% interval")


def _legend(ax: Any) -> None:
    """The legend outside the axes, on the right: inside, it covered data in every plot."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)


def _xlabel(index: Any, positions: str) -> str:
    """The time column's name when the index has one, else what the axis counts."""
    if index.name is not None:
        return str(index.name)
    return "time" if isinstance(index, pd.DatetimeIndex) else positions


def plot_forecast(history: pd.DataFrame, frame: pd.DataFrame, path: str | Path, *,
                  source: str = "", truth: pd.DataFrame | None = None,
                  tail: int | None = None) -> Path:
    """History (last ``tail`` rows), median forecast and 80%/90% bands, one panel per target, each
    titled ``<target>: <H>-step forecast (<source>)`` (``source``: the run or bundle, e.g. ``run sales``)."""
    plt = _pyplot()
    targets = [str(c) for c in history.columns]
    tail = tail or max(4 * len(frame), 60)
    fig, axes = plt.subplots(len(targets), 1, figsize=(11, 3.6 * len(targets)), squeeze=False)
    for ax, target in zip(axes[:, 0], targets):
        prefix = "" if len(targets) == 1 else f"{target}:"
        hist = history[target].iloc[-tail:]
        ax.plot(hist.index, hist.to_numpy(), color="tab:blue", lw=1.4, label="history")
        _band(ax, frame, prefix, 0.05, 0.95, 0.18)
        _band(ax, frame, prefix, 0.1, 0.9, 0.32)
        ax.plot(frame.index, frame[f"{prefix}median"], color="tab:orange", lw=1.8, label="forecast (median)")
        what = f"{len(frame)}-step forecast"
        if truth is not None and target in truth:
            ax.plot(truth.index, truth[target], color="black", lw=1.2, ls="--", label="actual")
            what = f"{len(frame)}-step holdout forecast vs actual"
        ax.set_title(f"{target}: {what}" + (f" ({source})" if source else ""))
        ax.set_xlabel(_xlabel(history.index, "step"))
        ax.set_ylabel(target)
        ax.grid(alpha=0.3)
        _legend(ax)
        _dates(ax, hist.index)
    fig.tight_layout()
    path = output_file(path, ".png", "plot")
    fig.savefig(path, dpi=120, bbox_inches="tight")  # "tight": the legends outside the axes included
    plt.close(fig)
    return path


def plot_detection(series: pd.Series, windows: Sequence[Any], path: str | Path, *,
                   title: str = "Anomaly detection", scores: np.ndarray | None = None,
                   thresholds: np.ndarray | None = None,
                   labelled: Sequence[tuple] | None = None) -> Path:
    """The series with detected windows shaded red (labelled windows green), scores below."""
    plt = _pyplot()
    panels = 2 if scores is not None else 1
    fig, axes = plt.subplots(panels, 1, figsize=(13, 3.4 * panels), sharex=True, squeeze=False)
    ax = axes[0, 0]
    x = series.index
    ax.plot(x, series.to_numpy(), color="tab:blue", lw=0.8, label=str(series.name or "value"))
    for k, (a, b) in enumerate(labelled or []):
        ax.axvspan(a, b, color="tab:green", alpha=0.18, lw=0, label="labelled window" if k == 0 else None)
    for k, w in enumerate(windows):  # an edge line: a window of one row has no width to fill
        ax.axvspan(w[0], w[1], facecolor="tab:red", edgecolor="tab:red", alpha=0.35, lw=1.2,
                   label="detected" if k == 0 else None)
    if len(x):
        ax.set_xlim(x[0], x[-1])  # labelled windows outside the series do not stretch the axis
    ax.set_title(f"{title}, {len(windows)} window(s) detected")
    ax.set_ylabel(str(series.name or "value"))
    ax.grid(alpha=0.3)
    _legend(ax)
    if scores is not None:
        sx = axes[1, 0]
        sx.plot(x, scores, color="tab:purple", lw=0.8, label="anomaly score")
        if thresholds is not None:
            shown = np.where(np.isfinite(thresholds), thresholds, np.nan)
            sx.plot(x, shown, color="tab:red", lw=1.0, ls="--", label="threshold")
        sx.set_ylabel("score (sd units)")
        sx.grid(alpha=0.3)
        _legend(sx)
    axes[-1, 0].set_xlabel(_xlabel(x, "row"))
    for a in axes[:, 0]:
        _dates(a, x)
    fig.tight_layout()
    path = output_file(path, ".png", "plot")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
