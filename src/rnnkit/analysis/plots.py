"""Figures of the analysis tools, drawn with matplotlib's object API (no pyplot state, no display).

Every function returns a ``matplotlib.figure.Figure`` and, given ``path``, also writes it as a PNG
(parent folders are created). matplotlib is the optional ``plot`` extra: ``pip install 'rnnkit[plot]'``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from rnnkit.analysis.gradients import GradientFlow
from rnnkit.analysis.hidden import pca

__all__ = ["plot_gradient_flow", "plot_pca_trajectory", "plot_unit_activations"]


def new_figure(width: float, height: float, ncols: int = 1):
    """A constrained-layout ``Figure`` and its axes (a list), without pyplot."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("rnnkit's plots need matplotlib: pip install 'rnnkit[plot]'") from exc
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save_figure(fig, path: str | Path | None, dpi: int = 120):
    """Write ``fig`` at ``path`` (if given; a PNG unless its suffix says otherwise, ``.png`` added to a
    name without one) and return it."""
    if path is not None:
        from rnnkit._files import output_file

        fig.savefig(output_file(path, ".png", "plot"), dpi=dpi)
    return fig


def _positive(values: Tensor) -> Tensor:
    """Values for a log axis: zeros (underflow) and non-finite values become NaN gaps."""
    v = values.detach().double().clone()
    v[~torch.isfinite(v) | (v <= 0)] = math.nan
    return v


def plot_gradient_flow(flows: Mapping[str, GradientFlow] | GradientFlow, path: str | Path | None = None, *,
                       title: str | None = None):
    """Gradient norm per time step (left) and recurrent Jacobian norm (right), log scale, one line per
    model and layer. ``flows`` is one :class:`GradientFlow` or a ``{name: GradientFlow}`` dict."""
    if isinstance(flows, GradientFlow):
        flows = {"model": flows}
    if not flows or not all(isinstance(f, GradientFlow) for f in flows.values()):
        raise TypeError("plot_gradient_flow expects a GradientFlow or a non-empty dict of them, got "
                        f"{type(flows).__name__}")
    fig, (left, right) = new_figure(11, 4, ncols=2)
    colors = [f"C{i}" for i in range(10)]
    for i, (name, flow) in enumerate(flows.items()):
        rows = flow.grad_norms.shape[0]
        for layer in range(rows):
            label = name if rows == 1 else f"{name} {flow.layer_names[layer]}"
            style = dict(color=colors[i % 10], alpha=1.0 if layer == rows - 1 else 0.55, lw=1.4)
            T = flow.grad_norms.shape[1]
            left.plot(range(1, T + 1), _positive(flow.grad_norms[layer]), label=label, **style)
            right.plot(range(2, T + 1), _positive(flow.jacobian_norms[layer]), label=label, **style)
    left.set(yscale="log", xlabel="time step t", ylabel=r"$\|\partial L / \partial s_t\|$",
             title="gradient reaching each step (loss at the last step)")
    right.axhline(1.0, color="0.4", ls="--", lw=1)
    right.set(yscale="log", xlabel="time step t", ylabel=r"$\|\partial s_t / \partial s_{t-1}\|_2$",
              title="recurrent Jacobian spectral norm (batch mean)")
    left.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_pca_trajectory(states: Tensor, path: str | Path | None = None, *, title: str | None = None,
                        labels: list[str] | None = None, color: Tensor | None = None,
                        color_label: str = "time step"):
    """The hidden-state trajectory ``states`` (T, H) projected on its first two principal components,
    coloured by time or by ``color`` (T,) values (e.g. a feature such as bracket depth, named by
    ``color_label``); ``labels`` (one string per step, e.g. the characters) annotate up to 60 points."""
    result = pca(states, k=2)
    xy = result.projected
    fig, (ax,) = new_figure(6, 5)
    T = xy.shape[0]
    if color is not None and tuple(color.shape) != (T,):
        raise ValueError(f"plot_pca_trajectory: expected color of shape ({T},), got {tuple(color.shape)}")
    ax.plot(xy[:, 0], xy[:, 1], color="0.75", lw=0.8, zorder=1)
    values = range(T) if color is None else color.detach().double().numpy()
    points = ax.scatter(xy[:, 0], xy[:, 1], c=values, cmap="viridis", s=12, zorder=2)
    ax.scatter(*xy[0], marker="o", s=80, facecolors="none", edgecolors="k", label="start", zorder=3)
    ax.scatter(*xy[-1], marker="X", s=80, color="k", label="end", zorder=3)
    if labels is not None:
        if len(labels) != T:
            raise ValueError(f"plot_pca_trajectory: expected {T} labels (one per step), got {len(labels)}")
        for t in range(0, T, max(1, T // 60)):
            ax.annotate(labels[t], (float(xy[t, 0]), float(xy[t, 1])), fontsize=7, alpha=0.8)
    fig.colorbar(points, ax=ax, label=color_label)
    ev = result.explained_variance_ratio
    ax.set(xlabel=f"PC1 ({100 * float(ev[0]):.0f}% var.)", ylabel=f"PC2 ({100 * float(ev[1]):.0f}% var.)",
           title=title or "hidden-state trajectory (PCA)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _layout(text: str, columns: int) -> list[tuple[int, int, str]]:
    """(row, column, glyph) of each character; a newline is drawn as '↵' and ends its row."""
    cells, row, col = [], 0, 0
    for ch in text:
        glyph = {"\n": "↵", "\t": "→", "\r": "␍"}.get(ch, ch)
        if col >= columns:
            row, col = row + 1, 0
        cells.append((row, col, glyph))
        col += 1
        if ch == "\n":
            row, col = row + 1, 0
    return cells


def plot_unit_activations(text: str, activations: Tensor, unit: int | None = None,
                          path: str | Path | None = None, *, columns: int = 80, max_chars: int = 2000,
                          title: str | None = None):
    """``text`` drawn character by character on a grid, each cell coloured by ``activations[t, unit]``
    (a diverging colormap centred at zero; ``activations`` may also be a (T,) vector with ``unit=None``)."""
    values = activations if activations.dim() == 1 else activations[:, unit]
    if activations.dim() == 2 and unit is None:
        raise ValueError("plot_unit_activations: give unit= to choose a column of (T, H) activations")
    if len(text) != values.shape[0]:
        raise ValueError(f"plot_unit_activations: expected one activation per character ({len(text)}), "
                         f"got {values.shape[0]}")
    text, values = text[:max_chars], values[:max_chars].detach().double()
    cells = _layout(text, columns)
    rows = cells[-1][0] + 1 if cells else 1
    if rows == 1:  # a short text: the grid as wide as its line, not a mostly blank strip
        columns = max(1, max((c for _, c, _ in cells), default=0) + 1)
    grid = torch.full((rows, columns), math.nan, dtype=torch.float64)
    for (r, c, _), v in zip(cells, values):
        grid[r, c] = v
    bound = float(values.abs().max()) if values.numel() else 1.0
    fig, (ax,) = new_figure(max(4.0, columns * 0.13), max(1.2, rows * 0.22 + 0.8))
    image = ax.imshow(grid.numpy(), cmap="RdBu_r", vmin=-bound or -1, vmax=bound or 1, aspect="auto",
                      interpolation="nearest")
    for r, c, glyph in cells:
        ax.text(c, r, glyph, ha="center", va="center", fontsize=7, family="monospace")
    ax.set_axis_off()
    fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    ax.set_title(title or (f"unit {unit}" if unit is not None else "activation"), fontsize=9)
    return save_figure(fig, path)
