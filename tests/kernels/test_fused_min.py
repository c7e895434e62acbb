"""MinGRU/MinLSTM as one chunked scan equal the step loop: values and gradients, lengths, an initial
state, gradcheck of the hand-written backward, and T=4096 with |x| <= 50 in float32."""

from __future__ import annotations

import pytest
import torch

from rnnkit import cells as C
from rnnkit.kernels import fused_min
from tests.kernels._util import assert_close, values_and_grads

KINDS = {C.MinGRUCell: fused_min._MinGRU, C.MinLSTMCell: fused_min._MinLSTM}


@pytest.mark.parametrize("cls", list(KINDS), ids=lambda c: c.__name__)
@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (4, 7, 3, 5), (3, 45, 2, 7)], ids=str)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_equals_the_step_loop(cls, shape, dtype, tol, monkeypatch):
    monkeypatch.setattr(fused_min, "CHUNK", 16)  # several chunks and a partial one
    B, T, I, H = shape
    cell = cls(I, H).to(dtype)
    x = (torch.randn(B, T, I, dtype=dtype) * 5).requires_grad_()
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    for lengths in (None, torch.tensor([T, 0, max(T - 3, 1), 1][:B])):
        fast = values_and_grads(lambda: fused_min.min_sequence(cell, x, h0, lengths), [x, h0],
                                list(cell.parameters()))
        ref = values_and_grads(lambda: cell.reference_forward(x, h0, lengths=lengths), [x, h0],
                               list(cell.parameters()))
        assert_close(fast[0], ref[0], tol)
        assert_close(fast[1], ref[1], tol)


@pytest.mark.parametrize("cls", list(KINDS), ids=lambda c: c.__name__)
def test_gradcheck_of_the_hand_written_backward(cls):
    d = dict(dtype=torch.float64, requires_grad=True)
    n = 2 if cls is C.MinGRUCell else 3
    x, w = torch.randn(2, 9, 3, **d), torch.randn(n * 4, 3, **d)
    b, h0 = torch.randn(n * 4, **d), torch.randn(2, 4, **d)
    assert torch.autograd.gradcheck(lambda *a: fused_min._MinFn.apply(*a, KINDS[cls]), (x, w, b, h0))


@pytest.mark.parametrize("cls", list(KINDS), ids=lambda c: c.__name__)
def test_T4096_large_inputs_float32(cls):
    cell = cls(4, 16)
    x = (torch.rand(2, 4096, 4) * 2 - 1) * 50
    with torch.no_grad():
        y, _ = fused_min.min_sequence(cell, x)
        y_ref, _ = cell.reference_forward(x)
    assert torch.isfinite(y).all()
    assert torch.allclose(y, y_ref, atol=1e-5, rtol=1e-5)


def test_g_is_the_papers_activation():
    x = torch.linspace(-30, 30, 1001, dtype=torch.float64)
    assert torch.allclose(fused_min._g(x)[0], C.minimal.g(x), rtol=1e-15, atol=0)
