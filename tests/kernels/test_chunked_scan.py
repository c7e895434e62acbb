"""The chunked real-space scan equals the sequential recurrence, forwards and reversed, is float32-stable
where a log-space scan is not, and its hand-written backward passes gradcheck."""

from __future__ import annotations

import pytest
import torch

from rnnkit.kernels.chunked_scan import _split, linear_scan, scan_chunk


def _loop(a, b, h0, reverse=False):
    h, out = h0, [None] * a.shape[1]
    for t in (range(a.shape[1] - 1, -1, -1) if reverse else range(a.shape[1])):
        h = a[:, t] * h + b[:, t]
        out[t] = h
    return torch.stack(out, 1)


@pytest.mark.parametrize("T", [1, 2, 7, 97, 256, 300, 1000])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_chunk_equals_the_loop(T, reverse):
    a, b = torch.rand(3, T, 4, dtype=torch.float64), torch.randn(3, T, 4, dtype=torch.float64)
    h0 = torch.randn(3, 4, dtype=torch.float64)
    out = torch.empty_like(a)
    last = scan_chunk(a, b, h0, out, reverse=reverse)
    ref = _loop(a, b, h0, reverse)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(last, ref[:, 0] if reverse else ref[:, -1], rtol=1e-12, atol=1e-12)


def test_sub_chunks_are_near_the_square_root():
    assert _split(256) == 16 and _split(97) in (1, 97) and 256 % _split(256) == 0 and _split(1000) in (25, 40)


def test_float32_keeps_accuracy_when_the_decay_is_huge():
    # products of a reach 1e-300000 over 4096 steps: a float32 log-space scan loses every digit here
    a, b = torch.exp(-torch.rand(2, 4096, 4) * 200), torch.rand(2, 4096, 4) * 50
    h0 = -torch.rand(2, 4) * 5
    ref = _loop(a.double(), b.double(), h0.double())
    assert torch.allclose(linear_scan(a, b, h0).double(), ref, rtol=1e-5, atol=1e-5)


def test_float32_long_sequence_with_slow_decay():
    a, b = 1 - torch.rand(2, 4096, 8) * 1e-3, torch.rand(2, 4096, 8)
    ref = _loop(a.double(), b.double(), torch.zeros(2, 8, dtype=torch.float64))
    assert torch.allclose(linear_scan(a, b).double(), ref, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 7), (1, 300, 5), (3, 1, 9), (2, 61, 3)], ids=str)
def test_float32_values_and_gradients_equal_the_loop(shape, monkeypatch):
    # B=1, T=1, odd H, several chunks and a partial one: float32 against the float64 loop
    monkeypatch.setattr("rnnkit.kernels.chunked_scan.CHUNK", 16)
    g = torch.Generator().manual_seed(sum(shape))
    B, T, H = shape
    a64, b64, h64 = torch.rand(B, T, H, generator=g, dtype=torch.float64), \
        torch.randn(B, T, H, generator=g, dtype=torch.float64), torch.randn(B, H, generator=g, dtype=torch.float64)
    w = torch.randn(B, T, H, generator=g, dtype=torch.float64)
    grads = []
    for dtype, run in ((torch.float32, linear_scan), (torch.float64, _loop)):
        a, b, h0 = (t.to(dtype).requires_grad_() for t in (a64, b64, h64))
        out = run(a, b, h0)
        grads.append([out, *torch.autograd.grad((out * w.to(dtype)).sum(), (a, b, h0))])
    for fast, ref in zip(*grads):
        assert torch.allclose(fast.double(), ref, rtol=1e-5, atol=1e-5 * max(1.0, ref.abs().max().item()))


@pytest.mark.parametrize("T", [5, 37])
def test_gradcheck(T, monkeypatch):
    monkeypatch.setattr("rnnkit.kernels.chunked_scan.CHUNK", 16)  # several chunks and a partial one
    d = dict(dtype=torch.float64, requires_grad=True)
    a, b, h0 = torch.rand(2, T, 3, **d), torch.randn(2, T, 3, **d), torch.randn(2, 3, **d)
    assert torch.autograd.gradcheck(linear_scan, (a, b, h0))


def test_bad_shapes_are_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        linear_scan(torch.rand(2, 3, 4), torch.rand(2, 3, 5))
