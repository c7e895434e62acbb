"""The Triton scan (:mod:`rnnkit.kernels.triton_scan`) equals a plain loop, forward and backward, and the
scan backend goes through it when told to. No GPU here: the kernels run in Triton's interpreter
(``TRITON_INTERPRET=1``) on CPU tensors, so the shapes are tiny (the interpreter is slow)."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.kernels import triton_scan as ts
from tests.kernels._util import assert_as_accurate, assert_close, values_and_grads

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed (pip install 'rnnkit[gpu]'): the Triton "
                                         "scan is untested")


@pytest.fixture
def interpret(monkeypatch):
    """Triton's interpreter for the kernels built in this test. ``triton.jit`` reads TRITON_INTERPRET when it
    decorates (the kernels are built lazily, cached per mode) and the kernels call builtins only, so this
    holds even if triton was imported earlier without it; ``test_fresh_process`` covers setting it first."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from triton.runtime.interpreter import InterpretedFunction
    if not isinstance(ts._kernels(True)[0], InterpretedFunction):
        pytest.skip("this triton does not interpret kernels built after import; see test_fresh_process")


def loop_scan(a, b, h0):
    """The reference: ``h_t = a_t h_{t-1} + b_t`` one step at a time."""
    h, out = h0, []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, 1) if out else a.new_empty(a.shape)


def _inputs(B, T, H, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(B, T, H, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(B, T, H, generator=g, dtype=dtype).requires_grad_()
    h0 = torch.randn(B, H, generator=g, dtype=dtype).requires_grad_()
    return a, b, h0


@needs_triton
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 19), (3, 1, 5), (3, 33, 7), (2, 17, 19), (1, 5, 37),
                                   (3, 2, 4)],
                         ids=str)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=["f32", "f64"])
def test_equals_the_loop(interpret, shape, dtype, tol):
    a, b, h0 = _inputs(*shape, dtype)
    gy = torch.randn(shape, dtype=dtype)
    got = ts.linear_scan(a, b, h0)
    ref = loop_scan(a, b, h0)
    assert_close([got], [ref], tol)
    assert_close(torch.autograd.grad(got, (a, b, h0), gy), torch.autograd.grad(ref, (a, b, h0), gy), tol)


@needs_triton
def test_no_initial_state_and_empty_sequence(interpret):
    a, b, _ = _inputs(2, 6, 5, torch.float32)
    assert_close([ts.linear_scan(a, b)], [loop_scan(a, b, a.new_zeros(2, 5))], 1e-5)
    a, b, h0 = _inputs(2, 0, 5, torch.float32)
    h = ts.linear_scan(a, b, h0)
    assert h.shape == (2, 0, 5)
    assert torch.autograd.grad(h.sum() + h0.sum(), h0)[0].eq(1).all()


@needs_triton
def test_gradcheck_float64(interpret):
    a, b, h0 = _inputs(2, 5, 3, torch.float64)
    assert torch.autograd.gradcheck(ts.linear_scan, (a, b, h0))


@needs_triton
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 5), (2, 17, 19), (3, 40, 33), (1, 16, 5), (2, 100, 7)],
                         ids=str)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=["f32", "f64"])
def test_chunked_kernels_equal_the_loop(interpret, monkeypatch, shape, dtype, tol):
    """The chunked passes (forward, and the backward's scan from the end), with one chunk, several, and a
    last chunk cut short (chunks of 16 steps here)."""
    monkeypatch.setattr(ts, "CHUNKED_MIN_T", 1)
    a, b, h0 = _inputs(*shape, dtype)
    gy = torch.randn(shape, dtype=dtype)
    launches = _count_launches(monkeypatch)
    got = ts.linear_scan(a, b, h0)
    ref = loop_scan(a, b, h0)
    assert_close([got], [ref], tol)
    assert_close(torch.autograd.grad(got, (a, b, h0), gy), torch.autograd.grad(ref, (a, b, h0), gy), tol)
    assert launches == list("sca") * 2


@needs_triton
def test_chunked_gradcheck_float64(interpret, monkeypatch):
    monkeypatch.setattr(ts, "CHUNKED_MIN_T", 1)
    monkeypatch.setattr(ts, "chunk_length", lambda T: 2)  # three chunks, the last one short
    a, b, h0 = _inputs(2, 5, 3, torch.float64)
    assert torch.autograd.gradcheck(ts.linear_scan, (a, b, h0))


