"""The fused GRU kernel equals the reference recurrence: values and gradients (float32 within 1e-5,
float64 gradcheck of the hand-written backward), with lengths, initial state, masks and zoneout."""

from __future__ import annotations

import copy

import pytest
import torch

from rnnkit import cells as C
from rnnkit.kernels import _fused_common as fc
from rnnkit.kernels import fused_gru
from tests.kernels._util import assert_as_accurate, assert_close, random_gains, values_and_grads

CELLS = {
    "layer_norm": lambda i, h: C.LayerNormGRUCell(i, h),
    "plain": lambda i, h: C.GRUCell(i, h),
    "no_bias": lambda i, h: C.LayerNormGRUCell(i, h, bias=False),
}
SHAPES = [(1, 1, 3, 7), (3, 9, 4, 5), (5, 20, 6, 8)]  # (B, T, I, H): B=1, T=1, odd H


def _compare(cell, x, h0, dtype, tol, lengths=None, mask=None, zoneout=0.0, as_accurate=False, random=True):
    """Fused against reference in ``dtype``; with ``as_accurate`` (float32) against the float64 truth as
    well: within ``tol`` of it or of the reference's own float32 error (``assert_as_accurate``)."""
    if as_accurate:
        truth = _compare(copy.deepcopy(cell).double(), x, h0, torch.float64, 1e-10, lengths, mask, zoneout,
                         random=False)
    cell = cell.to(dtype)
    if dtype == torch.float64 and random:
        random_gains(cell)
    x, h0 = x.to(dtype).requires_grad_(), h0.to(dtype).requires_grad_()
    inputs, params = [x, h0], list(cell.parameters())
    torch.manual_seed(11)
    fast = values_and_grads(lambda: fused_gru.gru_sequence(cell, x, h0, lengths, mask, zoneout), inputs, params)
    torch.manual_seed(11)
    ref = values_and_grads(lambda: cell.reference_forward(x, h0, lengths=lengths, recurrent_mask=mask,
                                                          zoneout=zoneout), inputs, params)
    if as_accurate:
        assert_as_accurate(fast[0] + fast[1], ref[0] + ref[1], truth[0] + truth[1], tol)
        return fast
    assert_close(fast[0], ref[0], tol)
    assert_close(fast[1], ref[1], tol)
    return fast


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float32_equals_reference(kind, shape):
    B, T, I, H = shape
    _compare(CELLS[kind](I, H), torch.randn(B, T, I), torch.randn(B, H), torch.float32, 1e-5)


@pytest.mark.parametrize("kind", list(CELLS))
def test_lengths_mask_and_zoneout_equal_reference(kind):
    B, T, I, H = 5, 11, 3, 6
    torch.manual_seed(0)  # the data, not the state other tests left: float32 cases vary (see below)
    x, h0 = torch.randn(B, T, I), torch.randn(B, H)
    lengths, mask = torch.tensor([4, 11, 0, 1, 7]), torch.rand(B, H) * 2
    for kw in ({"lengths": lengths}, {"mask": mask}, {"zoneout": 0.3},
               {"lengths": lengths, "zoneout": 0.3, "mask": mask}):
        _compare(CELLS[kind](I, H), x, h0, torch.float64, 1e-10, **kw)
        _compare(CELLS[kind](I, H), x, h0, torch.float32, 1e-5, as_accurate=True, **kw)


@pytest.mark.parametrize("ln,bias,masked,zoned,lengths", [
    (True, True, False, False, None), (False, True, False, False, None), (False, False, True, True, None),
    (True, True, True, True, torch.tensor([5, 3, 0])), (True, False, False, False, torch.tensor([4, 4, 1]))],
    ids=["layer_norm", "plain", "mask_zoneout", "ln_all_lengths", "ln_no_bias_lengths"])
def test_gradcheck_of_the_hand_written_backward(ln, bias, masked, zoned, lengths):
    B, T, I, H = 3, 5, 2, 3
    d = dict(dtype=torch.float64)
    req = lambda *s, scale=1.0: (torch.randn(*s, **d) * scale).requires_grad_()  # noqa: E731
    keep = (torch.rand(T, 1, B, H, **d) < 0.3).to(torch.float64) if zoned else None
    args = (req(T, B, I), req(3 * H, I, scale=0.5), req(3 * H) if bias else None, req(3 * H) if ln else None,
            req(B, H), req(3 * H, H, scale=0.5), req(3 * H) if bias else None, req(3 * H) if ln else None,
            torch.rand(B, H, **d) * 2 if masked else None, keep, fc.batching(lengths, B, T))
    assert torch.autograd.gradcheck(lambda *a: fused_gru._GRUFn.apply(*a), args)
