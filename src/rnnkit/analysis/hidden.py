"""What the hidden units do: state trajectories, PCA, and units that track a feature of the input.

Typical use on a character model (Karpathy, Johnson & Fei-Fei 2015 found units for quotes, brackets
and line length this way)::

    acts = hidden_states(model, ids.unsqueeze(0))            # (T, H)
    ranking = find_units(acts, feature_inside(text, '"', '"'))
    plot_unit_activations(text, acts, int(ranking.units[0]), "quote_unit.png")
"""

from __future__ import annotations

import math

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rnnkit.analysis._trace import trace

__all__ = ["hidden_states", "PCA", "pca", "feature_inside", "feature_depth", "UnitRanking", "find_units"]


def hidden_states(module: nn.Module, inputs: Any, *, layer: int = -1, part: str = "h",
                  index: int = 0) -> Tensor:
    """The states of one recurrent layer over one sequence, ``(T, H)``: what the layer computes in
    evaluation mode (no dropout; zoneout as its expectation), whatever the module's mode.

    Args:
        module: an rnnkit layer or a model holding them (as for :func:`~rnnkit.analysis.gradient_flow`).
        inputs: what ``module`` is called with (a tensor, a tuple of arguments or a dict of keywords); a
            batch, of which sequence ``index`` is returned. An unbatched ``(T, F)`` tensor works for layers.
        layer: which traced layer, counted over the whole module (stacks count each layer); -1 the top.
        part: ``"h"`` (the output state) or, for LSTMs, ``"c"`` (the memory cell).
    """
    if part not in ("h", "c"):
        raise ValueError(f"hidden_states: part must be 'h' or 'c', got {part!r}")
    with torch.no_grad():
        layers = trace(module, inputs).layers
    if not -len(layers) <= layer < len(layers):
        raise ValueError(f"hidden_states: layer must be in [-{len(layers)}, {len(layers)}), got {layer}")
    states = layers[layer].states
    if not states:
        raise ValueError("hidden_states: the sequence is empty")
    if part == "c" and isinstance(states[0], Tensor):
        raise ValueError(f"hidden_states: part='c' needs an LSTM, layer {layers[layer].name} has one state")
    picked = [s if isinstance(s, Tensor) else (s.h if part == "h" else s.c) for s in states]
    seq = torch.stack(picked, 1)  # (B, T, H)
    if not -seq.shape[0] <= index < seq.shape[0]:
        raise ValueError(f"hidden_states: index must be in [0, {seq.shape[0]}), got {index}")
    return seq[index].detach()


class PCA(NamedTuple):
    """``projected`` (T, k) coordinates, ``components`` (k, H) unit directions, the fraction of variance
    each explains, and the ``mean`` (H,) that was subtracted."""

    projected: Tensor
    components: Tensor
    explained_variance_ratio: Tensor
    mean: Tensor


def pca(states: Tensor, k: int = 2) -> PCA:
    """Principal components of ``states`` (T, H) by ``torch.linalg.svd`` of the centred matrix."""
    if not isinstance(states, Tensor) or states.dim() != 2:
        got = tuple(states.shape) if isinstance(states, Tensor) else type(states).__name__
        raise ValueError(f"pca expects states of shape (T, H), got {got}")
    if not 1 <= k <= min(states.shape):
        raise ValueError(f"pca: k must be in [1, {min(states.shape)}] for states {tuple(states.shape)}, got {k}")
    x = states.detach().double()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"pca: the states hold NaN or inf ({int((~torch.isfinite(x)).sum())} of {x.numel()} "
                         "values): the network diverges on these inputs")
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    var = s.square()
    ratio = var[:k] / var.sum().clamp(min=torch.finfo(var.dtype).tiny)
    return PCA((x - mean) @ vh[:k].T, vh[:k], ratio, mean)


def feature_depth(text: str, open_ch: str, close_ch: str) -> Tensor:
    """Nesting depth after reading each character, ``(T,)`` long.

    With ``open_ch == close_ch`` (quotes) the depth toggles between 0 and 1. Unmatched closers do not
    go below zero.
    """
    if len(open_ch) != 1 or len(close_ch) != 1:
        raise ValueError(f"feature_depth: open_ch and close_ch must be single characters, got "
                         f"{open_ch!r} and {close_ch!r}")
    depth, out = 0, []
    for ch in text:
        if open_ch == close_ch and ch == open_ch:
            depth = 1 - depth
        elif ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth = max(0, depth - 1)
        out.append(depth)
    return torch.tensor(out, dtype=torch.long)


def feature_inside(text: str, open_ch: str, close_ch: str) -> Tensor:
    """``(T,)`` bool: is the text inside ``open_ch ... close_ch`` after reading character ``t``?

    The opening character counts as inside and the closing one as outside: that is what a state that
    has just read them can know. E.g. ``feature_inside('a(b)c', '(', ')')`` is ``[F, T, T, F, F]``.
    """
    return feature_depth(text, open_ch, close_ch) > 0


class UnitRanking(NamedTuple):
    """``units`` (K,) sorted by ``|correlation|``, largest first, and their ``correlations`` (signed)."""

    units: Tensor
    correlations: Tensor


def find_units(activations: Tensor, feature: Tensor, top_k: int | None = None) -> UnitRanking:
    """Rank the units of ``activations`` (T, H) by the Pearson correlation of each with ``feature`` (T,).

    ``feature`` is a per-step bool mask (the point-biserial correlation) or a number such as a depth.
    Constant units, or a constant feature, correlate 0; a unit (or feature) holding NaN or inf gets NaN,
    ranked last. ``top_k``: keep the first ``top_k`` units (a positive int; ``None`` keeps all).
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"find_units: top_k must be a positive int or None, got {top_k!r}")
    if not isinstance(activations, Tensor) or activations.dim() != 2:
        got = tuple(activations.shape) if isinstance(activations, Tensor) else type(activations).__name__
        raise ValueError(f"find_units expects activations of shape (T, H), got {got}")
    if not isinstance(feature, Tensor) or tuple(feature.shape) != (activations.shape[0],):
        got = tuple(feature.shape) if isinstance(feature, Tensor) else type(feature).__name__
        raise ValueError(f"find_units expects a feature of shape ({activations.shape[0]},), got {got}")
    a = activations.detach().double()
    f = feature.detach().double()
    a, f = a - a.mean(0), f - f.mean()
    denom = a.norm(dim=0) * f.norm()
    corr = torch.where(denom > 0, (a * f.unsqueeze(1)).sum(0) / denom.clamp(min=1e-300), torch.zeros_like(denom))
    corr = torch.where(torch.isfinite(denom), corr, torch.full_like(corr, math.nan))  # not "uncorrelated"
    order = corr.abs().nan_to_num(nan=-1.0).argsort(descending=True, stable=True)
    if top_k is not None:
        order = order[:top_k]
    return UnitRanking(order, corr[order])
