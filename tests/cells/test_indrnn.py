"""IndRNN: element-wise recurrence with the recurrent weight clipped to its range."""

from __future__ import annotations

import torch

from rnnkit import cells as C
from rnnkit.layers import IndRNN


def test_recurrent_weight_is_clipped_in_the_computation():
    cell = C.IndRNNCell(3, 4, recurrent_max=0.5).double()
    with torch.no_grad():
        cell.weight_hh.copy_(torch.tensor([3.0, -3.0, 0.2, 0.5]))
    h = torch.ones(1, 4, dtype=torch.float64)
    x = torch.zeros(1, 3, dtype=torch.float64)
    with torch.no_grad():
        cell.weight_ih.zero_(); cell.bias_ih.zero_()
    y, _ = cell.step(x, h)
    assert torch.allclose(y, torch.tensor([[0.5, 0.0, 0.2, 0.5]], dtype=torch.float64))


def test_each_unit_only_sees_its_own_past():
    cell = C.IndRNNCell(3, 4, nonlinearity="tanh").double()
    x = torch.randn(1, 3, dtype=torch.float64)
    h = torch.zeros(1, 4, dtype=torch.float64)
    h2 = h.clone(); h2[0, 1] = 1.0
    d = cell.step(x, h2)[0] - cell.step(x, h)[0]
    assert torch.count_nonzero(d[0, [0, 2, 3]]) == 0 and d[0, 1] != 0


def test_the_layer_repr_shows_its_own_options():
    assert repr(IndRNN(3, 4)) == "IndRNN(3, 4)"
    assert repr(IndRNN(3, 4, nonlinearity="tanh", recurrent_max=2.0)) == \
        "IndRNN(3, 4, nonlinearity='tanh', recurrent_max=2.0)"
