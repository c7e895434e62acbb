r"""Elman recurrent cell (Elman 1990), torch.nn.RNN's recurrence.

.. math::

    h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}), \qquad \phi \in \{\tanh, \mathrm{ReLU}\}

Parameters: ``weight_ih`` (H, I), ``weight_hh`` (H, H), ``bias_ih`` (H), ``bias_hh`` (H), named and
initialised as in ``torch.nn.RNNCell``: every entry from U(-1/sqrt(H), 1/sqrt(H)).
The output is the state, ``y_t = h_t``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnkit.cells._init import check_sizes, torch_init_bound, uniform_param
from rnnkit.cells.base import RecurrentCell

__all__ = ["ElmanRNNCell"]

_NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


class ElmanRNNCell(RecurrentCell):
    """Elman RNN cell with ``nonlinearity`` ``"tanh"`` (default) or ``"relu"``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 *, device=None, dtype=None) -> None:
        super().__init__()
        check_sizes("ElmanRNNCell", input_size, hidden_size)
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"ElmanRNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.input_size, self.hidden_size, self.nonlinearity = input_size, hidden_size, nonlinearity
        k = torch_init_bound(hidden_size)
        kw = dict(bound=k, device=device, dtype=dtype)
        self.weight_ih = uniform_param(hidden_size, input_size, **kw)
        self.weight_hh = uniform_param(hidden_size, hidden_size, **kw)
        self.bias_ih = uniform_param(hidden_size, **kw) if bias else None
        self.bias_hh = uniform_param(hidden_size, **kw) if bias else None
        self._phi = _NONLINEARITIES[nonlinearity]

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        return torch.zeros(batch_size, self.hidden_size, device=device or self.weight_ih.device,
                           dtype=dtype or self.weight_ih.dtype)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # (..., H)

    def recurrence(self, xp_t: Tensor, state: Tensor, recurrent_mask: Tensor | None = None) -> Tensor:
        h = state if recurrent_mask is None else state * recurrent_mask
        return self._phi(xp_t + F.linear(h, self.weight_hh, self.bias_hh))
