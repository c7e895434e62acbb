"""MinGRU/MinLSTM as one chunked scan equal the step loop: values and gradients, lengths, an initial
state, gradcheck of the hand-written backward, and T=4096 with |x| <= 50 in float32; each for the C++
chunk loops (``csrc/min_rnn.cpp``) and the torch-op chunks (``RNNKIT_CPP=0``)."""

from __future__ import annotations

import shutil

import pytest
import torch

import rnnkit
from rnnkit import cells as C
from rnnkit.kernels import fused_min
from tests.kernels._util import assert_close, cpp_recorder, values_and_grads

KINDS = {C.MinGRUCell: fused_min._MinGRU, C.MinLSTMCell: fused_min._MinLSTM}
needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="no C++ compiler on this machine: the torch ops run instead")
CPP = pytest.mark.parametrize("cpp", [pytest.param("1", marks=needs_compiler), "0"], ids=["cpp", "torch_ops"])


@pytest.fixture
def recorder(monkeypatch):
    return cpp_recorder(fused_min, monkeypatch)


@pytest.mark.parametrize("cls", list(KINDS), ids=lambda c: c.__name__)
@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (4, 7, 3, 5), (3, 45, 2, 7)], ids=str)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
@CPP
def test_equals_the_step_loop(cls, shape, dtype, tol, cpp, monkeypatch):
    monkeypatch.setenv("RNNKIT_CPP", cpp)
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
@CPP
def test_gradcheck_of_the_hand_written_backward(cls, cpp, monkeypatch):
    monkeypatch.setenv("RNNKIT_CPP", cpp)
    monkeypatch.setattr(fused_min, "CHUNK", 4)  # three chunks, the last partial
    d = dict(dtype=torch.float64, requires_grad=True)
    n = 2 if cls is C.MinGRUCell else 3
    x, w = torch.randn(2, 9, 3, **d), torch.randn(n * 4, 3, **d)
    b, h0 = torch.randn(n * 4, **d), torch.randn(2, 4, **d)
    assert torch.autograd.gradcheck(lambda *a: fused_min._MinFn.apply(*a, KINDS[cls]), (x, w, b, h0))


@pytest.mark.parametrize("cls", list(KINDS), ids=lambda c: c.__name__)
@CPP
def test_T4096_large_inputs_float32(cls, cpp, monkeypatch):
    monkeypatch.setenv("RNNKIT_CPP", cpp)
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


@needs_compiler
def test_auto_backend_runs_the_cpp_loops_for_both_cells(recorder):
    for layer, op in ((rnnkit.MinGRU(4, 70, num_layers=2, batch_first=True), "min_gru"),
                      (rnnkit.MinLSTM(4, 6, batch_first=True, bidirectional=True), "min_lstm")):
        recorder.calls.clear()
        y, _ = layer(torch.randn(3, 10, 4))
        y.sum().backward()  # d_ys: expanded ones (stride 0), copied for the C++ pass
        assert recorder.calls == [f"{op}_fwd"] * 2 + [f"{op}_bwd"] * 2, recorder.calls


@needs_compiler
@pytest.mark.parametrize("cls", [rnnkit.MinGRU, rnnkit.MinLSTM], ids=lambda c: c.__name__)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("B", [1, 3])
def test_cpp_and_torch_ops_agree_on_a_wide_layer_with_an_odd_width(cls, B, bias, monkeypatch):
    """H=70 (at B=1 split over the threads in blocks of 48 and 22 units), no bias, lengths, several
    chunks, a non-contiguous input."""
    monkeypatch.setattr(fused_min, "CHUNK", 32)
    layer = cls(5, 70, batch_first=True, bias=bias)
    x = torch.randn(77, 3, 5)[:, :B].transpose(0, 1).requires_grad_()
    lengths = torch.tensor([77, 40, 1][:B])
    out = {}
    for cpp in ("1", "0"):
        monkeypatch.setenv("RNNKIT_CPP", cpp)
        out[cpp] = values_and_grads(lambda: layer(x, lengths=lengths), [x], list(layer.parameters()))
    assert_close(out["1"][0], out["0"][0], 1e-5)
    assert_close(out["1"][1], out["0"][1], 1e-5)


@CPP
def test_minlstm_gates_far_in_the_tails(cpp, monkeypatch):
    """Gate pre-activations of +-300, where sigmoid(kf) and sigmoid(ki) underflow in float32: the C++
    pass forms f / (f + i) from the pre-activations' difference, the torch ops from softplus."""
    monkeypatch.setenv("RNNKIT_CPP", cpp)
    cell = C.MinLSTMCell(3, 8)
    with torch.no_grad():
        cell.weight_ih.mul_(100)
    x = torch.randn(2, 50, 3) * 3
    with torch.no_grad():
        y, _ = fused_min.min_sequence(cell, x)
        y_ref, _ = cell.to(torch.float64).reference_forward(x.double())
    assert torch.isfinite(y).all()
    assert torch.allclose(y.double(), y_ref, atol=1e-5, rtol=1e-5)
