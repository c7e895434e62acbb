r"""Independently recurrent neural network cell (Li et al. 2018, "Independently Recurrent Neural
Network (IndRNN): Building A Longer and Deeper RNN").

.. math::

    h_t = \phi(W_{ih} x_t + b_{ih} + u \odot h_{t-1}), \qquad
    u = \mathrm{clip}(\texttt{weight\_hh}, -u_{\max}, u_{\max})

Each unit has one scalar recurrent weight, so the gradient through time of unit ``k`` is a product
of ``u_k`` and the derivative of ``phi``: bounding ``|u_k|`` bounds explosion, and ``|u_k|`` near 1
with ReLU keeps memory over thousands of steps. The paper clips ``|u|`` to ``2^{1/T}`` for a horizon
of ``T`` steps; the default ``recurrent_max=1.0`` forbids growth. The clip is applied in the forward
computation (gradients outside the range are zero), so the stored weight needs no in-place edit.

Parameters: ``weight_ih`` (H, I) and ``bias_ih`` (H) from U(-1/sqrt(H), 1/sqrt(H)) as torch's RNN;
``weight_hh`` (H,) from U(0, recurrent_max) as in the paper. ``nonlinearity`` is ``"relu"`` (the
paper's) or ``"tanh"``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.cells._init import check_sizes, torch_init_bound, uniform_param
from rnnkit.cells.base import RecurrentCell

__all__ = ["IndRNNCell"]


class IndRNNCell(RecurrentCell):
    """IndRNN cell; the output is the state."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "relu",
                 *, recurrent_max: float = 1.0, device=None, dtype=None) -> None:
        super().__init__()
        check_sizes("IndRNNCell", input_size, hidden_size)
        if nonlinearity not in ("relu", "tanh"):
            raise ValueError(f"IndRNNCell: nonlinearity must be 'relu' or 'tanh', got {nonlinearity!r}")
        if not recurrent_max > 0:
            raise ValueError(f"IndRNNCell: recurrent_max must be > 0, got {recurrent_max!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.nonlinearity, self.recurrent_max = nonlinearity, float(recurrent_max)
        kw = dict(bound=torch_init_bound(hidden_size), device=device, dtype=dtype)
        self.weight_ih = uniform_param(hidden_size, input_size, **kw)
        self.bias_ih = uniform_param(hidden_size, **kw) if bias else None
        u = torch.empty(hidden_size, device=device, dtype=dtype).uniform_(0.0, self.recurrent_max)
        self.weight_hh = nn.Parameter(u)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        return torch.zeros(batch_size, self.hidden_size, device=device or self.weight_ih.device,
                           dtype=dtype or self.weight_ih.dtype)

    def recurrent_weight(self) -> Tensor:
        """The effective (clipped) recurrent weight vector ``u``."""
        return self.weight_hh.clamp(-self.recurrent_max, self.recurrent_max)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # (..., H)

    def recurrence(self, xp_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> Tensor:
        h = state if recurrent_mask is None else state * recurrent_mask
        pre = xp_t + self.recurrent_weight() * h
        return torch.relu(pre) if self.nonlinearity == "relu" else torch.tanh(pre)
