r"""Long short-term memory cell (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000),
torch.nn.LSTM's recurrence, with optional peepholes (Gers & Schmidhuber 2000) and projection
(Sak et al. 2014).

.. math::

    \begin{aligned}
    i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi} + p_i \odot c_{t-1}) \\
    f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf} + p_f \odot c_{t-1}) \\
    g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
    c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
    o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho} + p_o \odot c_t) \\
    h_t &= W_{hr}\,\big(o_t \odot \tanh(c_t)\big) \quad (\text{or without } W_{hr} \text{ when proj\_size}=0)
    \end{aligned}

Gate order inside ``weight_ih`` (4H, I), ``weight_hh`` (4H, H_out), ``bias_ih``, ``bias_hh`` (4H):
``i, f, g, o`` as in torch. ``weight_hr`` is (H_out, H) when ``proj_size > 0``. Peephole weights
``weight_ci``, ``weight_cf``, ``weight_co`` are (H,) vectors (the peepholes are diagonal).
Initialisation: U(-1/sqrt(H), 1/sqrt(H)) for every parameter as torch does, peepholes at zero, and
``forget_bias`` added to the forget-gate slice of ``bias_ih`` at construction (Jozefowicz et al. 2015
recommend 1.0), so the state dict stays torch's and torch's kernels still apply.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.cells._init import check_sizes, torch_init_bound, uniform_param
from rnnkit.cells.base import LSTMState, RecurrentCell

__all__ = ["LSTMCell", "lstm_gates"]


def lstm_gates(gates: Tensor, c: Tensor, peep: tuple | None = None):
    """The LSTM's pointwise part: ``gates`` (B, 4H) pre-activations -> (o_t * tanh-input, c_t, o_t)."""
    i, f, g, o = gates.chunk(4, -1)
    if peep is not None:
        i = i + peep[0] * c
        f = f + peep[1] * c
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    if peep is not None:
        o = o + peep[2] * c_new
    return c_new, torch.sigmoid(o)


class LSTMCell(RecurrentCell):
    """LSTM cell; ``step`` returns ``(h_t, LSTMState(h_t, c_t))``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, proj_size: int = 0,
                 peephole: bool = False, forget_bias: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        check_sizes("LSTMCell", input_size, hidden_size)
        if not isinstance(proj_size, int) or proj_size < 0 or proj_size >= hidden_size and proj_size:
            raise ValueError(f"LSTMCell: proj_size must be an int in [0, hidden_size={hidden_size}), "
                             f"got {proj_size!r}")
        if forget_bias and not bias:
            raise ValueError("LSTMCell: forget_bias needs bias=True (it initialises the forget-gate bias)")
        self.input_size, self.hidden_size, self.proj_size = input_size, hidden_size, proj_size
        self.peephole, self.forget_bias = peephole, float(forget_bias)
        out = proj_size or hidden_size
        kw = dict(bound=torch_init_bound(hidden_size), device=device, dtype=dtype)
        self.weight_ih = uniform_param(4 * hidden_size, input_size, **kw)
        self.weight_hh = uniform_param(4 * hidden_size, out, **kw)
        self.bias_ih = uniform_param(4 * hidden_size, **kw) if bias else None
        self.bias_hh = uniform_param(4 * hidden_size, **kw) if bias else None
        self.weight_hr = uniform_param(proj_size, hidden_size, **kw) if proj_size else None
        if peephole:
            for name in ("weight_ci", "weight_cf", "weight_co"):
                setattr(self, name, nn.Parameter(torch.zeros(hidden_size, device=device, dtype=dtype)))
        if forget_bias:
            with torch.no_grad():
                self.bias_ih[hidden_size:2 * hidden_size].add_(forget_bias)

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> LSTMState:
        device, dtype = device or self.weight_ih.device, dtype or self.weight_ih.dtype
        return LSTMState(torch.zeros(batch_size, self.output_size, device=device, dtype=dtype),
                         torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype))

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # (..., 4H)

    def recurrence(self, xp_t: Tensor, state: LSTMState, recurrent_mask: Tensor | None = None) -> LSTMState:
        h, c = state
        if recurrent_mask is not None:
            h = h * recurrent_mask
        gates = xp_t + F.linear(h, self.weight_hh, self.bias_hh)  # (B, 4H)
        peep = (self.weight_ci, self.weight_cf, self.weight_co) if self.peephole else None
        c_new, o = lstm_gates(gates, c, peep)
        h_new = o * torch.tanh(c_new)
        if self.weight_hr is not None:
            h_new = F.linear(h_new, self.weight_hr)
        return LSTMState(h_new, c_new)
