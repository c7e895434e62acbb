"""``rnnkit diagnose``: gradient flow of several recurrences side by side, as a table and a figure.

:func:`diagnose_cells` builds one fresh layer per recurrence (same seed, sizes and input), runs
:func:`~rnnkit.analysis.gradient_flow` on ``x ~ N(0, 1)`` with the loss at the last step, writes the
figure and returns the table rows; :func:`diagnose_module` does the same for a trained model (a bundle
loaded with ``rnnkit.load``) on inputs the caller provides.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from rnnkit.analysis.gradients import GradientFlow, gradient_flow
from rnnkit.layers import GRU, LSTM, RNN, IndRNN, MinGRU, MinLSTM

__all__ = ["CELLS", "compare_cells", "diagnose_cells", "diagnose_module", "flow_rows", "format_table"]

CELLS: dict[str, Callable[[int, int], nn.Module]] = {
    "rnn": lambda i, h: RNN(i, h, batch_first=True),
    "rnn_relu": lambda i, h: RNN(i, h, nonlinearity="relu", batch_first=True),
    "lstm": lambda i, h: LSTM(i, h, batch_first=True),
    "lstm_fb1": lambda i, h: LSTM(i, h, batch_first=True, forget_bias=1.0),
    "lstm_ln": lambda i, h: LSTM(i, h, batch_first=True, layer_norm=True),
    "gru": lambda i, h: GRU(i, h, batch_first=True),
    "gru_ln": lambda i, h: GRU(i, h, batch_first=True, layer_norm=True),
    "indrnn": lambda i, h: IndRNN(i, h, batch_first=True),
    "mingru": lambda i, h: MinGRU(i, h, batch_first=True),
    "minlstm": lambda i, h: MinLSTM(i, h, batch_first=True),
}
"""The recurrences :func:`compare_cells` knows, by name: ``lstm_fb1`` is ``forget_bias=1``, ``*_ln`` layer norm."""


def parse_cells(cells: str | Sequence[str]) -> list[str]:
    """``"rnn,lstm"`` or ``["rnn", "lstm"]`` -> a checked list of names."""
    names = [c.strip() for c in cells.split(",")] if isinstance(cells, str) else [str(c).strip() for c in cells]
    names = list(dict.fromkeys(n for n in names if n))  # each once, in the order given
    if not names:
        raise ValueError(f"cells: expected at least one cell name, some of {', '.join(CELLS)}; got none")
    unknown = [n for n in names if n not in CELLS]
    if unknown:
        raise ValueError(f"unknown cell name(s) {unknown}; expected some of {', '.join(CELLS)}")
    return names


def _horizon(grad_norms: torch.Tensor, level: float = 1e-3) -> int | None:
    """How many steps back from the last the gradient stays at or above ``level`` times the last one
    (0 where the last is zero; ``None`` where it is NaN: a diverged network has no horizon)."""
    last = float(grad_norms[-1])
    if math.isnan(last):
        return None
    if not last > 0:
        return 0
    above = (grad_norms.flip(0) >= level * last).to(torch.int64)
    return int(above.cumprod(0).sum()) - 1


def flow_rows(name: str, flow: GradientFlow, **extra: Any) -> list[dict]:
    """Table rows (one per traced layer) summarising a :class:`GradientFlow`."""
    rows = []
    for layer, layer_name in enumerate(flow.layer_names):
        g, j = flow.grad_norms[layer], flow.jacobian_norms[layer]
        ratio = flow.ratio(layer)
        rows.append(dict(model=name, layer=layer_name, T=int(g.shape[0]), grad_first=float(g[0]),
                         grad_last=float(g[-1]), ratio_first_last=ratio,
                         log10_ratio=math.log10(ratio) if 0 < ratio < math.inf else None,
                         horizon_1e3=_horizon(g), jacobian_mean=float(j.mean()) if j.numel() else None,
                         jacobian_max=float(j.max()) if j.numel() else None, **extra))
    return rows


def compare_cells(cells: str | Sequence[str] = ("rnn", "lstm", "gru", "mingru"), length: int = 200,
                  hidden_size: int = 64, input_size: int = 8, batch_size: int = 8, seed: int = 0,
                  dtype: torch.dtype = torch.float64) -> tuple[list[dict], dict[str, GradientFlow]]:
    """Gradient flow of freshly initialised layers on one ``N(0, 1)`` input batch ``(B, length, I)``.

    Each layer is built under ``torch.manual_seed(seed)`` (the global generator is restored after), and
    the loss is the mean output at the last step. Returns ``(rows, flows)``: one table row per cell (see
    :func:`flow_rows`; ``horizon_1e3`` counts the steps back over which the gradient keeps 1e-3 of its
    last-step size) and the :class:`GradientFlow` of each.
    """
    names = parse_cells(cells)
    for key, value in (("length", length), ("hidden_size", hidden_size), ("input_size", input_size),
                       ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if key == "length" else 1):
            raise ValueError(f"compare_cells: {key} must be an int >= {2 if key == 'length' else 1}, got {value!r}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, length, input_size, generator=gen)
    rows, flows = [], {}
    for name in names:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layer = CELLS[name](input_size, hidden_size)
        start = time.perf_counter()
        flows[name] = gradient_flow(layer, x, dtype=dtype)
        params = sum(p.numel() for p in layer.parameters())
        rows += flow_rows(name, flows[name], params=params, seconds=round(time.perf_counter() - start, 3))
    return rows, flows


def diagnose_cells(cells: str | Sequence[str], length: int, out_png: str | Path | None, **kwargs: Any) -> list[dict]:
    """:func:`compare_cells` plus the figure (:func:`~rnnkit.analysis.plots.plot_gradient_flow`) at
    ``out_png``; returns the table rows. ``kwargs`` go to :func:`compare_cells`."""
    from rnnkit.analysis.plots import figure_file, plot_gradient_flow

    parse_cells(cells)
    out_png = figure_file(out_png, "out_png") if out_png is not None else None  # before the work
    rows, flows = compare_cells(cells, length, **kwargs)
    if out_png is not None:
        title = f"gradient flow at initialisation, T={length}, hidden={kwargs.get('hidden_size', 64)}"
        plot_gradient_flow(flows, out_png, title=title)
    return rows


def diagnose_module(module: nn.Module, inputs: Any, out_png: str | Path | None, *,
                    loss_fn: Callable[[Any], torch.Tensor] | None = None, name: str | None = None) -> list[dict]:
    """Gradient flow of a model (e.g. a loaded bundle) on ``inputs``; writes the figure and returns one
    table row per recurrent layer. ``loss_fn`` as in :func:`~rnnkit.analysis.gradient_flow`.

    The model runs in the mode it is in: call ``module.eval()`` first (``rnnkit.load`` returns it so),
    else a language model's own dropout draws new masks on every call and the numbers change."""
    from rnnkit.analysis.plots import figure_file, plot_gradient_flow

    out_png = figure_file(out_png, "out_png") if out_png is not None else None  # before the work
    name = name or type(module).__name__
    flow = gradient_flow(module, inputs, loss_fn)
    if out_png is not None:
        plot_gradient_flow({name: flow}, out_png, title=f"gradient flow of {name}")
    return flow_rows(name, flow)


def format_table(rows: list[dict], columns: Sequence[str] = ("model", "layer", "T", "ratio_first_last",
                                                             "horizon_1e3", "jacobian_mean", "jacobian_max")) -> str:
    """The rows as a Markdown table (floats in 3 significant digits)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
