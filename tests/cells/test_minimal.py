"""MinGRU/MinLSTM: the parallel scan equals the step loop, also over long sequences of large inputs."""

from __future__ import annotations

import pytest
import torch

from rnnkit import cells as C


@pytest.mark.parametrize("cls", [C.MinGRUCell, C.MinLSTMCell], ids=lambda c: c.__name__)
def test_parallel_equals_loop_at_T4096_with_large_inputs(cls):
    cell = cls(4, 16)
    x = (torch.rand(2, 4096, 4) * 2 - 1) * 50
    with torch.no_grad():
        y, s = cell(x)
        y_ref, s_ref = cell.reference_forward(x)
    assert torch.isfinite(y).all()
    assert torch.allclose(y, y_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [C.MinGRUCell, C.MinLSTMCell], ids=lambda c: c.__name__)
def test_gradients_equal_the_loop_and_stay_finite(cls):
    cell = cls(3, 5).double()
    x = (torch.randn(2, 40, 3, dtype=torch.float64) * 20).requires_grad_()
    h0 = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    y, _ = cell(x, h0)
    g1 = torch.autograd.grad(y.square().sum(), [x, h0, cell.weight_ih])
    y2, _ = cell.reference_forward(x, h0)
    g2 = torch.autograd.grad(y2.square().sum(), [x, h0, cell.weight_ih])
    for a, b in zip(g1, g2):
        assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-8, rtol=1e-8)


def test_log_g_is_the_log_of_g():
    x = torch.linspace(-30, 30, 101, dtype=torch.float64)
    assert torch.allclose(C.minimal.log_g(x).exp(), C.minimal.g(x), rtol=1e-12)
