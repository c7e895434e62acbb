"""The C++ step loops of the layer-norm LSTM kernel (rnnkit.kernels._cpp): they are built where a C++
compiler is (CI has one, so there they must build), equal the Python loops and the reference recurrence,
run when ``backend="auto"`` picks the fused kernel, and ``RNNKIT_CPP`` chooses them or not."""

from __future__ import annotations

import logging
import re
import shutil

import pytest
import torch

import rnnkit
from rnnkit import cells as C
from rnnkit.cells import base as cells_base
from rnnkit.kernels import _cpp
from rnnkit.kernels import fused_lstm
from rnnkit.kernels import _fused_common as fc
from tests.kernels._util import (assert_as_accurate, assert_close, cpp_recorder, ln_lstm_case, lstm_gradcheck_inputs,
                                 random_gains, values_and_grads)

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="no C++ compiler on this machine: the Python loops run instead")


@pytest.fixture
def recorder(monkeypatch):
    return cpp_recorder(fused_lstm, monkeypatch)


def _run(cell, x, state, cpp: str, monkeypatch):
    monkeypatch.setenv("RNNKIT_CPP", cpp)
    inputs = [x, *state]
    return values_and_grads(lambda: fused_lstm.lstm_sequence(cell, x, state), inputs, list(cell.parameters()))


@needs_compiler
def test_the_cpp_loops_build_here():
    assert _cpp.ops() is not None, _cpp._state["error"]


@needs_compiler
@pytest.mark.parametrize("shape", [(1, 1, 3, 7), (3, 9, 4, 5), (2, 3 * 64 + 5, 3, 4), (33, 40, 5, 17), (33, 3, 5, 256)],
                         ids=str)
def test_cpp_loops_equal_python_loops_and_reference_in_float64(shape, monkeypatch):
    # B=1, T=1, odd H, several chunks and a partial one; at H=256 (16-row tasks) the rows are split over
    # torch's threads where there are several (the library is built with OpenMP)
    B, T, I, H = shape
    torch.manual_seed(0)
    cell = C.LayerNormLSTMCell(I, H).double()
    random_gains(cell)
    d = dict(dtype=torch.float64)
    x = torch.randn(B, T, I, **d).requires_grad_()
    state = C.LSTMState(torch.randn(B, H, **d).requires_grad_(), torch.randn(B, H, **d).requires_grad_())
    cpp = _run(cell, x, state, "1", monkeypatch)
    py = _run(cell, x, state, "0", monkeypatch)
    ref = values_and_grads(lambda: cell.reference_forward(x, state), [x, *state], list(cell.parameters()))
    for a in (cpp, ref):
        assert_close(a[0], py[0], 1e-10)
        assert_close(a[1], py[1], 1e-10)


@needs_compiler
@pytest.mark.parametrize("shape", [(1, 1, 3, 7), (3, 9, 4, 5), (5, 20, 6, 8)], ids=str)
def test_cpp_loops_equal_reference_in_float32(shape, monkeypatch):
    B, T, I, H = shape
    torch.manual_seed(1)
    cell = C.LayerNormLSTMCell(I, H, forget_bias=1.0)
    x = torch.randn(B, T, I).requires_grad_()
    state = C.LSTMState(torch.randn(B, H).requires_grad_(), torch.randn(B, H).requires_grad_())
    cpp = _run(cell, x, state, "1", monkeypatch)
    ref = values_and_grads(lambda: cell.reference_forward(x, state), [x, *state], list(cell.parameters()))
    assert_close(cpp[0], ref[0], 1e-5)
    assert_close(cpp[1], ref[1], 1e-5)


def _rel_errors(a, b):
    return [((u.double() - v).abs().max() / max(1.0, v.abs().max().item())).item() for u, v in zip(a, b)]


