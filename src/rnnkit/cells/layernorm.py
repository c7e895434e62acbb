r"""Layer-normalised LSTM and GRU cells (Ba, Kiros & Hinton 2016, "Layer Normalization", sec. 3.1).

Layer normalisation, :math:`\mathrm{LN}(a; \gamma, \beta) = \gamma \odot (a - \mu(a)) / \sqrt{\sigma^2(a)
+ \epsilon} + \beta` over the feature axis, is applied separately to the input and the recurrent
projections (so each is on the same scale whatever the state's magnitude), and in the LSTM to the cell
before the output nonlinearity:

.. math::

    \begin{aligned}
    \text{LSTM:}\quad (i, f, g, o) &= \mathrm{LN}(W_{ih} x_t; \gamma_{ih}) + \mathrm{LN}(W_{hh} h_{t-1}; \gamma_{hh})
        + b_{ih} + b_{hh} \\
    c_t &= \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g), \qquad
    h_t = \sigma(o) \odot \tanh(\mathrm{LN}(c_t; \gamma_c, \beta_c)) \\
    \text{GRU:}\quad a^x &= \mathrm{LN}(W_{ih} x_t; \gamma_{ih}) + b_{ih}, \qquad
    a^h = \mathrm{LN}(W_{hh} h_{t-1}; \gamma_{hh}) + b_{hh} \\
    r &= \sigma(a^x_r + a^h_r),\ z = \sigma(a^x_z + a^h_z),\ n = \tanh(a^x_n + r \odot a^h_n),\
    h_t = (1 - z) \odot n + z \odot h_{t-1}
    \end{aligned}

The normalisation runs over the whole 4H (LSTM) or 3H (GRU) projection, as in haste's
``LayerNormLSTM``. Gate orders are torch's (``i, f, g, o`` and ``r, z, n``). Weights and biases are
initialised as torch's (U(-1/sqrt(H), 1/sqrt(H))), the gains ``ln_*_weight`` at 1 and ``ln_c_bias``
at 0. The projection biases are not normalised, so ``forget_bias`` still initialises the forget gate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.cells._init import check_sizes, torch_init_bound, uniform_param
from rnnkit.cells.base import LSTMState, RecurrentCell
from rnnkit.cells.gru import gru_gates
from rnnkit.cells.lstm import lstm_gates

__all__ = ["LayerNormLSTMCell", "LayerNormGRUCell"]

EPS = 1e-5


def _ones(n: int, device, dtype) -> nn.Parameter:
    return nn.Parameter(torch.ones(n, device=device, dtype=dtype))


class _LayerNormCell(RecurrentCell):
    """Shared construction: projections without bias inside the norm, gains on both."""

    n_gates: int

    def __init__(self, input_size: int, hidden_size: int, bias: bool, device, dtype) -> None:
        super().__init__()
        check_sizes(type(self).__name__, input_size, hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        g = self.n_gates * hidden_size
        kw = dict(bound=torch_init_bound(hidden_size), device=device, dtype=dtype)
        self.weight_ih = uniform_param(g, input_size, **kw)
        self.weight_hh = uniform_param(g, hidden_size, **kw)
        self.bias_ih = uniform_param(g, **kw) if bias else None
        self.bias_hh = uniform_param(g, **kw) if bias else None
        self.ln_ih_weight = _ones(g, device, dtype)
        self.ln_hh_weight = _ones(g, device, dtype)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        return torch.zeros(batch_size, self.hidden_size, device=device or self.weight_ih.device,
                           dtype=dtype or self.weight_ih.dtype)

    def project_input(self, x: Tensor) -> Tensor:
        a = F.layer_norm(F.linear(x, self.weight_ih), (self.weight_ih.shape[0],), self.ln_ih_weight, None, EPS)
        return a if self.bias_ih is None else a + self.bias_ih

    def _project_state(self, h: Tensor, recurrent_mask: Tensor | None) -> Tensor:
        if recurrent_mask is not None:
            h = h * recurrent_mask
        a = F.layer_norm(F.linear(h, self.weight_hh), (self.weight_hh.shape[0],), self.ln_hh_weight, None, EPS)
        return a if self.bias_hh is None else a + self.bias_hh


class LayerNormLSTMCell(_LayerNormCell):
    """Layer-normalised LSTM cell; state :class:`LSTMState`."""

    n_gates = 4

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, forget_bias: float = 0.0,
                 device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype)
        if forget_bias and not bias:
            raise ValueError("LayerNormLSTMCell: forget_bias needs bias=True")
        self.forget_bias = float(forget_bias)
        self.ln_c_weight = _ones(hidden_size, device, dtype)
        self.ln_c_bias = nn.Parameter(torch.zeros(hidden_size, device=device, dtype=dtype))
        if forget_bias:
            with torch.no_grad():
                self.bias_ih[hidden_size:2 * hidden_size].add_(forget_bias)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> LSTMState:
        h = super().init_state(batch_size, device=device, dtype=dtype)
        return LSTMState(h, torch.zeros_like(h))

    def recurrence(self, xp_t: Tensor, state: LSTMState, recurrent_mask: Tensor | None = None) -> LSTMState:
        h, c = state
        gates = xp_t + self._project_state(h, recurrent_mask)  # (B, 4H)
        c_new, o = lstm_gates(gates, c)
        c_norm = F.layer_norm(c_new, (self.hidden_size,), self.ln_c_weight, self.ln_c_bias, EPS)
        return LSTMState(o * torch.tanh(c_norm), c_new)


class LayerNormGRUCell(_LayerNormCell):
    """Layer-normalised GRU cell; the output is the state."""

    n_gates = 3

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, device=None,
                 dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def recurrence(self, xp_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> Tensor:
        return gru_gates(xp_t, self._project_state(state, recurrent_mask), state)
