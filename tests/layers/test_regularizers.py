"""Acceptance 6: recurrent dropout is the identity in eval mode and zoneout its expectation
``p h_{t-1} + (1-p) h_t`` (Krueger et al.); in training the recurrent dropout mask is the same at every
time step, and zoneout keeps units at their previous value."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.cells.base import LSTMState


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU", "IndRNN"])
def test_recurrent_dropout_is_the_identity_in_eval_mode(kind):
    torch.manual_seed(0)
    plain = getattr(rnnkit, kind)(4, 6, num_layers=2, batch_first=True).double()
    reg = getattr(rnnkit, kind)(4, 6, num_layers=2, batch_first=True, recurrent_dropout=0.5).double()
    reg.load_state_dict(plain.state_dict())
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    reg.eval(); plain.eval()
    assert torch.equal(reg(x)[0], plain(x)[0])
    reg.train()
    assert not torch.allclose(reg(x)[0], plain(x)[0])


def _expected_zoneout_loop(layer, x, p, p_c=None):
    """Hand-written eval-mode zoneout: every state becomes p * previous + (1 - p) * new, per step (an
    LSTM's c at ``p_c`` when given)."""
    p_c = p if p_c is None else p_c
    ys = x
    for cell in layer.cells():
        s = cell.init_state(x.shape[0], dtype=x.dtype)
        outs = []
        for t in range(ys.shape[1]):
            _, new = cell.step(ys[:, t], s)
            if isinstance(new, LSTMState):
                s = LSTMState(p * s.h + (1 - p) * new.h, p_c * s.c + (1 - p_c) * new.c)
                outs.append(s.h)
            else:
                s = p * s + (1 - p) * new
                outs.append(s)
        ys = torch.stack(outs, 1)
    return ys


@pytest.mark.parametrize("kind,options", [("RNN", {}), ("LSTM", {}), ("GRU", {}), ("IndRNN", {}),
                                          ("LSTM", {"layer_norm": True}), ("GRU", {"layer_norm": True}),
                                          ("MinGRU", {}), ("MinLSTM", {})])
def test_zoneout_is_its_expectation_in_eval_mode(kind, options):
    torch.manual_seed(0)
    p = 0.3
    layer = getattr(rnnkit, kind)(4, 6, num_layers=2, batch_first=True, zoneout=p, **options).double().eval()
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    want = _expected_zoneout_loop(layer, x, p)
    y, _ = layer(x)
    torch.testing.assert_close(y, want)
    assert torch.equal(layer(x)[0], y)  # deterministic
    # the same network without zoneout differs: eval mode is not the plain recurrence
    plain = getattr(rnnkit, kind)(4, 6, num_layers=2, batch_first=True, **options).double().eval()
    plain.load_state_dict(layer.state_dict())
    assert not torch.allclose(plain(x)[0], y)


@pytest.mark.parametrize("kind,options", [("LSTM", {}), ("GRU", {}), ("LSTM", {"layer_norm": True})])
def test_eval_zoneout_fused_equals_reference_values_and_gradients(kind, options):
    torch.manual_seed(1)
    layer = getattr(rnnkit, kind)(5, 7, batch_first=True, zoneout=0.2, **options).double().eval()
    assert layer.select_backend() == "fused"
    x = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 2, 4])
    y_fast, _ = layer(x, lengths=lengths)
    g_fast = torch.autograd.grad(y_fast.square().sum(), [x, *layer.parameters()])
    layer.backend = "reference"
    y_ref, _ = layer(x, lengths=lengths)
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, *layer.parameters()])
    torch.testing.assert_close(y_fast, y_ref)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "MinGRU"])
def test_eval_zoneout_step_by_step_equals_forward(kind):
    torch.manual_seed(2)
    layer = getattr(rnnkit, kind)(4, 6, num_layers=2, zoneout=0.25).eval()
    x = torch.randn(5, 2, 4)  # (T, B, F)
    y, _ = layer(x)
    state, outs = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            out, state = layer.step(x[t], state)
            outs.append(out)
    torch.testing.assert_close(torch.stack(outs), y, atol=1e-6, rtol=1e-5)


