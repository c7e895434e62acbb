"""The fused IndRNN kernel equals the reference recurrence: values and gradients (float32 within 1e-5,
float64 within 1e-10 and gradcheck of the hand-written backward), ReLU and tanh, with lengths, initial
state, a recurrent-dropout mask, zoneout and the recurrent weight's clip. Every test runs twice: with the
C++ loops (``csrc/indrnn.cpp``; a recorder proves they ran) and with the per-step torch ops
(``RNNKIT_CPP=0``)."""

from __future__ import annotations

import shutil

import pytest
import torch

import rnnkit
from rnnkit import cells as C
from rnnkit.kernels import _fused_common as fc
from rnnkit.kernels import fused_indrnn
from tests.kernels._util import assert_close, cpp_recorder, values_and_grads

_COMPILER = shutil.which("c++") is not None or shutil.which("g++") is not None


@pytest.fixture(autouse=True, params=["cpp", "python"])
def loops(request, monkeypatch):
    """Each test with the C++ loops (their calls recorded, and required to happen) and without them."""
    if request.param == "python":
        monkeypatch.setenv("RNNKIT_CPP", "0")
        yield None
        return
    if not _COMPILER:
        pytest.skip("no C++ compiler on this machine: the per-step torch ops run instead")
    rec = cpp_recorder(fused_indrnn, monkeypatch)
    yield rec
    assert "indrnn_fwd" in rec.calls

SHAPES = [(1, 1, 3, 7), (3, 9, 4, 5), (5, 20, 6, 8)]  # (B, T, I, H): B=1, T=1, odd H


def _cell(I, H, nonlinearity, dtype, recurrent_max=1.0, bias=True):
    cell = C.IndRNNCell(I, H, bias, nonlinearity, recurrent_max=recurrent_max).to(dtype)
    with torch.no_grad():  # some weights outside the clip, some negative: the clip's gradient is tested
        cell.weight_hh.uniform_(-1.3 * recurrent_max, 1.3 * recurrent_max)
    return cell


def _compare(cell, x, h0, tol, **kw):
    x, h0 = x.to(cell.weight_ih.dtype).requires_grad_(), h0.to(cell.weight_ih.dtype).requires_grad_()
    inputs, params = [x, h0], list(cell.parameters())
    torch.manual_seed(11)  # zoneout's masks: the same draws in both
    fast = values_and_grads(lambda: fused_indrnn.indrnn_sequence(cell, x, h0, **kw), inputs, params)
    torch.manual_seed(11)
    ref = values_and_grads(lambda: cell.reference_forward(x, h0, **kw), inputs, params)
    assert_close(fast[0], ref[0], tol)
    assert_close(fast[1], ref[1], tol)


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float32_equals_reference(nonlinearity, shape):
    torch.manual_seed(0)
    B, T, I, H = shape
    _compare(_cell(I, H, nonlinearity, torch.float32), torch.randn(B, T, I), torch.randn(B, H), 1e-5)


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_lengths_mask_and_zoneout_equal_reference(nonlinearity):
    torch.manual_seed(1)
    B, T, I, H = 5, 11, 3, 6
    x, h0 = torch.randn(B, T, I), torch.randn(B, H)
    lengths, mask = torch.tensor([4, 11, 0, 1, 7]), torch.rand(B, H) * 2
    for kw in ({"lengths": lengths}, {"recurrent_mask": mask}, {"zoneout": 0.3},
               {"zoneout": 0.3, "zoneout_expected": True},
               {"lengths": lengths, "zoneout": 0.3, "recurrent_mask": mask}):
        _compare(_cell(I, H, nonlinearity, torch.float64, recurrent_max=0.8), x, h0, 1e-10, **kw)
        _compare(_cell(I, H, nonlinearity, torch.float32, bias=False), x, h0, 1e-5, **kw)


@pytest.mark.parametrize("relu,masked,zoned,lengths", [
    (True, False, False, None), (False, False, False, None), (True, True, True, None),
    (False, True, True, torch.tensor([5, 3, 0])), (True, False, False, torch.tensor([4, 4, 1]))],
    ids=["relu", "tanh", "relu_mask_zoneout", "tanh_all_lengths", "relu_lengths"])
def test_gradcheck_of_the_hand_written_backward(relu, masked, zoned, lengths, loops):
    torch.manual_seed(2)
    B, T, H = 3, 5, 4
    d = dict(dtype=torch.float64)
    # pre-activations kept away from ReLU's kink, where finite differences are not a derivative
    xp = (torch.randn(T, B, H, **d).sign() * (0.2 + torch.rand(T, B, H, **d))).requires_grad_()
    u = (torch.rand(H, **d) * 0.3).requires_grad_()
    keep = (torch.rand(T, 1, B, H, **d) < 0.3).to(torch.float64) if zoned else None
    args = (xp, u, torch.randn(B, H, **d).mul(0.1).requires_grad_(), torch.rand(B, H, **d) * 2 if masked else None,
            keep, fc.batching(lengths, B, T), relu)
    assert torch.autograd.gradcheck(lambda *a: fused_indrnn._IndRNNFn.apply(*a), args)
    assert loops is None or "indrnn_bwd" in loops.calls


def test_the_layer_runs_the_kernel_and_matches_its_cell_path():
    """rnnkit.IndRNN on backend="auto" (fused) equals backend="cell", stacked and bidirectional, with
    lengths, in float64."""
    torch.manual_seed(3)
    fast = rnnkit.IndRNN(4, 6, num_layers=2, bidirectional=True, batch_first=True).double()
    slow = rnnkit.IndRNN(4, 6, num_layers=2, bidirectional=True, batch_first=True, backend="cell").double()
    slow.load_state_dict(fast.state_dict())
    assert fast.select_backend() == "fused"
    x = torch.randn(3, 8, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([8, 2, 5])
    out = [m(x, lengths=lengths) for m in (fast, slow)]
    torch.testing.assert_close(out[0][0], out[1][0], atol=1e-12, rtol=0)
    torch.testing.assert_close(out[0][1], out[1][1], atol=1e-12, rtol=0)
    g = [torch.autograd.grad(o[0].sin().sum() + o[1].sum(), [x, *m.parameters()]) for o, m in zip(out, (fast, slow))]
    for a, b in zip(*g):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_empty_sequence_and_no_grad():
    cell = _cell(3, 4, "relu", torch.float32)
    h0 = torch.randn(2, 4)
    y, hn = fused_indrnn.indrnn_sequence(cell, torch.randn(2, 0, 3), h0)
    assert y.shape == (2, 0, 4) and torch.equal(hn, h0)
    with torch.no_grad():
        x = torch.randn(2, 6, 3)
        y, hn = fused_indrnn.indrnn_sequence(cell, x, h0)
        ry, rh = cell.reference_forward(x, h0)
    torch.testing.assert_close(y, ry, atol=2e-2, rtol=0)  # bfloat16 GEMMs of different layouts: 1-ulp apart
    torch.testing.assert_close(hn, rh, atol=1e-6, rtol=0)


def test_under_autocast_the_recurrence_runs_in_the_states_dtype_as_on_the_cell_path():
    torch.manual_seed(4)
    fast = rnnkit.IndRNN(3, 4, batch_first=True)
    slow = rnnkit.IndRNN(3, 4, batch_first=True, backend="cell")
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (y, h), (ry, rh) = fast(x), slow(x)
    assert y.dtype == ry.dtype == torch.float32 and h.dtype == rh.dtype
    torch.testing.assert_close(y, ry, atol=2e-2, rtol=0)  # bfloat16 GEMMs of different layouts: 1-ulp apart
