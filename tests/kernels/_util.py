"""Helpers shared by the kernel tests: run a layer or cell two ways and compare values and gradients."""

from __future__ import annotations

import torch


def parts(state):
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def loss(y, state):
    """A loss that weights every output and state entry differently (so no gradient is trivial)."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(y.shape, generator=g).to(y.dtype)
    return (y * w).sum() + sum((s.sin() * (k + 1)).sum() for k, s in enumerate(parts(state)))


def values_and_grads(run, inputs: list, params: list):
    """``run()`` -> (y, state); returns the outputs and the gradients of ``inputs + params``."""
    y, state = run()
    grads = torch.autograd.grad(loss(y, state), inputs + params, allow_unused=True)
    return [y, *parts(state)], list(grads)


def assert_close(a: list, b: list, tol: float) -> None:
    for k, (u, v) in enumerate(zip(a, b)):
        if u is None or v is None:
            assert u is None and v is None or (u if v is None else v).abs().max() == 0, k
            continue
        assert u.shape == v.shape, (k, u.shape, v.shape)
        err = (u - v).abs().max().item() if u.numel() else 0.0
        assert err <= tol * max(1.0, v.abs().max().item() if v.numel() else 0.0), (k, err)


def _scaled_errors(a: list, b: list) -> list:
    """Per tensor: max |a - b| / max(1, max |b|) (0 for missing or empty tensors)."""
    out = []
    for u, v in zip(a, b):
        if u is None or v is None or not v.numel():
            out.append(0.0)
            continue
        out.append((u.double() - v).abs().max().item() / max(1.0, v.abs().max().item()))
    return out


def assert_as_accurate(fast: list, same_dtype_reference: list, float64_truth: list, tol: float) -> None:
    """Every tensor of ``fast`` is within ``tol`` of the float64 truth, or within twice the float32
    noise of this computation: the worst error of the reference recurrence run in the same dtype,
    over all the tensors. Over long sequences float32 itself drifts past 1e-5 on some CPUs (the
    reference's own gradients were 1.7e-5 off on a Xeon VM; the C++ loops with at::mm 1.2e-5 on a
    layer-norm gain), so a fixed bound would test the machine's rounding rather than the kernel."""
    assert_close([u if u is None else u.double() for u in fast], float64_truth, float("inf"))  # shapes
    noise = max(_scaled_errors(same_dtype_reference, float64_truth), default=0.0)
    for k, mine in enumerate(_scaled_errors(fast, float64_truth)):
        assert mine <= max(tol, 2 * noise), (k, mine, noise)


