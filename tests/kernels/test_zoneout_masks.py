"""Zoneout's keep masks for a whole sequence (rnnkit.cells.base.zoneout_keep): Bernoulli at each part's
rate, reproducible under torch.manual_seed whatever the thread count, fresh per step and per call, from
the C++ op on the CPU where it builds and from torch's bernoulli_ without it."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from rnnkit.cells import base as cells_base
from rnnkit.cells.base import zoneout_keep
from rnnkit.kernels import _cpp

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="no C++ compiler on this machine: torch's bernoulli_ draws the masks")

T, B, H = 64, 8, 96  # 6,144 entries per (t, part) plane


def _check_rates(keep: torch.Tensor, rates) -> None:
    assert keep.shape == (T, len(rates), B, H)
    assert set(keep.unique().tolist()) <= {0.0, 1.0}
    n = T * B * H
    for k, r in enumerate(rates):
        mean = keep[:, k].mean().item()
        assert abs(mean - r) <= 5 * math.sqrt(r * (1 - r) / n) + 1e-12, (k, r, mean)
    planes = keep.flatten(2)  # (T, parts, B*H): neighbouring steps' masks are independent
    for k, r in enumerate(rates):
        if 0 < r:
            a, b = planes[:-1, k].flatten(), planes[1:, k].flatten()
            assert not torch.equal(planes[0, k], planes[1, k])
            assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.03


@pytest.mark.parametrize("cpp", ["auto", "0"], ids=["cpp_op", "torch_bernoulli"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_masks_have_each_parts_rate_and_follow_the_seed(cpp, dtype, monkeypatch):
    monkeypatch.setenv("RNNKIT_CPP", cpp)
    like = torch.empty(1, dtype=dtype)
    torch.manual_seed(0)
    keep = zoneout_keep((0.1, 0.5), T, 2, B, H, like)
    assert keep.dtype == dtype
    _check_rates(keep, (0.1, 0.5))
    again = zoneout_keep((0.1, 0.5), T, 2, B, H, like)
    assert not torch.equal(keep, again)  # a fresh draw per call
    torch.manual_seed(0)
    assert torch.equal(zoneout_keep((0.1, 0.5), T, 2, B, H, like), keep)  # reproducible
    zero_part = zoneout_keep((0.0, 0.3), T, 2, B, H, like)
    assert zero_part[:, 0].abs().sum() == 0  # a part with rate 0 keeps nothing
    _check_rates(zero_part, (0.0, 0.3))
    assert zoneout_keep(0.0, T, 2, B, H, like) is None
    expected = zoneout_keep((0.2, 0.4), T, 2, B, H, like, expected=True)
    assert torch.equal(expected[:, 1], torch.full((T, B, H), 0.4, dtype=dtype))


@needs_compiler
def test_the_cpp_op_draws_them_the_same_on_any_thread_count(monkeypatch):
    monkeypatch.setenv("RNNKIT_CPP", "auto")
    ops = _cpp.ops()
    assert ops is not None, _cpp._state["error"]
    calls = []
    real = ops.zoneout_masks
    monkeypatch.setattr(_cpp, "ops", lambda: type("Ops", (), {"zoneout_masks": staticmethod(
        lambda *a: calls.append(1) or real(*a))})())
    saved = torch.get_num_threads()
    try:
        masks = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(5)
            masks.append(zoneout_keep(0.25, T, 1, B, H, torch.empty(1)))
    finally:
        torch.set_num_threads(saved)
    assert calls == [1, 1] and torch.equal(masks[0], masks[1])
    # float32 and float64 buffers get the same pattern under the same seed
    torch.manual_seed(5)
    assert torch.equal(zoneout_keep(0.25, T, 1, B, H, torch.empty(1, dtype=torch.float64)).float(), masks[0])
    with pytest.raises(RuntimeError, match="rates must be in"):
        real(torch.empty(2, 1, 3, 4), [1.0], 0)
    with pytest.raises(RuntimeError, match="expected 2 rates"):
        real(torch.empty(2, 2, 3, 4), [0.1], 0)


def test_the_reference_loop_draws_the_masks_once_per_sequence(monkeypatch):
    """The reference loop takes every step's masks from one draw (as the fused kernels do), and a
    projected LSTM, whose h and c differ in size, draws one per part."""
    from rnnkit import cells as C

    draws = []
    real = cells_base._draw_keep
    monkeypatch.setattr(cells_base, "_draw_keep", lambda keep, rates: draws.append(tuple(keep.shape)) or
                        real(keep, rates))
    torch.manual_seed(0)
    cell = C.LSTMCell(3, 6)
    cell.reference_forward(torch.randn(2, 7, 3), zoneout=(0.1, 0.3))
    assert draws == [(7, 2, 2, 6)]
    draws.clear()
    proj = C.LSTMCell(3, 6, proj_size=4)
    y, _ = proj.reference_forward(torch.randn(2, 7, 3), zoneout=0.2)
    assert draws == [(7, 1, 2, 4), (7, 1, 2, 6)] and y.shape == (2, 7, 4)
