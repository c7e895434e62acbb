"""The log-space scan equals the sequential linear recurrence; gradients pass gradcheck."""

from __future__ import annotations

import torch

from rnnkit.kernels.scan import log_space_scan


def _loop(log_a, log_b, h0):
    h, out = h0, []
    for t in range(log_a.shape[1]):
        h = log_a[:, t].exp() * h + log_b[:, t].exp()
        out.append(h)
    return torch.stack(out, 1)


def test_scan_equals_loop_with_a_negative_start():
    log_a = -torch.rand(2, 300, 3, dtype=torch.float64) * 3
    log_b = torch.randn(2, 300, 3, dtype=torch.float64)
    h0 = -torch.rand(2, 3, dtype=torch.float64) * 5
    assert torch.allclose(log_space_scan(log_a, log_b, h0), _loop(log_a, log_b, h0), rtol=1e-10)


def test_scan_float32_keeps_accuracy_when_the_decay_is_huge():
    # cumulative log-decay reaches -4e5: a float32 log-space scan would lose every digit here
    log_a = -torch.rand(1, 4096, 4) * 200
    log_b = torch.randn(1, 4096, 4)
    h = log_space_scan(log_a, log_b)
    ref = _loop(log_a.double(), log_b.double(), torch.zeros(1, 4, dtype=torch.float64))
    assert torch.allclose(h.double(), ref, rtol=1e-5)


def test_scan_gradcheck():
    log_a = (-torch.rand(2, 7, 3, dtype=torch.float64)).requires_grad_()
    log_b = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(log_space_scan, (log_a, log_b, h0))
