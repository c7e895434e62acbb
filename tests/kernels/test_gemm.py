"""The GEMM helpers equal plain matmuls (oneDNN on CPU float32 where it measures faster, torch.mm
otherwise); the two paths give the same layers; the automatic choice is measured once per shape."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.kernels import _gemm
from rnnkit.kernels._gemm import InputSide, Weight, add_outer


@pytest.mark.parametrize("path", ["onednn", "mm", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weight_and_add_outer_equal_matmul(dtype, path, monkeypatch):
    monkeypatch.setenv("RNNKIT_GEMM", path)
    w, x, b, o = (torch.randn(*s, dtype=dtype) for s in ((12, 5), (7, 5), (12,), (7, 12)))
    lin = Weight(w, 7)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(lin(x), x @ w.t(), atol=tol)
    assert torch.allclose(lin(x, bias=b), x @ w.t() + b, atol=tol)
    assert torch.allclose(lin(x, other=o), x @ w.t() + o, atol=tol)
    assert torch.allclose(lin(x[:3]), x[:3] @ w.t(), atol=tol)  # fewer rows than packed for
    acc = torch.ones(5, 12, dtype=dtype)
    add_outer(acc, x, o)
    assert torch.allclose(acc, 1 + x.t() @ o, atol=tol)
    add_outer(acc, x[:0], o[:0])  # K = 0 rows: no change
    assert torch.allclose(acc, 1 + x.t() @ o, atol=tol)


@pytest.mark.parametrize("path", ["onednn", "mm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transposed_weight_multiplies_by_w_itself(dtype, path, monkeypatch):
    """``Weight.transposed(w)`` is ``x @ w`` (a forward weight in a backward pass); where torch.mm does
    the product it uses ``w``'s own storage (no transposed copies), else oneDNN's packing of ``w.T``."""
    monkeypatch.setenv("RNNKIT_GEMM", path)
    w, x, o = (torch.randn(*s, dtype=dtype) for s in ((12, 5), (7, 12), (7, 5)))
    lin = Weight.transposed(w, 7)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(lin(x), x @ w, atol=tol)
    assert torch.allclose(lin(x, other=o), x @ w + o, atol=tol)
    assert torch.allclose(lin(x[:2]), x[:2] @ w, atol=tol)
    onednn = path == "onednn" and dtype == torch.float32 and _gemm.onednn_available()
    assert (lin.packed is not None) == onednn
    if not onednn:
        assert lin.wt.data_ptr() == w.data_ptr()


def test_input_side_backward_equals_autograd():
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    w, b, gain = (torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((8, 3), (8,), (8,)))
    keep = torch.empty(6, 2, 8, dtype=torch.float64)  # the norm's input, kept for the backward
    side = InputSide(x.detach(), w.detach(), b.detach(), gain.detach(), 1e-5, 4, keep)
    d = torch.randn(6, 2, 8, dtype=torch.float64)
    ys = [side.forward(t0, t0 + 2) for t0 in (0, 2, 4)]
    ref = torch.nn.functional.layer_norm(x @ w.t(), (8,), gain, b, 1e-5)
    assert torch.allclose(torch.cat(ys).view(6, 2, 8), ref)
    side.begin_backward(True)
    for t0 in (4, 2, 0):
        side.backward(t0, t0 + 2, d[t0:t0 + 2].reshape(-1, 8))
    gx, gw, gb, gg = torch.autograd.grad(ref, (x, w, b, gain), d)
    for a, e in ((side.dx, gx), (side.d_w, gw), (side.d_bias, gb), (side.d_gain, gg)):
        assert torch.allclose(a, e, atol=1e-12)


def _run(layer, x):
    x = x.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    y, _ = layer(x)
    (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in layer.parameters()]


@pytest.mark.skipif(not _gemm.onednn_available(), reason="this torch build has no oneDNN")
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_forced_paths_agree(kind, monkeypatch):
    torch.manual_seed(0)
    layer = getattr(rnnkit, kind)(7, 33, batch_first=True, layer_norm=True)
    assert layer.select_backend() == "fused"
    x = torch.randn(5, 19, 7)
    results = {}
    for choice in ("onednn", "mm"):
        monkeypatch.setenv("RNNKIT_GEMM", choice)
        results[choice] = _run(layer, x)
    for a, b in zip(results["onednn"], results["mm"]):
        scale = max(1.0, float(b.abs().max()))
        assert float((a - b).abs().max()) <= 1e-5 * scale


def test_automatic_choice_is_measured_once_per_shape(monkeypatch):
    monkeypatch.delenv("RNNKIT_GEMM", raising=False)
    like = torch.zeros(1)
    _gemm._measured.cache_clear()  # measured now, in this test
    rng = torch.get_rng_state()
    first = _gemm.prefer_onednn("linear", 8, 16, 64, like)
    _gemm.prefer_onednn("outer", 24, 16, 64, like)
    assert torch.equal(torch.get_rng_state(), rng)  # timing leaves a seeded run's random stream alone
    assert isinstance(first, bool)
    if _gemm.onednn_available():
        hits = _gemm._measured.cache_info().hits
        assert _gemm.prefer_onednn("linear", 8, 16, 64, like) == first
        assert _gemm._measured.cache_info().hits == hits + 1
    assert _gemm.prefer_onednn("linear", 8, 16, 64, like.double()) is False  # float64: torch.mm


@pytest.mark.parametrize("onednn_time, chosen", [(0.9, False), (0.5, True)])
def test_onednn_is_chosen_only_when_clearly_faster(onednn_time, chosen, monkeypatch):
    """A per-call timing within noise of torch.mm's keeps torch.mm: the timing leaves out oneDNN's
    reorder and copies (module doc)."""
    if not _gemm.onednn_available():
        pytest.skip("this torch has no oneDNN linear ops")
    times = iter([onednn_time, 1.0, onednn_time, 1.0])  # oneDNN, mm, oneDNN, mm: the order timed
    monkeypatch.setattr(_gemm, "_best_time", lambda fn, **kw: next(times))
    _gemm._measured.cache_clear()
    try:
        assert _gemm._measured("linear", 8, 16, 64, 1) is chosen
    finally:
        _gemm._measured.cache_clear()


def test_deterministic_mode_does_not_depend_on_a_timing(monkeypatch):
    monkeypatch.delenv("RNNKIT_GEMM", raising=False)
    monkeypatch.setattr(_gemm, "_measured", lambda *a: True)  # as if oneDNN had won the timing
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert _gemm.prefer_onednn("linear", 8, 16, 64, torch.zeros(1)) is False
    finally:
        torch.use_deterministic_algorithms(before)


def test_unknown_gemm_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RNNKIT_GEMM", "fast")
    with pytest.raises(ValueError, match="RNNKIT_GEMM: expected auto, onednn or mm, got 'fast'"):
        _gemm.prefer_onednn("linear", 8, 16, 64, torch.zeros(1))
