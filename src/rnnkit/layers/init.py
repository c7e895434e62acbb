r"""Chrono initialisation of the gates (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?").

A gated recurrence keeps a fraction :math:`\kappa` of its state per step, so a unit remembers over about
:math:`1 / (1 - \kappa)` steps. With the usual initialisation every gate starts near :math:`\sigma(0)
= 1/2`: every unit forgets within a few steps, and the gradient from a step a thousand steps back is
:math:`2^{-1000}`. Chrono initialisation spreads the units' time scales over :math:`[1, T_{\max}]`:
the keep gate's bias is :math:`\log u` with :math:`u \sim U(1, T_{\max} - 1)` per unit (so the unit
keeps :math:`u / (1 + u)` of its state per step) and, where the cell has an input gate, the input
gate's bias is :math:`-\log u`. Weights are left as they are.

Per cell (bias slices in torch's gate order):

=====================  ===========================  ==============================================
cell                   keep gate                    set
=====================  ===========================  ==============================================
LSTM, LayerNormLSTM    forget ``f`` (i, **f**, g, o)  ``b_f = log u``, ``b_i = -log u``
GRU, LayerNormGRU      update ``z`` (r, **z**, n)     ``b_z = log u`` (:math:`h = (1-z) n + z h`)
MinGRU                 ``1 - z`` (**z**, h)           ``b_z = -log u``
MinLSTM                ``f' = f / (f + i)`` (**f**, **i**, h)  ``b_f = log u``, ``b_i = -log u``
=====================  ===========================  ==============================================

The recurrent-side bias (``bias_hh``) of those slices is set to zero, so the sum of the two biases is
the chrono value. Elman RNN and IndRNN cells have no gate to set and are refused.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnnkit.cells import (GRUCell, IndRNNCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell, MinGRUCell,
                          MinLSTMCell)
from rnnkit.cells.base import RecurrentCell
from rnnkit.layers.recurrent import Recurrent

__all__ = ["chrono_init_"]

# cell type -> (slice index of the keep gate's bias, slice index of the input gate's bias or None,
#               number of slices, sign of the keep gate's bias)
_GATES: dict[type, tuple[int, int | None, int, float]] = {
    LSTMCell: (1, 0, 4, 1.0),
    LayerNormLSTMCell: (1, 0, 4, 1.0),
    GRUCell: (1, None, 3, 1.0),
    LayerNormGRUCell: (1, None, 3, 1.0),
    MinGRUCell: (0, None, 2, -1.0),
    MinLSTMCell: (0, 1, 3, 1.0),
}


def _cells(module: nn.Module) -> list[RecurrentCell]:
    if isinstance(module, RecurrentCell):
        return [module]
    found: list[RecurrentCell] = []
    for m in module.modules():
        if isinstance(m, Recurrent):
            found.extend(m.cells())
        elif isinstance(m, RecurrentCell) and not any(m is c for c in found):
            found.append(m)
    return found


def _chrono_cell(cell: RecurrentCell, max_timescale: float, generator: torch.Generator | None) -> None:
    kind = next((k for k in _GATES if type(cell) is k), None)
    if kind is None:
        extra = " (its recurrent weight range sets its memory: recurrent_max)" if isinstance(cell, IndRNNCell) else ""
        raise TypeError(f"chrono_init_: {type(cell).__name__} has no keep gate to initialise{extra}; "
                        f"expected one of {', '.join(k.__name__ for k in _GATES)}")
    keep, inp, n, sign = _GATES[kind]
    bias: Tensor | None = getattr(cell, "bias_ih", None)
    if bias is None:
        raise ValueError(f"chrono_init_: {type(cell).__name__} was built with bias=False; chrono initialisation "
                         "sets gate biases, so it needs bias=True")
    H = bias.shape[0] // n
    u = torch.rand(H, generator=generator, dtype=torch.float64) * (max_timescale - 2.0) + 1.0
    log_u = torch.log(u).to(bias)
    with torch.no_grad():
        bias[keep * H:(keep + 1) * H] = sign * log_u
        if inp is not None:
            bias[inp * H:(inp + 1) * H] = -log_u
        bias_hh = getattr(cell, "bias_hh", None)
        if bias_hh is not None:
            for s in (keep, inp):
                if s is not None:
                    bias_hh[s * H:(s + 1) * H] = 0.0


def chrono_init_(module: nn.Module, max_timescale: float, *, generator: torch.Generator | None = None) -> nn.Module:
    """Chrono-initialise the gate biases of every gated recurrence in ``module``, in place; returns it.

    ``module`` is an rnnkit layer (``LSTM``, ``GRU``, ``MinGRU``, ``MinLSTM``, ``layer_norm=True``
    variants), a cell, or any model holding them. ``max_timescale`` is the longest dependency to expect,
    in steps (e.g. the sequence length); it must be > 2. See the module docstring for what is set.

    >>> import rnnkit
    >>> lstm = rnnkit.chrono_init_(rnnkit.LSTM(8, 32), max_timescale=1000)
    >>> bool((lstm.bias_ih_l0[32:64] >= 0).all() and (lstm.bias_hh_l0[32:64] == 0).all())
    True
    """
    if isinstance(max_timescale, bool) or not isinstance(max_timescale, (int, float)) \
            or not math.isfinite(max_timescale) or max_timescale <= 2:
        raise ValueError(f"chrono_init_: max_timescale must be a number of steps > 2, got {max_timescale!r}")
    cells = _cells(module)
    if not cells:
        raise TypeError(f"chrono_init_: {type(module).__name__} holds no rnnkit recurrence to initialise")
    for cell in cells:
        _chrono_cell(cell, float(max_timescale), generator)
    return module