def random_gains(module) -> None:
    """Layer-norm gains and biases and peepholes away from their 1/0 initialisation."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "ln_" in name or "weight_c" in name:
                p.uniform_(0.5, 1.5) if "weight" in name and "ln_c_bias" not in name else p.uniform_(-0.5, 0.5)


def ln_lstm_case(dtype, B: int, T: int, I: int, H: int, seed: int):
    """A layer-norm LSTM cell (random gains in float64) with an input (B, T, I) and a state, all requiring
    gradients, drawn after ``torch.manual_seed(seed)``."""
    from rnnkit import cells as C

    torch.manual_seed(seed)
    cell = C.LayerNormLSTMCell(I, H).to(dtype)
    if dtype == torch.float64:
        random_gains(cell)
    x = torch.randn(B, T, I, dtype=dtype).requires_grad_()
    state = C.LSTMState(torch.randn(B, H, dtype=dtype).requires_grad_(),
                        torch.randn(B, H, dtype=dtype).requires_grad_())
    return cell, x, state


def lstm_gradcheck_inputs(ln: bool, peep: bool, masked: bool, zoned: bool, lengths):
    """Float64 arguments of ``fused_lstm._LSTMFn`` at B=3, T=5, I=2, H=3 for ``gradcheck``."""
    from rnnkit.kernels import _fused_common as fc

    B, T, I, H = 3, 5, 2, 3
    d = dict(dtype=torch.float64)
    req = lambda *s, scale=1.0: (torch.randn(*s, **d) * scale).requires_grad_()  # noqa: E731
    b = fc.batching(lengths, B, T)
    keep = (torch.rand(T, 2, B, H, **d) < 0.3).to(torch.float64) if zoned else None
    return (req(T, B, I), req(4 * H, I, scale=0.5), req(4 * H), req(4 * H) if ln else None, req(B, H), req(B, H),
            req(4 * H, H, scale=0.5), req(4 * H) if ln else None, req(H) if ln else None, req(H) if ln else None,
            req(3, H) if peep else None, torch.rand(B, H, **d) * 2 if masked else None, keep, b)


class Recorder:
    """Stands in for a namespace of kernel ops (``torch.ops.rnnkit_cpp``, the Triton row passes), counting
    the calls it forwards by name."""

    def __init__(self, real) -> None:
        self.real, self.calls = real, []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append(name)
            return getattr(self.real, name)(*args)
        return call


# -- Triton kernels in the interpreter ----------------------------------------------------------------
# The Triton kernels use triton's standard library (tl.sum, tl.sigmoid are themselves jit functions),
# which the interpreter runs only if TRITON_INTERPRET was set before triton was first imported. So their
# tests run in a child process started with it; in the suite's own process they skip.
TRITON_CHILD = __import__("os").environ.get("RNNKIT_TRITON_TEST_CHILD") == "1"


def needs_triton(test):
    import importlib.util

    import pytest

    return pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                              reason="triton is not installed (pip install 'rnnkit[gpu]'): the Triton "
                                     "kernels are untested")(test)


def run_in_triton_child(test_file: str, passed: int) -> None:
    """Run ``test_file``'s tests in a child pytest with ``TRITON_INTERPRET=1``; all must pass, ``passed``
    of them (the child skips the test that called this)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    if TRITON_CHILD:
        pytest.skip("this is the child process")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TRITON_INTERPRET="1", RNNKIT_TRITON_TEST_CHILD="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", "-rA",
                          str(Path(test_file).resolve().relative_to(root))], cwd=root, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert out.stdout.count("PASSED") == passed, out.stdout[-2000:]


def triton_recorder(module, monkeypatch):
    """``module``'s Triton ops in the interpreter, forced for CPU tensors, their calls recorded (a
    fixture body: the tests that use it run in the child process only)."""
    import pytest

    if not TRITON_CHILD:
        pytest.skip("runs in the child process of this file's test_*_in_a_fresh_process")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("RNNKIT_TRITON", "force")
    from triton.runtime.interpreter import InterpretedFunction
    if not isinstance(module._kernels(True)[0], InterpretedFunction):
        pytest.skip("this triton does not interpret kernels built after import")
    rec = Recorder(module.ops())
    monkeypatch.setattr(module, "ops", lambda: rec)
    return rec


def cpp_recorder(module, monkeypatch):
    """The C++ ops (``torch.ops.rnnkit_cpp``, ``RNNKIT_CPP=1``: they must build here) as ``module`` sees
    them through its ``_cpp.ops``, their calls recorded (a fixture body)."""
    from rnnkit.kernels import _cpp

    monkeypatch.setenv("RNNKIT_CPP", "1")
    rec = Recorder(_cpp.ops())
    monkeypatch.setattr(module._cpp, "ops", lambda: rec)
    return rec


def float64_twins(module, tensors):
    """A float64 copy of ``module`` and float64 leaf copies of ``tensors`` (the float64 truth's inputs;
    an ``LSTMState`` stays one)."""
    import copy

    from rnnkit.cells import LSTMState
    leaf = lambda t: t.detach().double().requires_grad_()  # noqa: E731
    return copy.deepcopy(module).double(), [LSTMState(*map(leaf, t)) if isinstance(t, tuple) else leaf(t)
                                            for t in tensors]
