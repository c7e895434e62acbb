"""The layer-norm LSTM's Triton row passes (:mod:`rnnkit.kernels.triton_ln_lstm`): with
``RNNKIT_TRITON=force`` the fused kernel runs its step loops through them, and values and gradients equal
the reference recurrence (and the C++/Python loops), with lengths and a recurrent-dropout mask. No GPU
here: Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors, tiny shapes (it is slow)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnkit import cells as C
from rnnkit.kernels import fused_lstm, triton_ln_lstm
from tests.kernels._util import Recorder, assert_close, lstm_gradcheck_inputs, random_gains, values_and_grads

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed (pip install 'rnnkit[gpu]'): the Triton "
                                         "row passes are untested")


# The kernels use Triton's standard library (tl.sum, tl.sigmoid are themselves jit functions), which the
# interpreter runs only if TRITON_INTERPRET was set before triton was first imported. So the tests below
# run in a child process started with it (test_the_triton_row_passes_in_a_fresh_process); in the suite's
# own process they skip.
_CHILD = os.environ.get("RNNKIT_TRITON_TEST_CHILD") == "1"


@needs_triton
def test_the_triton_row_passes_in_a_fresh_process():
    if _CHILD:
        pytest.skip("this is the child process")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TRITON_INTERPRET="1", RNNKIT_TRITON_TEST_CHILD="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", "-rA",
                          str(Path(__file__).relative_to(root))], cwd=root, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert out.stdout.count("PASSED") == 5, out.stdout[-2000:]  # the four above and the wanted() check


@pytest.fixture
def triton_ops(monkeypatch):
    """The Triton row passes in the interpreter, forced for CPU tensors, with their calls recorded."""
    if not _CHILD:
        pytest.skip("runs in the child process of test_the_triton_row_passes_in_a_fresh_process")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("RNNKIT_TRITON", "force")
    from triton.runtime.interpreter import InterpretedFunction
    if not isinstance(triton_ln_lstm._kernels(True)[0], InterpretedFunction):
        pytest.skip("this triton does not interpret kernels built after import")
    rec = Recorder(triton_ln_lstm.ops())
    monkeypatch.setattr(triton_ln_lstm, "ops", lambda: rec)
    return rec


def _case(dtype, B=3, T=7, I=3, H=5, seed=0):
    torch.manual_seed(seed)
    cell = C.LayerNormLSTMCell(I, H).to(dtype)
    if dtype == torch.float64:
        random_gains(cell)
    x = torch.randn(B, T, I, dtype=dtype).requires_grad_()
    state = C.LSTMState(torch.randn(B, H, dtype=dtype).requires_grad_(),
                        torch.randn(B, H, dtype=dtype).requires_grad_())
    return cell, x, state


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


def test_without_force_cpu_tensors_keep_the_cpp_or_python_loops(monkeypatch):
    monkeypatch.delenv("RNNKIT_TRITON", raising=False)
    assert not triton_ln_lstm.wanted(torch.zeros(2, 3))
