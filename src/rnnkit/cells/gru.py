r"""Gated recurrent unit (Cho et al. 2014) in torch.nn.GRU's arrangement.

.. math::

    \begin{aligned}
    r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
    z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
    n_t &= \tanh\big(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})\big) \\
    h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}
    \end{aligned}

The reset gate multiplies the *projected* previous state (``W_hn h + b_hn``), as in cuDNN and torch,
not ``h`` before the projection as in the original paper. Gate order inside ``weight_ih`` (3H, I),
``weight_hh`` (3H, H), ``bias_ih``, ``bias_hh`` (3H): ``r, z, n``. Initialisation as torch:
U(-1/sqrt(H), 1/sqrt(H)).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnkit.cells._init import check_sizes, torch_init_bound, uniform_param
from rnnkit.cells.base import RecurrentCell

__all__ = ["GRUCell", "gru_gates"]


def gru_gates(xp: Tensor, hp: Tensor, h: Tensor) -> Tensor:
    """The GRU's pointwise part from the input (B, 3H) and recurrent (B, 3H) projections."""
    xr, xz, xn = xp.chunk(3, -1)
    hr, hz, hn = hp.chunk(3, -1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    if n.dtype != h.dtype:  # under autocast: projections in its dtype, the state in float32 (lerp
        dtype = torch.promote_types(n.dtype, h.dtype)  # does not promote, as * and + do in the LSTM)
        n, h, z = n.to(dtype), h.to(dtype), z.to(dtype)
    return torch.lerp(n, h, z)  # (1 - z) * n + z * h


class GRUCell(RecurrentCell):
    """GRU cell; the output is the state."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, device=None,
                 dtype=None) -> None:
        super().__init__()
        check_sizes("GRUCell", input_size, hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        kw = dict(bound=torch_init_bound(hidden_size), device=device, dtype=dtype)
        self.weight_ih = uniform_param(3 * hidden_size, input_size, **kw)
        self.weight_hh = uniform_param(3 * hidden_size, hidden_size, **kw)
        self.bias_ih = uniform_param(3 * hidden_size, **kw) if bias else None
        self.bias_hh = uniform_param(3 * hidden_size, **kw) if bias else None

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        return torch.zeros(batch_size, self.hidden_size, device=device or self.weight_ih.device,
                           dtype=dtype or self.weight_ih.dtype)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # (..., 3H)

    def recurrence(self, xp_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> Tensor:
        h_in = state if recurrent_mask is None else state * recurrent_mask
        return gru_gates(xp_t, F.linear(h_in, self.weight_hh, self.bias_hh), state)
