"""Acceptance 6: zoneout and recurrent dropout are identity in eval mode; in training the recurrent
dropout mask is the same at every time step, and zoneout keeps units at their previous value."""

from __future__ import annotations

import pytest
import torch

import rnnkit


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU", "IndRNN"])
@pytest.mark.parametrize("option", ["zoneout", "recurrent_dropout"])
def test_identity_in_eval_mode(kind, option):
    torch.manual_seed(0)
    plain = getattr(rnnkit, kind)(4, 6, num_layers=2, batch_first=True).double()
    reg = getattr(rnnkit, kind)(4, 6, num_layers=2, batch_first=True, **{option: 0.5}).double()
    reg.load_state_dict(plain.state_dict())
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    reg.eval(); plain.eval()
    assert torch.equal(reg(x)[0], plain(x)[0])
    reg.train()
    assert not torch.allclose(reg(x)[0], plain(x)[0])


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_dropout_mask_is_the_same_at_every_step(kind, monkeypatch):
    # the cell path, where the mask is visible per step (the fused kernels take the same one mask:
    # tests/kernels/test_fused_lstm.py and test_fused_gru.py compare them with the reference)
    layer = getattr(rnnkit, kind)(4, 6, batch_first=True, recurrent_dropout=0.5, backend="cell").train()
    cell = layer.cells()[0]
    seen = []
    original = type(cell).recurrence

    def spy(self, xp_t, state, recurrent_mask=None):
        seen.append(recurrent_mask)
        return original(self, xp_t, state, recurrent_mask)
    monkeypatch.setattr(type(cell), "recurrence", spy)
    layer(torch.randn(32, 9, 4))
    assert len(seen) == 9
    assert all(m is not None and torch.equal(m, seen[0]) for m in seen)
    values = set(seen[0].unique().tolist())
    assert values == {0.0, 2.0}  # Bernoulli(0.5) scaled by 1/(1-p)
    layer(torch.randn(32, 9, 4))
    assert not torch.equal(seen[9], seen[0])  # a fresh mask per sequence batch


def test_zoneout_keeps_units_with_its_probability():
    layer = rnnkit.RNN(4, 64, batch_first=True, zoneout=0.3).train()
    x = torch.randn(16, 50, 4)
    y, _ = layer(x)
    kept = (y[:, 1:] == y[:, :-1]).float().mean().item()
    assert 0.25 < kept < 0.35


def test_min_layers_refuse_recurrent_dropout_but_take_zoneout():
    with pytest.raises(TypeError):
        rnnkit.MinGRU(4, 6, recurrent_dropout=0.1)
    layer = rnnkit.MinGRU(4, 6, batch_first=True, zoneout=0.5).train()
    assert layer.select_backend() == "cell"
    y, _ = layer(torch.randn(2, 5, 4))
    assert torch.isfinite(y).all()


def test_backend_selection():
    assert rnnkit.LSTM(4, 6).select_backend() == "native"
    assert rnnkit.LSTM(4, 6, layer_norm=True).select_backend() == "fused"
    assert rnnkit.LSTM(4, 6, peephole=True).select_backend() == "fused"
    assert rnnkit.MinGRU(4, 6).select_backend() == "scan"
    z = rnnkit.GRU(4, 6, zoneout=0.1)
    assert z.train().select_backend() == "fused" and z.eval().select_backend() == "native"
    assert rnnkit.RNN(4, 6, zoneout=0.1).train().select_backend() == "cell"
    assert rnnkit.GRU(4, 6, backend="reference").select_backend() == "reference"
    with pytest.raises(ValueError, match="native"):
        rnnkit.LSTM(4, 6, layer_norm=True, backend="native").select_backend()
