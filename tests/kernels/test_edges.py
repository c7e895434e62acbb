"""Edge cases of the fast kernels found by a QA sweep: empty batches and second derivatives."""

from __future__ import annotations

import pytest
import torch

import rnnkit


@pytest.mark.parametrize("cls", [rnnkit.MinGRU, rnnkit.MinLSTM])
def test_an_empty_batch_through_the_scan_is_empty_not_a_crash(cls):
    """B=0 divided by zero in the C++ chunk pass: SIGFPE killed the interpreter."""
    layer = cls(3, 4)
    with torch.no_grad():
        y, h = layer(torch.randn(5, 0, 3))
    assert tuple(y.shape) == (5, 0, 4) and tuple(h.shape) == (1, 0, 4)


@pytest.mark.parametrize("make", [lambda: rnnkit.IndRNN(3, 4, dtype=torch.float64),
                                  lambda: rnnkit.LSTM(3, 4, layer_norm=True, dtype=torch.float64),
                                  lambda: rnnkit.GRU(3, 4, layer_norm=True, dtype=torch.float64),
                                  lambda: rnnkit.MinGRU(3, 4, dtype=torch.float64)])
def test_second_derivatives_are_refused_by_hand_written_backwards_and_exact_on_the_cells(make):
    """The fused IndRNN's double backward dropped the recurrence silently (off by 12.6 of 29.8); the
    others failed deep in torch ('mm(): functions with out=...')."""
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="no second derivative .* backend='cell'"):
        g, = torch.autograd.grad(layer(x)[0].pow(2).sum(), x, create_graph=True)
        torch.autograd.grad(g.pow(2).sum(), x)
    cell = make()
    cell.load_state_dict(layer.state_dict())
    cell.backend = "cell"
    assert torch.autograd.gradgradcheck(lambda inp: cell(inp)[0], (x[:3, :1].detach().requires_grad_(),))
