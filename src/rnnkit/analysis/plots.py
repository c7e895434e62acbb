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


def figure_file(path: str | Path, what: str = "plot") -> Path:
    """The file :func:`save_figure` writes for ``path`` (``.png`` added to a name without a suffix, its
    folder created), checked before any work: a folder, or a suffix matplotlib cannot write, is a
    :class:`~rnnkit.errors.ConfigError` naming ``what``."""
    from rnnkit._files import output_file
    from rnnkit.errors import ConfigError

    out = output_file(path, ".png", what)
    fig, _ = new_figure(1, 1)
    formats = fig.canvas.get_supported_filetypes()
    if out.suffix[1:].lower() not in formats:
        raise ConfigError(f"{what}: matplotlib cannot write {out.suffix!r} files ({out}); expected a suffix "
                          f"such as .png, .svg or .pdf (one of {', '.join('.' + f for f in formats)})")
    return out


def save_figure(fig, path: str | Path | None, dpi: int = 120):
    """Write ``fig`` at ``path`` (if given; a PNG unless its suffix says otherwise, ``.png`` added to a
    name without one) and return it."""
    if path is not None:
        fig.savefig(figure_file(path), dpi=dpi)
    return fig


def _positive(values: Tensor) -> Tensor:
    """Values for a log axis: zeros (underflow) and non-finite values become NaN gaps."""
    v = values.detach().double().clone()
    v[~torch.isfinite(v) | (v <= 0)] = math.nan
    return v


def _log_limits(series: list[Tensor]) -> tuple[float, float] | None:
    """y-limits (in decades) of a log axis holding ``series`` (as :func:`_positive` gives them): their
    finite range padded by 5% of it, kept inside float64's range (matplotlib's autoscale pads the largest
    value by a factor, which overflowed near 1e308 and left an empty panel with limits (1, 10))."""
    values = torch.cat([v[torch.isfinite(v)] for v in series]) if series else torch.zeros(0)
    if not values.numel():
        return None
    lo, hi = math.log10(float(values.min())), math.log10(float(values.max()))
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    return max(lo - pad, -323.0), min(hi + pad, 308.0)  # 1e308 < float64's max 1.8e308


def _set_log_limits(ax, limits: tuple[float, float] | None) -> None:
    """Set a log axis' y-limits from :func:`_log_limits`. Near float64's top, matplotlib's log tick
    locator places ticks a few decades past the limit, which overflow to inf (an OverflowError when
    drawing): there the ticks are whole decades inside the limits, at most 8 of them."""
    if limits is None:
        return
    lo, hi = limits
    ax.set_ylim(10.0 ** lo, 10.0 ** hi)
    if hi > 250:
        from matplotlib.ticker import FixedLocator, LogFormatterSciNotation, NullLocator

        stride = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200) if (hi - lo) / s <= 8)
        first = math.ceil(lo / stride) * stride  # decades at round multiples: 1e0, 1e50, 1e100, ...
        ax.yaxis.set_major_locator(FixedLocator([10.0 ** d for d in range(first, math.floor(hi) + 1, stride)]))
        ax.yaxis.set_major_formatter(LogFormatterSciNotation())
        ax.yaxis.set_minor_locator(NullLocator())


def plot_gradient_flow(flows: Mapping[str, GradientFlow] | GradientFlow, path: str | Path | None = None, *,
                       title: str | None = None):
    """Gradient norm per time step (left) and recurrent Jacobian norm (right), log scale, one line (of its
    own colour) per model and layer. ``flows`` is one :class:`GradientFlow` or a ``{name: GradientFlow}``
    dict. The y-limits span the finite values (zeros, underflowed, and inf or NaN leave gaps); both panels
    span the steps 1..T."""
    if isinstance(flows, GradientFlow):
        flows = {"model": flows}
    if not isinstance(flows, Mapping) or not flows or not all(isinstance(f, GradientFlow) for f in flows.values()):
        got = type(flows).__name__ if not isinstance(flows, Mapping) or not flows else \
            f"a dict holding {sorted({type(f).__name__ for f in flows.values()})}"
        raise TypeError(f"plot_gradient_flow expects a GradientFlow or a non-empty dict of them, got {got}")
    lines = []  # (label, grad norms, jacobian norms), each line its own colour
    for name, flow in flows.items():
        rows = flow.grad_norms.shape[0]
        for layer in range(rows):
            label = name if rows == 1 else f"{name} {flow.layer_names[layer]}"
            lines.append((label, _positive(flow.grad_norms[layer]), _positive(flow.jacobian_norms[layer])))
    T = max(int(g.numel()) for _, g, _ in lines)
    fig, (left, right) = new_figure(11, 4, ncols=2)
    for ax, index, extra in ((left, 1, []), (right, 2, [torch.ones(1, dtype=torch.float64)])):  # right: its 1.0 line
        ax.set_yscale("log")
        _set_log_limits(ax, _log_limits([line[index] for line in lines] + extra))  # before plotting: no autoscale
        ax.set_xlim(*((1, T) if T > 1 else (0.5, 1.5)))
    styles = ["-", "--", ":", "-."]
    for k, (label, grads, jacobians) in enumerate(lines):
        style = dict(color=f"C{k % 10}", ls=styles[k // 10 % len(styles)], lw=1.4)
        for ax, first, y in ((left, 1, grads), (right, 2, jacobians)):
            marker = "o" if y.numel() == 1 else None  # a single point (T=1; for the Jacobian T=2)
            ax.plot(range(first, first + y.numel()), y, label=label, marker=marker, **style)
    custom = any(f.custom_loss for f in flows.values())
    left.set(xlabel="time step t", ylabel=r"$\|\partial L / \partial s_t\|$",
             title="gradient reaching each step" + ("" if custom else " (loss at the last step)"))
    right.axhline(1.0, color="0.4", ls="--", lw=1)
    right.set(xlabel="time step t", ylabel=r"$\|\partial s_t / \partial s_{t-1}\|_2$",
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
    if activations.dim() == 2 and unit is None:
        raise ValueError("plot_unit_activations: give unit= to choose a column of (T, H) activations")
    if activations.dim() == 2 and not -activations.shape[1] <= unit < activations.shape[1]:
        raise ValueError(f"plot_unit_activations: unit must be in [0, {activations.shape[1]}) for activations "
                         f"of shape {tuple(activations.shape)}, got {unit}")
    if activations.dim() not in (1, 2):
        raise ValueError(f"plot_unit_activations: expected activations of shape (T, H) or (T,), got "
                         f"{tuple(activations.shape)}")
    values = activations if activations.dim() == 1 else activations[:, unit]
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