@needs_triton
def test_long_sequences_take_the_chunked_kernels(interpret, monkeypatch):
    assert [ts.chunk_length(T) for T in (0, 1, 256, 1000, 4096, 10 ** 6)] == [16, 16, 16, 32, 64, 1024]
    launches = _count_launches(monkeypatch)
    a, b, h0 = _inputs(1, ts.CHUNKED_MIN_T, 2, torch.float64)
    got = ts.linear_scan(a, b, h0)
    assert_close([got], [loop_scan(a, b, h0)], 1e-12)
    a, b, h0 = _inputs(1, ts.CHUNKED_MIN_T - 1, 2, torch.float64)
    ts.linear_scan(a, b, h0)
    assert launches == ["s", "c", "a", "f"]


_NAMES = ["f", "b", "s", "c", "a", "gru_s", "gru_a", "gru_bs", "gru_ba"]


@needs_triton
@pytest.mark.parametrize("shape,lengths", [((2, 17, 3, 5), None), ((3, 40, 4, 33), [40, 1, 0]),
                                           ((1, 1, 2, 3), None), ((2, 33, 3, 4), [5, 33])], ids=str)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=["f32", "f64"])
def test_fused_mingru_kernels_equal_the_torch_scan(interpret, monkeypatch, shape, lengths, dtype, tol):
    """MinGRU on the chunked path computes its gates inside the scan kernels (forward: summary, carry,
    apply; backward the same from the end, writing the projected input's gradient)."""
    B, T, I, H = shape
    torch.manual_seed(0)
    layer = rnnkit.MinGRU(I, H, batch_first=True).to(dtype)
    x = (torch.randn(B, T, I, dtype=dtype) * 3).requires_grad_()
    h0 = torch.randn(1, B, H, dtype=dtype, requires_grad=True)
    lens = None if lengths is None else torch.tensor(lengths)
    run = lambda: layer(x, h0, lengths=lens)  # noqa: E731
    params = list(layer.parameters())
    monkeypatch.setenv("RNNKIT_TRITON", "0")
    ref = values_and_grads(run, [x, h0], params)
    monkeypatch.setattr(ts, "CHUNKED_MIN_T", 1)
    monkeypatch.setenv("RNNKIT_TRITON", "force")
    launches = _count_launches(monkeypatch)
    got = values_and_grads(run, [x, h0], params)
    assert launches == ["gru_s", "c", "gru_a", "gru_bs", "c", "gru_ba"]
    assert_close(got[0], ref[0], tol)
    assert_close(got[1], ref[1], tol)


@needs_triton
def test_fused_mingru_gradcheck_float64(interpret, monkeypatch):
    monkeypatch.setattr(ts, "chunk_length", lambda T: 2)  # three chunks, the last one short
    g = torch.Generator().manual_seed(0)
    xp = (torch.randn(2, 5, 6, generator=g, dtype=torch.float64) * 2).requires_grad_()
    h0 = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ts._FusedMinGRU.apply, (xp, h0))


def _count_launches(monkeypatch) -> list[str]:
    """Record every launch of the Triton kernels (``kernel[grid](...)``) from now on."""
    launches, real = [], ts._kernels

    class Spy:
        def __init__(self, kernel, name):
            self.kernel, self.name = kernel, name

        def __getitem__(self, grid):
            launches.append(self.name)
            return self.kernel[grid]

    monkeypatch.setattr(ts, "_kernels", lambda interp: tuple(Spy(k, n) for k, n in zip(real(interp), _NAMES)))
    return launches


@needs_triton
@pytest.mark.parametrize("cls,kw,lengths", [(rnnkit.MinGRU, {}, None),
                                            (rnnkit.MinGRU, dict(num_layers=2, bidirectional=True), [5, 2, 0]),
                                            (rnnkit.MinLSTM, {}, [1, 5, 3])],
                         ids=["mingru", "mingru-2layer-bidir-lengths", "minlstm-lengths"])