def _spy_steps(monkeypatch, layer, record) -> list:
    """What ``record(state, recurrent_mask)`` returns at each step of the layer's first cell."""
    seen = []
    cell = layer.cells()[0]
    original = type(cell).recurrence

    def spy(self, xp_t, state, recurrent_mask=None):
        seen.append(record(state, recurrent_mask))
        return original(self, xp_t, state, recurrent_mask)
    monkeypatch.setattr(type(cell), "recurrence", spy)
    return seen


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_dropout_mask_is_the_same_at_every_step(kind, monkeypatch):
    # the cell path, where the mask is visible per step (the fused kernels take the same one mask:
    # tests/kernels/test_fused_lstm.py and test_fused_gru.py compare them with the reference)
    layer = getattr(rnnkit, kind)(4, 6, batch_first=True, recurrent_dropout=0.5, backend="cell").train()
    seen = _spy_steps(monkeypatch, layer, lambda state, mask: mask)
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
    assert z.train().select_backend() == "fused" and z.eval().select_backend() == "fused"
    assert rnnkit.GRU(4, 6, recurrent_dropout=0.1).eval().select_backend() == "native"
    assert rnnkit.RNN(4, 6, zoneout=0.1).train().select_backend() == "cell"
    assert rnnkit.GRU(4, 6, backend="reference").select_backend() == "reference"
    with pytest.raises(ValueError, match="native"):
        rnnkit.LSTM(4, 6, layer_norm=True, backend="native").select_backend()


# -- weight drop (DropConnect on the recurrent matrices) -------------------------------------------

def _dropped_copy(layer, p, seed):
    """The same layer with its recurrent matrices dropped by hand, drawing the masks in the layer's order."""
    import copy

    from rnnkit.layers.regularizers import drop_connect

    twin = copy.deepcopy(layer)
    twin.weight_drop = 0.0
    torch.manual_seed(seed)
    with torch.no_grad():
        for name in layer._dropped:
            getattr(twin, name).copy_(drop_connect(getattr(layer, name), p))
    return twin


@pytest.mark.parametrize("make", [
    lambda **kw: rnnkit.LSTM(4, 6, num_layers=2, batch_first=True, **kw),  # native
    lambda **kw: rnnkit.GRU(4, 6, num_layers=2, batch_first=True, bidirectional=True, **kw),  # native
    lambda **kw: rnnkit.LSTM(4, 6, num_layers=2, batch_first=True, layer_norm=True, **kw),  # fused
    lambda **kw: rnnkit.IndRNN(4, 6, num_layers=2, batch_first=True, **kw),  # fused
], ids=["lstm", "gru-bidirectional", "layernorm-lstm", "indrnn"])
def test_weight_drop_drops_the_recurrent_matrices_once_per_call(make):
    torch.manual_seed(0)
    layer = make(weight_drop=0.4).double()
    plain = make().double()
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    layer.eval(); plain.eval()
    assert torch.equal(layer(x)[0], plain(x)[0])  # the identity in evaluation mode
    layer.train()
    twin = _dropped_copy(layer, 0.4, seed=5).train()
    torch.manual_seed(5)
    y, _ = layer(x)
    torch.testing.assert_close(y, twin(x)[0], atol=1e-12, rtol=0)  # the same masks, on all steps
    y.sum().backward()
    twin_y, _ = twin(x)
    twin_y.sum().backward()
    for name in layer._dropped:  # a dropped entry gets no gradient; the others the scaled one
        g, tg, w = getattr(layer, name).grad, getattr(twin, name).grad, getattr(twin, name)
        kept = w != 0
        assert torch.equal(g[~kept], torch.zeros_like(g[~kept]))
        torch.testing.assert_close(g[kept], tg[kept] / 0.6, atol=1e-12, rtol=0)
    assert not torch.equal(layer(x)[0], layer(x)[0])  # a fresh mask per call


def test_weight_drop_in_training_takes_the_full_step_and_its_masks():
    layer = rnnkit.LSTM(3, 5, weight_drop=0.5).train()
    x, st = torch.randn(2, 3), LSTMState(torch.randn(1, 2, 5), torch.randn(1, 2, 5))  # W_hh h != 0
    from rnnkit.kernels import step as fast_step

    with torch.no_grad():
        assert fast_step.try_step(layer, x, st) is None
        assert not torch.equal(layer.step(x, st)[0], layer.step(x, st)[0])
        layer.eval()
        torch.testing.assert_close(layer.step(x, st)[0], layer(x.unsqueeze(0), st)[0][0], atol=1e-6, rtol=0)


