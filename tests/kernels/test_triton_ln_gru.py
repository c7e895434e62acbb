"""The layer-norm GRU's Triton row passes (:mod:`rnnkit.kernels.triton_ln_gru`): with
``RNNKIT_TRITON=force`` the fused GRU runs its step loops through them, and values and gradients equal
the reference recurrence, with lengths, a recurrent-dropout mask, zoneout and without a bias. No GPU
here: Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors, tiny shapes (it is slow)."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit import cells as C
from rnnkit.kernels import _fused_common as fc
from rnnkit.kernels import fused_gru, triton_ln_gru
from tests.kernels._util import (assert_as_accurate, assert_close, needs_triton, run_in_triton_child, triton_recorder,
                                 float64_twins, random_gains, values_and_grads)


@needs_triton
def test_the_triton_gru_row_passes_in_a_fresh_process():
    run_in_triton_child(__file__, passed=10)  # the tests below and the wanted() check


@pytest.fixture
def triton_ops(monkeypatch):
    """The Triton row passes in the interpreter, forced for CPU tensors, with their calls recorded."""
    return triton_recorder(triton_ln_gru, monkeypatch)


def _compare(cell, x, h0, tol, **kw):
    inputs, params = [x, h0], list(cell.parameters())
    torch.manual_seed(11)  # zoneout's masks: the same draws in both
    fast = values_and_grads(lambda: fused_gru.gru_sequence(cell, x, h0, **kw), inputs, params)
    torch.manual_seed(11)
    ref = values_and_grads(lambda: cell.reference_forward(x, h0, **kw), inputs, params)
    assert_close(fast[0], ref[0], tol)
    assert_close(fast[1], ref[1], tol)


def _case(dtype, B=3, T=7, I=3, H=5, bias=True, seed=0):
    torch.manual_seed(seed)
    cell = C.LayerNormGRUCell(I, H, bias=bias).to(dtype)
    if dtype == torch.float64:
        random_gains(cell)
    return cell, torch.randn(B, T, I, dtype=dtype).requires_grad_(), torch.randn(B, H, dtype=dtype).requires_grad_()


@needs_triton
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["float64", "float32"])
def test_triton_gru_row_passes_equal_the_reference(triton_ops, dtype, tol):
    cell, x, h0 = _case(dtype)
    _compare(cell, x, h0, tol)
    assert triton_ops.calls == ["ln_gru_fwd_chunk", "ln_gru_bwd_chunk"]
    cell, x, h0 = _case(dtype, B=1, T=1, H=9, seed=4)  # B=1, T=1
    _compare(cell, x, h0, tol)
    assert len(triton_ops.calls) == 4


@needs_triton
@pytest.mark.parametrize("B,T,H", [(1, 1, 3), (1, 6, 5), (3, 1, 7)], ids=str)
def test_float32_at_b1_t1_and_odd_h_is_as_accurate_as_the_reference(triton_ops, B, T, H):
    """Float32 with one row, one step and odd hidden sizes: values and gradients of the input, the initial
    state and every parameter within 1e-5 of the float64 truth (the reference on float64 copies), or as
    close to it as the float32 reference itself is (``assert_as_accurate``)."""
    cell, x, h0 = _case(torch.float32, B=B, T=T, I=2, H=H, seed=5)
    twin, (xd, hd) = float64_twins(cell, [x, h0])
    fast = values_and_grads(lambda: fused_gru.gru_sequence(cell, x, h0), [x, h0], list(cell.parameters()))
    assert triton_ops.calls == ["ln_gru_fwd_chunk", "ln_gru_bwd_chunk"]
    same = values_and_grads(lambda: cell.reference_forward(x, h0), [x, h0], list(cell.parameters()))
    truth = values_and_grads(lambda: twin.reference_forward(xd, hd), [xd, hd], list(twin.parameters()))
    assert_as_accurate(fast[0] + fast[1], same[0] + same[1], truth[0] + truth[1], 1e-5)


@needs_triton
def test_float32_stacked_bidirectional_layer_through_the_triton_gru_row_passes(triton_ops):
    """A two-layer bidirectional layer-norm GRU in float32 (every direction of every layer in the row
    passes) at B=1, T=1 and with lengths 1 and T, against its reference backend and the float64 truth."""
    torch.manual_seed(6)
    fast = rnnkit.GRU(2, 3, num_layers=2, bidirectional=True, batch_first=True, layer_norm=True)
    ref = rnnkit.GRU(2, 3, num_layers=2, bidirectional=True, batch_first=True, layer_norm=True,
                     backend="reference")
    ref.load_state_dict(fast.state_dict())
    for B, T, lengths in ((1, 1, None), (2, 4, torch.tensor([1, 4]))):
        x = torch.randn(B, T, 2, requires_grad=True)
        h0 = torch.randn(4, B, 3, requires_grad=True)
        twin, (xd, hd) = float64_twins(ref, [x, h0])
        n = len(triton_ops.calls)
        got = values_and_grads(lambda: fast(x, h0, lengths=lengths), [x, h0], list(fast.parameters()))
        assert triton_ops.calls[n:] == ["ln_gru_fwd_chunk"] * 4 + ["ln_gru_bwd_chunk"] * 4
        same = values_and_grads(lambda: ref(x, h0, lengths=lengths), [x, h0], list(ref.parameters()))
        truth = values_and_grads(lambda: twin(xd, hd, lengths=lengths), [xd, hd], list(twin.parameters()))
        assert_as_accurate(got[0] + got[1], same[0] + same[1], truth[0] + truth[1], 1e-5)


@needs_triton
def test_triton_gru_row_passes_with_lengths_mask_zoneout_and_no_bias(triton_ops):
    """Lengths 0, 1 and T, a recurrent-dropout mask, zoneout, no bias, an odd hidden size, B=1 too."""
    cell, x, h0 = _case(torch.float64, B=4, T=6, H=7, seed=1)
    lengths, mask = torch.tensor([6, 0, 1, 4]), torch.rand(4, 7, dtype=torch.float64) * 2
    for kw in ({"lengths": lengths}, {"recurrent_mask": mask}, {"zoneout": 0.3},
               {"lengths": lengths, "recurrent_mask": mask, "zoneout": 0.3}):
        _compare(cell, x, h0, 1e-10, **kw)
    nb, x1, h1 = _case(torch.float64, B=1, T=4, H=6, bias=False, seed=2)
    _compare(nb, x1, h1, 1e-10)
    assert triton_ops.calls.count("ln_gru_fwd_chunk") == 5 and triton_ops.calls.count("ln_gru_bwd_chunk") == 5


@needs_triton
def test_gradcheck_through_the_triton_gru_row_passes(triton_ops):
    B, T, I, H = 3, 5, 2, 3
    d = dict(dtype=torch.float64)
    req = lambda *s, scale=1.0: (torch.randn(*s, **d) * scale).requires_grad_()  # noqa: E731
    keep = (torch.rand(T, 1, B, H, **d) < 0.3).to(torch.float64)
    args = (req(T, B, I), req(3 * H, I, scale=0.5), req(3 * H), req(3 * H), req(B, H), req(3 * H, H, scale=0.5),
            req(3 * H), req(3 * H), torch.rand(B, H, **d) * 2, keep, fc.batching(torch.tensor([5, 3, 0]), B, T))
    assert torch.autograd.gradcheck(lambda *a: fused_gru._GRUFn.apply(*a), args)
    assert "ln_gru_bwd_chunk" in triton_ops.calls


@needs_triton
def test_plain_gru_keeps_the_torch_op_steps(triton_ops):
    """The row passes are the layer-norm GRU's: a plain GRU (recurrent dropout) runs the torch-op steps."""
    torch.manual_seed(3)
    cell = C.GRUCell(3, 4).double()
    x, h0 = torch.randn(2, 5, 3, dtype=torch.float64).requires_grad_(), torch.randn(2, 4, dtype=torch.float64)
    _compare(cell, x, h0.requires_grad_(), 1e-10, recurrent_mask=torch.rand(2, 4, dtype=torch.float64))
    assert triton_ops.calls == []


def test_without_force_cpu_tensors_keep_the_torch_op_steps(monkeypatch):
    monkeypatch.delenv("RNNKIT_TRITON", raising=False)
    assert not triton_ln_gru.wanted(torch.zeros(2, 3))
    assert fused_gru._row_passes(torch.ones(6), torch.zeros(2, 3)) is None
