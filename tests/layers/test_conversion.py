"""from_torch / to_torch round trips, and parameters that survive .to(), deepcopy and assign-loading."""

from __future__ import annotations

import copy

import pytest
import torch

import rnnkit


@pytest.mark.parametrize("make", [lambda: torch.nn.GRU(5, 7, num_layers=2),
                                  lambda: torch.nn.LSTM(5, 7, proj_size=3, batch_first=True),
                                  lambda: torch.nn.RNN(5, 7, nonlinearity="relu", bidirectional=True)])
def test_from_torch_and_back(make):
    tm = make().double()
    rm = rnnkit.from_torch(tm)
    back = rm.to_torch()
    assert type(back) is type(tm)
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    rm.backend = "cell"  # compare the rnnkit recurrence itself, not the shared native kernel
    assert torch.allclose(tm(x)[0], rm(x)[0], atol=1e-12)
    assert torch.allclose(tm(x)[0], back(x)[0], atol=1e-12)


def test_to_torch_refuses_variants_torch_lacks():
    with pytest.raises(ValueError, match="layer-norm"):
        rnnkit.LSTM(4, 6, layer_norm=True).to_torch()
    with pytest.raises(TypeError, match="Linear"):
        rnnkit.from_torch(torch.nn.Linear(3, 3))


def test_to_torch_refuses_zoneout_which_changes_evaluation():
    with pytest.raises(ValueError, match="torch.nn has no zoneout"):
        rnnkit.LSTM(3, 4, zoneout=0.5).to_torch()
    converted = rnnkit.LSTM(3, 4, recurrent_dropout=0.3).eval().to_torch()  # training-only: nothing changes
    assert isinstance(converted, torch.nn.LSTM)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_torch_rnnbase_attributes_a_drop_in_user_calls(kind):
    """flatten_parameters (a no-op here), all_weights in torch's order, proj_size, dropout=1."""
    ours, theirs = getattr(rnnkit, kind)(3, 4, 2, bidirectional=True), getattr(torch.nn, kind)(3, 4, 2, bidirectional=True)
    ours.load_state_dict(theirs.state_dict())
    ours.flatten_parameters()
    assert ours.proj_size == theirs.proj_size == 0
    assert len(ours.all_weights) == len(theirs.all_weights) == 4
    for a, b in zip(ours.all_weights, theirs.all_weights):
        assert [torch.equal(p, q) for p, q in zip(a, b)] == [True] * len(b) and len(a) == len(b)
    dropped = rnnkit.from_torch(getattr(torch.nn, kind)(3, 4, 2, dropout=1.0)).train()
    x = torch.randn(5, 2, 3)
    assert dropped.dropout == 1.0 and torch.isfinite(dropped(x)[0]).all()


def test_min_layers_name_the_options_they_lack():
    with pytest.raises(TypeError, match="MinGRU: no option recurrent_dropout"):
        rnnkit.MinGRU(3, 4, recurrent_dropout=0.1)


def test_parameters_stay_bound_after_conversions():
    layer = rnnkit.LSTM(4, 6, layer_norm=True, batch_first=True)
    x = torch.randn(2, 5, 4)
    y = layer(x)[0]
    clone = copy.deepcopy(layer).double()
    assert torch.allclose(clone(x.double())[0].float(), y, atol=1e-6)
    fresh = rnnkit.LSTM(4, 6, layer_norm=True, batch_first=True)
    fresh.load_state_dict(layer.state_dict(), assign=True)
    assert torch.allclose(fresh(x)[0], y)
    with torch.no_grad():
        fresh.ln_c_weight_l0.mul_(2.0)  # the cell must see the layer's (new) parameter
    assert not torch.allclose(fresh(x)[0], y)


def test_layer_norm_parameters_are_named():
    names = [n for n, _ in rnnkit.GRU(4, 6, num_layers=2, layer_norm=True).named_parameters()]
    assert "ln_ih_weight_l0" in names and "ln_hh_weight_l1" in names


def test_from_torch_keeps_frozen_weights_frozen():
    ref = torch.nn.LSTM(3, 4, num_layers=2)
    ref.weight_ih_l0.requires_grad_(False)
    ref.bias_hh_l1.requires_grad_(False)
    layer = rnnkit.from_torch(ref)
    assert {n for n, p in layer.named_parameters() if not p.requires_grad} == {"weight_ih_l0", "bias_hh_l1"}


def test_from_torch_takes_a_subclass_that_computes_torchs_recurrence():
    """A subclass of nn.LSTM that only adds an initialisation (a common pattern) was refused as not an
    LSTM; one that overrides forward is refused by name, since the converted layer would not do what it does."""
    class ChronoLSTM(torch.nn.LSTM):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            with torch.no_grad():
                self.bias_hh_l0[self.hidden_size:2 * self.hidden_size].fill_(1.0)

    class Doubled(torch.nn.GRU):
        def forward(self, x, hx=None):
            y, h = super().forward(x, hx)
            return 2 * y, h

    torch.manual_seed(0)
    ref = ChronoLSTM(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(rnnkit.from_torch(ref)(x)[0], ref(x)[0])
    with pytest.raises(TypeError, match="Doubled overrides torch.nn.GRU.forward"):
        rnnkit.from_torch(Doubled(3, 4))
    with pytest.raises(TypeError, match="expects a torch.nn.RNN, LSTM or GRU, got Linear"):
        rnnkit.from_torch(torch.nn.Linear(3, 4))