def test_drop_connect_keeps_about_1_minus_p_scaled():
    from rnnkit.layers.regularizers import drop_connect

    torch.manual_seed(0)
    w = torch.ones(400, 500, requires_grad=True)
    d = drop_connect(w, 0.3)
    kept = d != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    torch.testing.assert_close(d[kept], torch.full_like(d[kept], 1 / 0.7))
    d.sum().backward()
    assert torch.equal(w.grad, kept.to(w.dtype) / 0.7)


def test_weight_drop_bad_values():
    with pytest.raises(ValueError, match="weight_drop"):
        rnnkit.LSTM(3, 5, weight_drop=1.0)
    with pytest.raises(TypeError):
        rnnkit.MinGRU(3, 5, weight_drop=0.1)  # no recurrent matrix to drop
    assert "weight_drop=0.2" in repr(rnnkit.GRU(3, 5, weight_drop=0.2))


@pytest.mark.parametrize("options", [{}, {"layer_norm": True}, {"peephole": True}])
@pytest.mark.parametrize("backend", ["auto", "cell"])
def test_lstm_zoneout_rates_for_h_and_c_apart_in_eval_mode(options, backend):
    torch.manual_seed(3)
    layer = rnnkit.LSTM(4, 6, num_layers=2, batch_first=True, zoneout=(0.05, 0.5), backend=backend,
                        **options).double().eval()
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    y, _ = layer(x)
    torch.testing.assert_close(y, _expected_zoneout_loop(layer, x, 0.05, 0.5))
    one = rnnkit.LSTM(4, 6, num_layers=2, batch_first=True, zoneout=0.5, **options).double().eval()
    one.load_state_dict(layer.state_dict())
    assert not torch.allclose(one(x)[0], y)  # not the single rate
    state, outs = None, []
    with torch.no_grad():
        for t in range(x.shape[1]):
            out, state = layer.step(x[:, t], state)
            outs.append(out)
    torch.testing.assert_close(torch.stack(outs, 1), y)


def test_lstm_zoneout_rates_apart_in_training(monkeypatch):
    """h keeps its previous value at about p_h, c at about p_c; a rate of 0 draws no mask (the fused
    kernel and the cell loop then use the same random numbers: tests/kernels/test_fused_lstm.py)."""
    layer = rnnkit.LSTM(4, 64, batch_first=True, zoneout=(0.0, 0.6), backend="cell").train()
    seen = _spy_steps(monkeypatch, layer, lambda state, mask: state)
    layer(torch.randn(16, 40, 4))
    h = torch.stack([s.h for s in seen[1:]])
    c = torch.stack([s.c for s in seen[1:]])
    assert (h[1:] == h[:-1]).float().mean().item() < 0.02  # h is never zoned out
    assert 0.55 < (c[1:] == c[:-1]).float().mean().item() < 0.65


@pytest.mark.parametrize("make, match", [
    (lambda: rnnkit.GRU(4, 6, zoneout=(0.1, 0.2)), "this layer's state has one part"),
    (lambda: rnnkit.MinGRU(4, 6, zoneout=(0.1, 0.2)), "this layer's state has one part"),
    (lambda: rnnkit.LSTM(4, 6, zoneout=(0.1, 0.2, 0.3)), "takes one rate or two, \\(p_h, p_c\\) for the LSTM's h and c, got 3"),
    (lambda: rnnkit.LSTM(4, 6, zoneout=(0.1, 1.0)), "zoneout must be a number in"),
])
def test_bad_zoneout_rates_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_equal_rates_are_one_rate():
    assert rnnkit.LSTM(4, 6, zoneout=(0.2, 0.2)).zoneout == 0.2
    assert rnnkit.LSTM(4, 6, zoneout=[0.0, 0.0]).select_backend() == "native"  # no zoneout at all
    assert "zoneout=(0.05, 0.5)" in repr(rnnkit.LSTM(4, 6, zoneout=(0.05, 0.5)))
