"""The layer-norm LSTM's Triton row passes (:mod:`rnnkit.kernels.triton_ln_lstm`): with
``RNNKIT_TRITON=force`` the fused kernel runs its step loops through them, and values and gradients equal
the reference recurrence (and the C++/Python loops), with lengths and a recurrent-dropout mask. No GPU
here: Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors, tiny shapes (it is slow)."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit import cells as C
from rnnkit.kernels import fused_lstm, triton_ln_lstm
from tests.kernels._util import (assert_as_accurate, assert_close, needs_triton, run_in_triton_child, triton_recorder,
                                 float64_twins, ln_lstm_case, lstm_gradcheck_inputs, values_and_grads)


@needs_triton
def test_the_triton_row_passes_in_a_fresh_process():
    run_in_triton_child(__file__, passed=10)  # the tests below and the wanted() check


@pytest.fixture
def triton_ops(monkeypatch):
    """The Triton row passes in the interpreter, forced for CPU tensors, with their calls recorded."""
    return triton_recorder(triton_ln_lstm, monkeypatch)


def _case(dtype, B=3, T=7, I=3, H=5, seed=0):
    return ln_lstm_case(dtype, B, T, I, H, seed)


@needs_triton
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["float64", "float32"])
def test_triton_row_passes_equal_the_reference(triton_ops, dtype, tol):
    cell, x, state = _case(dtype)
    fast = values_and_grads(lambda: fused_lstm.lstm_sequence(cell, x, state), [x, *state], list(cell.parameters()))
    assert triton_ops.calls == ["ln_lstm_fwd_chunk", "ln_lstm_bwd_chunk"]
    ref = values_and_grads(lambda: cell.reference_forward(x, state), [x, *state], list(cell.parameters()))
    assert_close(fast[0], ref[0], tol)
    assert_close(fast[1], ref[1], tol)


@needs_triton
@pytest.mark.parametrize("B,T,H", [(1, 1, 3), (1, 6, 5), (3, 1, 7)], ids=str)
def test_float32_at_b1_t1_and_odd_h_is_as_accurate_as_the_reference(triton_ops, B, T, H):
    """Float32 with one row, one step and odd hidden sizes: values and gradients of the input, both initial
    states and every parameter within 1e-5 of the float64 truth (the reference on float64 copies), or as
    close to it as the float32 reference itself is (``assert_as_accurate``)."""
    cell, x, state = _case(torch.float32, B=B, T=T, I=2, H=H, seed=5)
    twin, (xd, sd) = float64_twins(cell, [x, state])
    fast = values_and_grads(lambda: fused_lstm.lstm_sequence(cell, x, state), [x, *state], list(cell.parameters()))
    assert triton_ops.calls == ["ln_lstm_fwd_chunk", "ln_lstm_bwd_chunk"]
    same = values_and_grads(lambda: cell.reference_forward(x, state), [x, *state], list(cell.parameters()))
    truth = values_and_grads(lambda: twin.reference_forward(xd, sd), [xd, *sd], list(twin.parameters()))
    assert_as_accurate(fast[0] + fast[1], same[0] + same[1], truth[0] + truth[1], 1e-5)


@needs_triton
def test_float32_stacked_bidirectional_layer_through_the_triton_row_passes(triton_ops):
    """A two-layer bidirectional layer-norm LSTM in float32 (every direction of every layer in the row
    passes) at B=1, T=1 and with lengths 1 and T, against its reference backend and the float64 truth."""
    torch.manual_seed(6)
    fast = rnnkit.LSTM(2, 3, num_layers=2, bidirectional=True, batch_first=True, layer_norm=True)
    ref = rnnkit.LSTM(2, 3, num_layers=2, bidirectional=True, batch_first=True, layer_norm=True,
                      backend="reference")
    ref.load_state_dict(fast.state_dict())
    for B, T, lengths in ((1, 1, None), (2, 4, torch.tensor([1, 4]))):
        x = torch.randn(B, T, 2, requires_grad=True)
        h0 = C.LSTMState(*(torch.randn(4, B, 3, requires_grad=True) for _ in range(2)))
        twin, (xd, hd) = float64_twins(ref, [x, h0])
        n = len(triton_ops.calls)
        got = values_and_grads(lambda: fast(x, h0, lengths=lengths), [x, *h0], list(fast.parameters()))
        assert triton_ops.calls[n:] == ["ln_lstm_fwd_chunk"] * 4 + ["ln_lstm_bwd_chunk"] * 4
        same = values_and_grads(lambda: ref(x, h0, lengths=lengths), [x, *h0], list(ref.parameters()))
        truth = values_and_grads(lambda: twin(xd, hd, lengths=lengths), [xd, *hd], list(twin.parameters()))
        assert_as_accurate(got[0] + got[1], same[0] + same[1], truth[0] + truth[1], 1e-5)


@needs_triton
def test_triton_row_passes_with_lengths_and_mask_equal_the_reference(triton_ops):
    """Lengths 0, 1 and T, a recurrent-dropout mask, a hidden size that is not a power of two, B=1 too."""
    dtype = torch.float64
    cell, x, state = _case(dtype, B=4, T=6, H=7, seed=1)
    lengths, mask = torch.tensor([6, 0, 1, 4]), torch.rand(4, 7, dtype=dtype) * 2
    for kw in ({"lengths": lengths}, {"recurrent_mask": mask}, {"lengths": lengths, "recurrent_mask": mask}):
        fast = values_and_grads(lambda: fused_lstm.lstm_sequence(cell, x, state, **kw), [x, *state],
                                list(cell.parameters()))
        ref = values_and_grads(lambda: cell.reference_forward(x, state, **kw), [x, *state], list(cell.parameters()))
        assert_close(fast[0], ref[0], 1e-10)
        assert_close(fast[1], ref[1], 1e-10)
    one = [t[:1].detach().requires_grad_() for t in (x, *state)]
    fast = values_and_grads(lambda: fused_lstm.lstm_sequence(cell, one[0], C.LSTMState(*one[1:])), one,
                            list(cell.parameters()))
    ref = values_and_grads(lambda: cell.reference_forward(one[0], C.LSTMState(*one[1:])), one, list(cell.parameters()))
    assert_close(fast[0], ref[0], 1e-10)
    assert_close(fast[1], ref[1], 1e-10)
    assert triton_ops.calls.count("ln_lstm_fwd_chunk") == 4


@needs_triton
def test_gradcheck_through_the_triton_row_passes(triton_ops):
    args = lstm_gradcheck_inputs(ln=True, peep=False, masked=True, zoned=False, lengths=torch.tensor([5, 3, 0]))
    assert torch.autograd.gradcheck(lambda *a: fused_lstm._LSTMFn.apply(*a), args)
    assert "ln_lstm_bwd_chunk" in triton_ops.calls


@needs_triton
def test_zoneout_keeps_the_python_loops_where_triton_runs(triton_ops):
    """The Triton row passes do not compute zoneout: with it the kernel takes its Python loops (not the C++
    ones either, which are for CPU tensors where Triton is not wanted) and still equals the reference."""
    cell, x, state = _case(torch.float64, seed=2)
    torch.manual_seed(4)
    fast = values_and_grads(lambda: fused_lstm.lstm_sequence(cell, x, state, zoneout=0.3), [x, *state],
                            list(cell.parameters()))
    assert triton_ops.calls == []
    torch.manual_seed(4)
    ref = values_and_grads(lambda: cell.reference_forward(x, state, zoneout=0.3), [x, *state], list(cell.parameters()))
    assert_close(fast[0], ref[0], 1e-10)
    assert_close(fast[1], ref[1], 1e-10)


def test_without_force_cpu_tensors_keep_the_cpp_or_python_loops(monkeypatch):
    monkeypatch.delenv("RNNKIT_TRITON", raising=False)
    assert not triton_ln_lstm.wanted(torch.zeros(2, 3))
