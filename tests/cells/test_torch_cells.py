"""The plain cells equal torch.nn's cells with copied weights, step by step (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnkit import cells as C


def _copy(src: nn.Module, dst: nn.Module) -> None:
    dst.load_state_dict(src.state_dict(), strict=False)
    for name, p in src.named_parameters():
        assert torch.equal(getattr(dst, name), p)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_elman_equals_torch_rnncell(nonlinearity):
    tc = nn.RNNCell(5, 7, nonlinearity=nonlinearity).double()
    rc = C.ElmanRNNCell(5, 7, nonlinearity=nonlinearity).double()
    _copy(tc, rc)
    x, h = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    y, s = rc.step(x, h)
    assert torch.allclose(y, tc(x, h), atol=1e-12) and torch.equal(y, s)


def test_lstm_equals_torch_lstmcell_values_and_grads():
    tc = nn.LSTMCell(5, 7).double()
    rc = C.LSTMCell(5, 7).double()
    _copy(tc, rc)
    x = torch.randn(3, 5, dtype=torch.float64)
    h, c = torch.randn(3, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    ht, ct = tc(x, (h, c))
    y, (hr, cr) = rc.step(x, C.LSTMState(h, c))
    assert torch.allclose(hr, ht, atol=1e-12) and torch.allclose(cr, ct, atol=1e-12)
    (ht.sum() + ct.square().sum()).backward()
    (hr.sum() + cr.square().sum()).backward()
    for name, p in tc.named_parameters():
        assert torch.allclose(getattr(rc, name).grad, p.grad, atol=1e-12), name


def test_gru_equals_torch_grucell():
    tc = nn.GRUCell(5, 7).double()
    rc = C.GRUCell(5, 7).double()
    _copy(tc, rc)
    x, h = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    assert torch.allclose(rc.step(x, h)[0], tc(x, h), atol=1e-12)


def test_peephole_starts_at_zero_and_then_acts():
    plain, peep = C.LSTMCell(4, 6).double(), C.LSTMCell(4, 6, peephole=True).double()
    peep.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 8, 4, dtype=torch.float64)
    assert torch.allclose(plain(x)[0], peep(x)[0], atol=1e-12)
    with torch.no_grad():
        peep.weight_cf.fill_(0.7)
    assert not torch.allclose(plain(x)[0], peep(x)[0], atol=1e-6)


def test_forget_bias_initialises_the_forget_slice_only():
    torch.manual_seed(1)
    base = C.LSTMCell(4, 6)
    torch.manual_seed(1)
    fb = C.LSTMCell(4, 6, forget_bias=1.0)
    diff = fb.bias_ih - base.bias_ih
    assert torch.allclose(diff[6:12], torch.ones(6)) and torch.count_nonzero(diff[:6]) == 0
    assert torch.count_nonzero(diff[12:]) == 0
    with pytest.raises(ValueError, match="bias=True"):
        C.LSTMCell(4, 6, bias=False, forget_bias=1.0)


def test_projection_shapes():
    cell = C.LSTMCell(4, 8, proj_size=3)
    y, s = cell.step(torch.randn(2, 4), cell.init_state(2))
    assert y.shape == (2, 3) and s.c.shape == (2, 8) and cell.weight_hh.shape == (32, 3)
    with pytest.raises(ValueError, match="proj_size"):
        C.LSTMCell(4, 8, proj_size=8)