def test_layer_through_triton_equals_the_scan(interpret, monkeypatch, cls, kw, lengths):
    torch.manual_seed(0)
    layer = cls(4, 7, batch_first=True, backend="scan", **kw)
    x = (torch.randn(3, 5, 4) * 3).requires_grad_()
    h0 = torch.randn(layer.num_layers * layer.num_directions, 3, 7, requires_grad=True)
    lens = None if lengths is None else torch.tensor(lengths)
    run = lambda: layer(x, h0, lengths=lens)  # noqa: E731
    params = list(layer.parameters())
    monkeypatch.setenv("RNNKIT_TRITON", "0")
    ref = values_and_grads(run, [x, h0], params)
    launches = _count_launches(monkeypatch)
    monkeypatch.setenv("RNNKIT_TRITON", "force")
    got = values_and_grads(run, [x, h0], params)
    n = layer.num_layers * layer.num_directions
    assert launches == ["f"] * n + ["b"] * n  # every direction of every layer, both ways, in Triton
    assert_close(got[0], ref[0], 1e-5)
    assert_close(got[1], ref[1], 1e-5)


@needs_triton
@pytest.mark.parametrize("cls,kw", [(rnnkit.MinGRU, dict(num_layers=2, bidirectional=True)), (rnnkit.MinLSTM, {})],
                         ids=["mingru-2layer-bidir", "minlstm"])
def test_layer_through_triton_at_b1_t1_and_odd_h_is_as_accurate_as_the_reference(interpret, monkeypatch, cls, kw):
    """Float32 with one row, one step (lengths 0 and 1 too) and an odd hidden size: values and gradients of
    the input, the initial state and every parameter within 1e-5 of the float64 truth (the reference
    backend's step loop on float64 copies), or as close to it as the float32 reference is."""
    torch.manual_seed(1)
    layer = cls(2, 5, batch_first=True, backend="scan", **kw)
    ref = cls(2, 5, batch_first=True, backend="reference", **kw)
    ref.load_state_dict(layer.state_dict())
    twin = copy.deepcopy(ref).double()
    n = layer.num_layers * layer.num_directions
    launches = _count_launches(monkeypatch)
    for B, T, lengths in ((1, 1, None), (1, 6, None), (3, 1, [1, 0, 1]), (2, 4, [1, 4])):
        x = (torch.randn(B, T, 2) * 3).requires_grad_()
        h0 = torch.randn(n, B, 5, requires_grad=True)
        xd, hd = (t.detach().double().requires_grad_() for t in (x, h0))
        lens = None if lengths is None else torch.tensor(lengths)
        monkeypatch.setenv("RNNKIT_TRITON", "0")
        same = values_and_grads(lambda: ref(x, h0, lengths=lens), [x, h0], list(ref.parameters()))
        truth = values_and_grads(lambda: twin(xd, hd, lengths=lens), [xd, hd], list(twin.parameters()))
        monkeypatch.setenv("RNNKIT_TRITON", "force")
        launches.clear()
        got = values_and_grads(lambda: layer(x, h0, lengths=lens), [x, h0], list(layer.parameters()))
        assert launches == ["f"] * n + ["b"] * n, (B, T, launches)
        assert_as_accurate(got[0] + got[1], same[0] + same[1], truth[0] + truth[1], 1e-5)


def test_switch(monkeypatch):
    x = torch.zeros(1, 2, 3)
    monkeypatch.delenv("RNNKIT_TRITON", raising=False)
    assert not ts.wanted(x)  # auto: CUDA only
    monkeypatch.setenv("RNNKIT_TRITON", "0")
    assert not ts.wanted(x)
    monkeypatch.setenv("RNNKIT_TRITON", "sometimes")
    with pytest.raises(ValueError, match="RNNKIT_TRITON"):
        ts.wanted(x)
    monkeypatch.setenv("RNNKIT_TRITON", "force")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET|not installed"):
        ts.wanted(x)


@needs_triton
def test_fresh_process():
    """The documented way: TRITON_INTERPRET=1 and RNNKIT_TRITON=force set before anything is imported."""
    script = textwrap.dedent("""
        import os, torch, rnnkit
        from rnnkit.kernels import triton_scan as ts
        torch.manual_seed(0)
        layer = rnnkit.MinGRU(3, 5, batch_first=True)
        x = torch.randn(2, 6, 3, requires_grad=True)
        def run(mode):
            os.environ["RNNKIT_TRITON"] = mode
            y, h = layer(x)
            return (y, h, *torch.autograd.grad((y * y).sum() + h.sum(), [x, *layer.parameters()]))
        calls = []
        real = ts.linear_scan
        ts.linear_scan = lambda *a: calls.append(1) or real(*a)
        got, ref = run("force"), run("0")
        assert calls == [1], calls
        print(max((u - v).abs().max().item() for u, v in zip(got, ref)))
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1", "RNNKIT_TRITON": "force"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split()[-1]) < 1e-5