@needs_compiler
def test_cpp_loops_are_as_accurate_as_the_reference_in_float32_on_a_long_batch(monkeypatch):
    """At B=32, T=70 every float32 summation order drifts 1e-4..1e-3 from the float64 values (layer norm
    amplifies rounding, differently for each draw); over three draws the C++ loops' largest error must
    stay within twice the reference loop's own largest float32 error."""
    B, T, I, H = 32, 70, 16, 32
    monkeypatch.setenv("RNNKIT_CPP", "1")

    def grads(c, dtype, run, x, h0, c0):
        xs = x.to(dtype).requires_grad_()
        st = C.LSTMState(h0.to(dtype).requires_grad_(), c0.to(dtype).requires_grad_())
        out = values_and_grads(lambda: run(c, xs, st), [xs, *st], list(c.parameters()))
        return out[0] + out[1]

    ref = lambda c, xs, st: c.reference_forward(xs, st)  # noqa: E731
    ref32, cpp32 = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        cell = C.LayerNormLSTMCell(I, H, forget_bias=1.0)
        x, h0, c0 = torch.randn(B, T, I), torch.randn(B, H), torch.randn(B, H)
        cell64 = C.LayerNormLSTMCell(I, H, forget_bias=1.0).double()
        cell64.load_state_dict(cell.state_dict())
        truth = grads(cell64, torch.float64, ref, x, h0, c0)
        ref32 += _rel_errors(grads(cell, torch.float32, ref, x, h0, c0), truth)
        cpp32 += _rel_errors(grads(cell, torch.float32, fused_lstm.lstm_sequence, x, h0, c0), truth)
    assert max(cpp32) <= 2 * max(ref32), (max(cpp32), max(ref32))


@needs_compiler
def test_gradcheck_through_the_cpp_loops(monkeypatch):
    monkeypatch.setenv("RNNKIT_CPP", "1")
    args = lstm_gradcheck_inputs(ln=True, peep=False, masked=False, zoned=False, lengths=None)
    assert torch.autograd.gradcheck(lambda *a: fused_lstm._LSTMFn.apply(*a), args)


@needs_compiler
def test_auto_backend_runs_the_cpp_loops_for_a_layer_norm_lstm(recorder):
    layer = rnnkit.LSTM(4, 6, num_layers=2, batch_first=True, layer_norm=True)
    y, _ = layer(torch.randn(3, 10, 4))
    y.sum().backward()
    assert recorder.calls.count("ln_lstm_fwd_chunk") == 2 and recorder.calls.count("ln_lstm_bwd_chunk") == 2


@needs_compiler
@pytest.mark.parametrize("dtype,tol,T", [(torch.float64, 1e-10, 70), (torch.float32, 1e-5, 20)],
                         ids=["float64", "float32"])
