"""The streaming fast path: ``step`` under no_grad equals ``forward``, is the path that ran, and follows
parameter updates; anything it does not cover goes to the full ``step``."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.kernels import step as fast_step


@pytest.mark.parametrize("make", [lambda: rnnkit.LSTM(5, 8, num_layers=2, batch_first=True),
                                  lambda: rnnkit.GRU(5, 8, num_layers=2, batch_first=True),
                                  lambda: rnnkit.RNN(5, 8, batch_first=True, nonlinearity="relu")],
                         ids=["lstm", "gru", "rnn"])
def test_no_grad_steps_equal_forward_on_the_fast_path(make, monkeypatch):
    layer = make().double().eval()
    x = torch.randn(3, 10, 5, dtype=torch.float64)
    h0 = layer.init_state(3)
    h0 = type(h0)(*(torch.randn_like(p) for p in h0)) if isinstance(h0, tuple) else torch.randn_like(h0)
    y, s = layer(x, h0)
    hits = []
    original = fast_step.try_step
    monkeypatch.setattr("rnnkit.layers.recurrent.try_step", lambda *a: hits.append(1) or original(*a))
    with torch.no_grad():
        state, ys = h0, []
        for t in range(10):
            out = fast_step.try_step(layer, x[:, t], state)
            assert out is not None  # the fast path applies
            yt, state = layer.step(x[:, t], state)
            assert torch.equal(yt, out[0])
            ys.append(yt)
    assert len(hits) == 10
    assert torch.allclose(torch.stack(ys, 1), y, atol=1e-12)
    for a, b in zip(state if isinstance(state, tuple) else (state,), s if isinstance(s, tuple) else (s,)):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_fast_step_equals_torch_cell_with_copied_weights(kind):
    """The fast path is ATen's own cell: bit-for-bit torch.nn.LSTMCell / GRUCell, stacked layers too."""
    layer = getattr(rnnkit, kind)(6, 9, num_layers=2).eval()
    cells = [getattr(torch.nn, kind + "Cell")(6 if k == 0 else 9, 9) for k in range(2)]
    for k, cell in enumerate(cells):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(layer, f"{name}_l{k}"))
    x = torch.randn(4, 6)
    st = layer.init_state(4)
    st = type(st)(*(torch.randn_like(p) for p in st)) if isinstance(st, tuple) else torch.randn_like(st)
    with torch.no_grad():
        y, new = layer.step(x, st)
        inp, want = x, []
        for k, cell in enumerate(cells):
            out = cell(inp, (st[0][k], st[1][k])) if kind == "LSTM" else cell(inp, st[k])
            want.append(out)
            inp = out[0] if kind == "LSTM" else out
    assert torch.equal(y, inp)
    if kind == "LSTM":
        assert torch.equal(new.h, torch.stack([w[0] for w in want])) and torch.equal(new.c, torch.stack([w[1] for w in want]))
    else:
        assert torch.equal(new, torch.stack(want))


def test_the_fast_step_follows_parameter_updates():
    layer = rnnkit.LSTM(3, 4).eval()
    x, st = torch.randn(2, 3), layer.init_state(2)
    with torch.no_grad():
        y1, _ = layer.step(x, st)
        layer.weight_hh_l0.add_(0.5)  # in place, as an optimizer step or load_state_dict does
        layer.bias_ih_l0.zero_()
        y2, _ = layer.step(x, st)
        y_full, _ = layer(x.unsqueeze(0), st)
    assert not torch.allclose(y1, y2) and torch.allclose(y2, y_full[0], atol=1e-6)


def test_what_the_fast_path_leaves_to_the_full_step():
    layer = rnnkit.LSTM(3, 4)
    x, st = torch.randn(2, 3), layer.init_state(2)
    assert fast_step.try_step(layer, x, st) is None  # gradients wanted
    with torch.no_grad():
        assert fast_step.try_step(layer, x, None) is None  # no state: full step makes zeros
        proj = rnnkit.LSTM(3, 4, proj_size=2)
        assert fast_step.try_step(proj, x, proj.init_state(2)) is None
        assert fast_step.try_step(rnnkit.LSTM(3, 4, layer_norm=True), x, st) is None
        assert fast_step.try_step(layer, x[0], st) is None  # unbatched
        assert fast_step.try_step(layer, torch.randn(2, 5), st) is None  # wrong size -> the full step's error
    y, s = layer.step(x, st)  # with autograd: the full step
    assert y.requires_grad
    with torch.no_grad(), pytest.raises(ValueError, match="expected x_t"):
        layer.step(torch.randn(2, 5), st)
