"""Parametrized weights (``torch.nn.utils.parametrize``, e.g. ``parametrizations.weight_norm``) work as
on torch.nn's layers: forward, gradients and ``step`` read the parametrized weight (before, a KeyError)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.parametrizations import weight_norm

import rnnkit


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_weight_norm_equals_torch_nn_with_the_same_parametrization(kind):
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(3, 4, num_layers=2).double()
    ours = rnnkit.from_torch(ref)
    for m in (ref, ours):
        weight_norm(m, "weight_hh_l0")
        weight_norm(m, "weight_ih_l1")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    (y_ref, _), (y, _) = ref(x), ours(x)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    y_ref.sin().sum().backward()
    y.sin().sum().backward()
    grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-12, rtol=0, msg=name)
    assert "parametrizations.weight_hh_l0.original0" in grads
    with torch.no_grad():  # the streaming step (its fast paths included) reads the parametrized weight
        state = ours.init_state(2)
        for t in range(5):
            y_t, state = ours.step(x[t], state)
            torch.testing.assert_close(y_t, y[t], atol=1e-12, rtol=0)


def test_weight_norm_on_a_fused_layer_trains_its_original_weights():
    torch.manual_seed(1)
    layer = rnnkit.LSTM(3, 4, batch_first=True, layer_norm=True).double()
    plain = rnnkit.LSTM(3, 4, batch_first=True, layer_norm=True).double()
    plain.load_state_dict(layer.state_dict())
    weight_norm(layer, "weight_hh_l0")
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    torch.testing.assert_close(layer(x)[0], plain(x)[0], atol=1e-12, rtol=0)  # the same weight at first
    layer(x)[0].sum().backward()
    g = layer.parametrizations.weight_hh_l0.original1.grad
    assert g is not None and g.abs().sum() > 0