def test_cpp_loops_with_zoneout_equal_reference(recorder, dtype, tol, T):
    """Zoneout (training masks and the test-time expectation), alone and with lengths and a recurrent-dropout
    mask, runs the C++ loops and gives the reference's values and gradients (the same masks: same seed)."""
    B, H = 5, 6
    cell, x, state = ln_lstm_case(dtype, B=B, T=T, I=3, H=H, seed=3)
    lengths, mask = torch.tensor([4, T, 0, 1, T // 2]), torch.rand(B, H, dtype=dtype) * 2
    for kw in ({"zoneout": 0.3}, {"zoneout": 0.3, "zoneout_expected": True},
               {"lengths": lengths, "recurrent_mask": mask, "zoneout": 0.5}):
        n = len(recorder.calls)
        torch.manual_seed(11)
        fast = values_and_grads(lambda: fused_lstm.lstm_sequence(cell, x, state, **kw), [x, *state],
                                list(cell.parameters()))
        assert recorder.calls[n:].count("ln_lstm_bwd_chunk") == -(-T // fc.chunk_size(B))  # every chunk in C++
        torch.manual_seed(11)
        ref = values_and_grads(lambda: cell.reference_forward(x, state, **kw), [x, *state], list(cell.parameters()))
        assert_close(fast[0], ref[0], tol)
        assert_close(fast[1], ref[1], tol)


@needs_compiler
def test_gradcheck_through_the_cpp_loops_with_zoneout_lengths_and_mask(recorder):
    args = lstm_gradcheck_inputs(ln=True, peep=False, masked=True, zoned=True, lengths=torch.tensor([5, 3, 0]))
    assert torch.autograd.gradcheck(lambda *a: fused_lstm._LSTMFn.apply(*a), args)
    assert "ln_lstm_bwd_chunk" in recorder.calls


@needs_compiler
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["float64", "float32"])
def test_cpp_loops_with_lengths_and_recurrent_dropout_equal_reference(recorder, dtype, tol):
    B, T, I, H = 5, 70, 3, 6  # lengths 0 and T, a length ending inside a later chunk
    cell, x, state = ln_lstm_case(dtype, B, T, I, H, seed=2)
    lengths, mask = torch.tensor([4, 70, 0, 1, 37]), torch.rand(B, H, dtype=dtype) * 2
    for kw in ({"lengths": lengths}, {"recurrent_mask": mask}, {"lengths": lengths, "recurrent_mask": mask}):
        n = len(recorder.calls)
        fast = values_and_grads(lambda: fused_lstm.lstm_sequence(cell, x, state, **kw), [x, *state],
                                list(cell.parameters()))
        assert recorder.calls[n:].count("ln_lstm_bwd_chunk") == 2  # T=70 is two chunks at B=5
        # against the reference recurrence in float64 (same weights and inputs): over 70 steps the float32
        # reference itself drifts ~1e-5 (AMD VM) to 1.7e-5 (a Xeon VM) from it, so the kernel must be within
        # tol of the truth or as close to it as the float32 reference is
        ref = _float64_reference(cell, x, state, kw)
        same = values_and_grads(lambda: cell.reference_forward(x, state, **kw), [x, *state],
                                list(cell.parameters()))
        assert_as_accurate(fast[0], same[0], ref[0], tol)
        assert_as_accurate(fast[1], same[1], ref[1], tol)


@needs_compiler
@pytest.mark.parametrize("gemm", ["onednn", "mm"])
def test_cpp_loops_with_either_per_step_gemm_equal_the_float64_reference(gemm, monkeypatch):
    """The step GEMM is oneDNN's matmul on a prepacked weight (an MkldnnCPU tensor) or at::mm_out,
    whichever ``_gemm.prefer_onednn`` measured faster (``RNNKIT_GEMM`` forces one): both give the
    reference's values and gradients, with lengths and a mask, forward and backward."""
    from rnnkit.kernels import _gemm

    if gemm == "onednn" and not _gemm.onednn_available():
        pytest.skip("this torch has no oneDNN linear ops")
    monkeypatch.setenv("RNNKIT_GEMM", gemm)
    monkeypatch.setenv("RNNKIT_CPP", "1")
    real, seen = _cpp.ops(), []

    class Spy:
        def __getattr__(self, name):
            def call(*args):
                seen.append((name, args[-1] is not None))  # the last argument: the packed weight or None
                return getattr(real, name)(*args)
            return call
    monkeypatch.setattr(fused_lstm._cpp, "ops", lambda: Spy())
    torch.manual_seed(5)
    B, T, I, H = 4, 40, 3, 8
    cell = C.LayerNormLSTMCell(I, H)
    x = torch.randn(B, T, I).requires_grad_()
    state = C.LSTMState(torch.randn(B, H).requires_grad_(), torch.randn(B, H).requires_grad_())
    kw = {"lengths": torch.tensor([40, 0, 17, 3]), "recurrent_mask": torch.rand(B, H) * 2}
    fast = values_and_grads(lambda: fused_lstm.lstm_sequence(cell, x, state, **kw), [x, *state],
                            list(cell.parameters()))
    ref = _float64_reference(cell, x, state, kw)
    same = values_and_grads(lambda: cell.reference_forward(x, state, **kw), [x, *state], list(cell.parameters()))
    assert_as_accurate(fast[0], same[0], ref[0], 1e-5)
    assert_as_accurate(fast[1], same[1], ref[1], 1e-5)
    assert {name for name, _ in seen} == {"ln_lstm_fwd_chunk", "ln_lstm_bwd_chunk"}
    assert all(packed == (gemm == "onednn") for _, packed in seen)


def _float64_reference(cell, x, state, kw):
    """Values and gradients of ``cell.reference_forward`` in float64 with copies of the inputs and weights."""
    twin = type(cell)(cell.input_size, cell.hidden_size).double()
    twin.load_state_dict({k: v.double() for k, v in cell.state_dict().items()})
    xd = x.detach().double().requires_grad_()
    sd = C.LSTMState(*(s.detach().double().requires_grad_() for s in state))
    kwd = {k: v.double() if v.is_floating_point() else v for k, v in kw.items()}
    return values_and_grads(lambda: twin.reference_forward(xd, sd, **kwd), [xd, *sd], list(twin.parameters()))


@needs_compiler
def test_gradcheck_through_the_cpp_loops_with_lengths_and_mask(monkeypatch):
    monkeypatch.setenv("RNNKIT_CPP", "1")
    args = lstm_gradcheck_inputs(ln=True, peep=False, masked=True, zoned=False, lengths=torch.tensor([5, 3, 0]))
    assert torch.autograd.gradcheck(lambda *a: fused_lstm._LSTMFn.apply(*a), args)


def test_rnnkit_cpp_0_keeps_the_python_loops(monkeypatch):
    monkeypatch.setenv("RNNKIT_CPP", "0")
    assert _cpp.ops() is None


def test_rnnkit_cpp_rejects_an_unknown_value(monkeypatch):
    monkeypatch.setenv("RNNKIT_CPP", "yes")
    with pytest.raises(ValueError, match="RNNKIT_CPP must be one of auto, 0, 1"):
        _cpp.ops()


def test_a_failed_build_falls_back_with_a_warning_or_fails_when_required(monkeypatch, caplog):
    def broken():
        raise RuntimeError("Error building extension 'rnnkit_cpp_v1'\nc++: not found")
    monkeypatch.setattr(_cpp, "_build", broken)
    monkeypatch.setattr(_cpp, "_state", {"tried": False, "ops": None, "error": None})
    monkeypatch.setenv("RNNKIT_CPP", "auto")
    with caplog.at_level(logging.WARNING, logger="rnnkit.kernels._cpp"):
        assert _cpp.ops() is None
    assert "not available (RuntimeError: c++: not found)" in caplog.text
    # the kernel still computes the layer-norm LSTM (Python loops)
    cell = C.LayerNormLSTMCell(3, 4).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    st = C.LSTMState(torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64))
    assert torch.allclose(fused_lstm.lstm_sequence(cell, x, st)[0], cell.reference_forward(x, st)[0], atol=1e-10)
    monkeypatch.setenv("RNNKIT_CPP", "1")
    with pytest.raises(RuntimeError, match=re.escape("RNNKIT_CPP=1 but the C++ kernel loops could not be built: "
                                                     "RuntimeError: c++: not found")):
        _cpp.ops()


def test_the_benchmark_machine_line_says_whether_the_cpp_loops_ran(monkeypatch):
    from rnnkit.bench import machine_description
    monkeypatch.setenv("RNNKIT_CPP", "0")
    assert "C++ loops off (RNNKIT_CPP=0)" in machine_description()
    monkeypatch.setenv("RNNKIT_CPP", "auto")
    monkeypatch.setattr(_cpp, "_state", {"tried": True, "ops": None, "error": "RuntimeError: no compiler"})
    assert "C++ loops off (RuntimeError: no compiler)" in machine_description()
    monkeypatch.setattr(_cpp, "_state", {"tried": True, "ops": object(), "error": None})
    assert "C++ loops on" in machine_description()
    # and the vector width torch dispatches to (two "AMD EPYC" VMs differed in it)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert "(AVX512), " in machine_description()


# -- the LSTM without layer norm (plain under its regularisers, or with peepholes) -------------------------
def _lstm_case(dtype, peephole: bool, B: int, T: int, I: int, H: int, seed: int):
    torch.manual_seed(seed)
    cell = C.LSTMCell(I, H, peephole=peephole).to(dtype)
    random_gains(cell)  # peepholes away from zero
    x = torch.randn(B, T, I, dtype=dtype).requires_grad_()
    state = C.LSTMState(torch.randn(B, H, dtype=dtype).requires_grad_(),
                        torch.randn(B, H, dtype=dtype).requires_grad_())
    return cell, x, state


@needs_compiler
@pytest.mark.parametrize("peephole", [False, True], ids=["plain", "peephole"])
@pytest.mark.parametrize("dtype,tol,T", [(torch.float64, 1e-10, 70), (torch.float32, 1e-5, 20)],
                         ids=["float64", "float32"])
def test_cpp_loops_of_the_lstm_without_layer_norm_equal_reference(recorder, peephole, dtype, tol, T):
    """Plain and peephole LSTM: zoneout (training masks, expectation), recurrent dropout, lengths (0, T,
    ending inside a later chunk), alone and together, run the C++ loops in every chunk and give the
    reference recurrence's values and gradients (zoneout's masks: the same seed)."""
    B, H = 5, 6
    cell, x, state = _lstm_case(dtype, peephole, B, T, 3, H, seed=4)
    lengths, mask = torch.tensor([4, T, 0, 1, T // 2 + 3]), torch.rand(B, H, dtype=dtype) * 2
    cases = [{}, {"zoneout": 0.3}, {"zoneout": 0.3, "zoneout_expected": True}, {"recurrent_mask": mask},
             {"lengths": lengths}, {"lengths": lengths, "recurrent_mask": mask, "zoneout": 0.5}]
    for kw in cases:
        n = len(recorder.calls)
        torch.manual_seed(11)
        fast = values_and_grads(lambda: fused_lstm.lstm_sequence(cell, x, state, **kw), [x, *state],
                                list(cell.parameters()))
        chunks = -(-T // fc.chunk_size(B))
        masks = ["zoneout_masks"] if kw.get("zoneout") and not kw.get("zoneout_expected") else []
        assert recorder.calls[n:] == masks + ["lstm_fwd_chunk"] * chunks + ["lstm_bwd_chunk"] * chunks, kw
        torch.manual_seed(11)
        ref = values_and_grads(lambda: cell.reference_forward(x, state, **kw), [x, *state], list(cell.parameters()))
        assert_close(fast[0], ref[0], tol)
        assert_close(fast[1], ref[1], tol)


@needs_compiler
@pytest.mark.parametrize("shape", [(1, 1, 3, 7), (2, 3 * 64 + 5, 3, 4), (33, 3, 5, 256)], ids=str)
def test_cpp_loops_of_the_peephole_lstm_equal_the_python_loops(shape, monkeypatch):
    # B=1, T=1, odd H; several chunks and a partial one; rows split over threads at H=256
    B, T, I, H = shape
    cell, x, state = _lstm_case(torch.float64, True, B, T, I, H, seed=0)
    # both runs draw zoneout's masks with torch (RNNKIT_CPP=0 has no C++ masks op): the same masks
    monkeypatch.setattr(cells_base, "_draw_keep", cells_base._draw_keep_torch)
    torch.manual_seed(3)
    cpp = values_and_grads(lambda: fused_lstm.lstm_sequence(cell, x, state, zoneout=0.2), [x, *state],
                           list(cell.parameters()))
    monkeypatch.setenv("RNNKIT_CPP", "0")
    torch.manual_seed(3)
    py = values_and_grads(lambda: fused_lstm.lstm_sequence(cell, x, state, zoneout=0.2), [x, *state],
                          list(cell.parameters()))
    assert_close(cpp[0], py[0], 1e-10)
    assert_close(cpp[1], py[1], 1e-10)


@needs_compiler
@pytest.mark.parametrize("peep,masked,zoned,lengths", [
    (True, False, False, None), (False, True, True, None), (True, True, True, torch.tensor([5, 3, 0])),
    (False, False, True, torch.tensor([4, 4, 1]))], ids=["peephole", "mask_zoneout", "all_lengths", "zoneout_lengths"])
def test_gradcheck_through_the_cpp_loops_without_layer_norm(recorder, peep, masked, zoned, lengths):
    args = lstm_gradcheck_inputs(ln=False, peep=peep, masked=masked, zoned=zoned, lengths=lengths)
    assert torch.autograd.gradcheck(lambda *a: fused_lstm._LSTMFn.apply(*a), args)
    assert "lstm_bwd_chunk" in recorder.calls


@needs_compiler
@pytest.mark.parametrize("kw", [{"peephole": True}, {"zoneout": 0.1}, {"recurrent_dropout": 0.2}], ids=str)
def test_auto_backend_runs_the_cpp_loops_for_the_lstm_without_layer_norm(recorder, kw):
    layer = rnnkit.LSTM(4, 6, num_layers=2, batch_first=True, **kw).train()
    y, _ = layer(torch.randn(3, 10, 4))
    y.sum().backward()
    assert recorder.calls.count("lstm_fwd_chunk") == 2 and recorder.calls.count("lstm_bwd_chunk") == 2
