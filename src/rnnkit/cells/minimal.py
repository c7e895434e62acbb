r"""MinGRU and MinLSTM (Feng et al. 2024, "Were RNNs All We Needed?").

Their gates depend on the input only, so the recurrence is linear in the state and a whole sequence
is one parallel scan (:func:`rnnkit.kernels.scan.log_space_scan`):

.. math::

    \begin{aligned}
    \text{MinGRU:}\quad z_t &= \sigma(W_z x_t + b_z), \quad \tilde h_t = g(W_h x_t + b_h), \quad
        h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t \\
    \text{MinLSTM:}\quad f_t &= \sigma(W_f x_t + b_f), \quad i_t = \sigma(W_i x_t + b_i), \quad
        f'_t = \frac{f_t}{f_t + i_t}, \quad i'_t = \frac{i_t}{f_t + i_t} \\
    h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t
    \end{aligned}

with the paper's positive activation :math:`g(x) = x + \tfrac12` for :math:`x \ge 0` and
:math:`\sigma(x)` otherwise, whose logarithm is cheap and finite. In log space
:math:`\log(1-z) = -\mathrm{softplus}(k)`, :math:`\log z = -\mathrm{softplus}(-k)`,
:math:`\log f' = -\mathrm{softplus}(\log i - \log f)`. ``step`` computes the same update directly in
real space (``f' = sigmoid(log f - log i)``, never ``f / (f + i)``, which is 0/0 when both underflow).

Parameters: ``weight_ih`` ((2H or 3H), I) with gate order ``z, h`` (MinGRU) or ``f, i, h``
(MinLSTM), and ``bias_ih``; initialised like ``torch.nn.Linear``: U(-1/sqrt(I), 1/sqrt(I)).
There are no recurrent weights, so recurrent dropout does not apply.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnkit.cells._init import check_sizes, uniform_param
from rnnkit.cells.base import RecurrentCell
from rnnkit.kernels.scan import log_space_scan

__all__ = ["MinGRUCell", "MinLSTMCell", "g", "log_g"]


def g(x: Tensor) -> Tensor:
    """The positive activation of Feng et al.: ``x + 0.5`` for ``x >= 0``, ``sigmoid(x)`` below."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """``log(g(x))`` without forming ``g(x)`` where it would underflow."""
    return torch.where(x >= 0, torch.log(torch.relu(x) + 0.5), -F.softplus(-x))


class _MinCell(RecurrentCell):
    n_gates: int

    def __init__(self, input_size: int, hidden_size: int, bias: bool, device, dtype) -> None:
        super().__init__()
        check_sizes(type(self).__name__, input_size, hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        kw = dict(bound=1.0 / math.sqrt(input_size), device=device, dtype=dtype)
        self.weight_ih = uniform_param(self.n_gates * hidden_size, input_size, **kw)
        self.bias_ih = uniform_param(self.n_gates * hidden_size, **kw) if bias else None

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        return torch.zeros(batch_size, self.hidden_size, device=device or self.weight_ih.device,
                           dtype=dtype or self.weight_ih.dtype)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # (..., n_gates * H)

    def log_coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        """``(log a, log b)`` of ``h_t = a_t h_{t-1} + b_t`` from the projected input."""
        raise NotImplementedError

    def forward(self, x: Tensor, state: Tensor | None = None, *, lengths: Tensor | None = None,
                recurrent_mask: Tensor | None = None, zoneout: float = 0.0, zoneout_expected: bool = False):
        """The whole sequence as one parallel scan (zoneout mixes states step by step: it loops instead)."""
        if recurrent_mask is not None:
            raise ValueError(f"{type(self).__name__} has no recurrent weights: recurrent dropout does not apply")
        if zoneout:
            return super().forward(x, state, lengths=lengths, zoneout=zoneout, zoneout_expected=zoneout_expected)
        h0 = self._default_state(x, state)
        log_a, log_b = self.log_coefficients(self.project_input(x))
        h = log_space_scan(log_a, log_b, state)  # (B, T, H); state None is a zero start
        if lengths is None:
            return h, (h[:, -1] if h.shape[1] else h0)
        return _mask_by_lengths(h, lengths, h0)


def _mask_by_lengths(h: Tensor, lengths: Tensor, h0: Tensor):
    """Zero outputs past each length; the final state is the last valid step (``h0`` if none)."""
    T = h.shape[1]
    alive = torch.arange(T, device=h.device) < lengths.unsqueeze(1)  # (B, T)
    idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.shape[2])
    last = h.gather(1, idx).squeeze(1) if T else h0
    last = torch.where((lengths > 0).unsqueeze(1), last, h0)
    return torch.where(alive.unsqueeze(-1), h, 0.0), last  # not h * alive: a NaN state gave NaN padding


class MinGRUCell(_MinCell):
    """MinGRU cell; the output is the state."""

    n_gates = 2

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def log_coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        k, hh = xp.chunk(2, -1)
        return -F.softplus(k), -F.softplus(-k) + log_g(hh)

    def recurrence(self, xp_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> Tensor:
        k, hh = xp_t.chunk(2, -1)
        return torch.lerp(state, g(hh), torch.sigmoid(k))  # (1 - z) h + z g(hh)


class MinLSTMCell(_MinCell):
    """MinLSTM cell; the output is the state."""

    n_gates = 3

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def log_coefficients(self, xp: Tensor) -> tuple[Tensor, Tensor]:
        kf, ki, hh = xp.chunk(3, -1)
        log_f, log_i = -F.softplus(-kf), -F.softplus(-ki)
        return -F.softplus(log_i - log_f), -F.softplus(log_f - log_i) + log_g(hh)

    def recurrence(self, xp_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> Tensor:
        kf, ki, hh = xp_t.chunk(3, -1)
        d = F.softplus(-ki) - F.softplus(-kf)  # log f - log i
        return torch.sigmoid(d) * state + torch.sigmoid(-d) * g(hh)
