"""Gradient flow through time: the vanishing tanh RNN against the LSTM, exact values, and the protocol."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.analysis import (GradientFlow, compare_cells, diagnose_cells, diagnose_module, format_table,
                             gradient_flow, plot_gradient_flow)


def _scaled_rnn() -> rnnkit.RNN:
    rnn = rnnkit.RNN(8, 32, batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(0.5)
    return rnn


def test_tanh_rnn_vanishes_and_lstm_keeps_gradient():
    x = torch.randn(4, 100, 8)
    rnn = gradient_flow(_scaled_rnn(), x)
    assert tuple(rnn.grad_norms.shape) == (1, 100) and tuple(rnn.jacobian_norms.shape) == (1, 99)
    rr = rnn.ratio()
    assert rr < 1e-3
    for forget_bias in (0.0, 1.0):
        lstm = gradient_flow(rnnkit.LSTM(8, 32, batch_first=True, forget_bias=forget_bias), x)
        assert lstm.ratio() > 100 * rr, (forget_bias, lstm.ratio(), rr)
    # the bound ||dL/ds_1|| <= ||dL/ds_T|| * prod ||J_t|| holds
    bound = rnn.grad_norms[0, -1] * rnn.jacobian_norms[0].prod()
    assert rnn.grad_norms[0, 0] <= bound * (1 + 1e-9)


def _manual_rnn_grads(layer: rnnkit.RNN, x: torch.Tensor):
    """dL/dh_t and dh_t/dh_{t-1} by a hand-written loop with retain_grad."""
    W, U = layer.weight_ih_l0.double(), layer.weight_hh_l0.double()
    b_ih, b_hh = layer.bias_ih_l0.double(), layer.bias_hh_l0.double()
    h, hs = torch.zeros(x.shape[0], U.shape[0], dtype=torch.float64), []
    for t in range(x.shape[1]):
        h = torch.tanh((x[:, t].double() @ W.T + b_ih) + (h @ U.T + b_hh))
        h.retain_grad()
        hs.append(h)
    hs[-1].mean().backward()
    grads = torch.stack([h.grad.norm() for h in hs])
    jac = torch.stack([torch.linalg.matrix_norm((1 - hs[t] ** 2).unsqueeze(-1) * U, ord=2).mean()
                       for t in range(1, len(hs))])
    return grads, jac


def test_values_match_a_hand_written_loop():
    layer = rnnkit.RNN(3, 5, batch_first=True)
    x = torch.randn(2, 7, 3)
    flow = gradient_flow(layer, x)
    assert all(p.grad is None for p in layer.parameters())  # the module's .grad is untouched
    grads, jac = _manual_rnn_grads(layer, x)
    assert torch.allclose(flow.grad_norms[0], grads.detach(), rtol=1e-10, atol=0)
    assert torch.allclose(flow.jacobian_norms[0], jac.detach(), rtol=1e-8, atol=0)


def test_lstm_state_is_h_and_c():
    B, H = 3, 4
    flow = gradient_flow(rnnkit.LSTM(2, H, batch_first=True), torch.randn(B, 6, 2))
    # the loss is mean(h_T): dL/dh_T = 1/(B*H) everywhere and c_T has no future
    expected = (B * H) ** 0.5 / (B * H)
    assert flow.grad_norms[0, -1].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("make", [
    lambda: rnnkit.RNN(4, 6, num_layers=2), lambda: rnnkit.LSTM(4, 6, num_layers=2, proj_size=3),
    lambda: rnnkit.LSTM(4, 6, num_layers=2, layer_norm=True, peephole=False),
    lambda: rnnkit.LSTM(4, 6, peephole=True, num_layers=2), lambda: rnnkit.GRU(4, 6, num_layers=2, layer_norm=True),
    lambda: rnnkit.IndRNN(4, 6, num_layers=2), lambda: rnnkit.MinGRU(4, 6, num_layers=2),
    lambda: rnnkit.MinLSTM(4, 6, num_layers=2),
], ids=["rnn", "lstm_proj", "lstm_ln", "lstm_peephole", "gru_ln", "indrnn", "mingru", "minlstm"])
def test_every_layer_kind_time_major_and_stacked(make):
    flow = gradient_flow(make(), torch.randn(9, 2, 4))  # (T, B, F): batch_first=False
    assert tuple(flow.grad_norms.shape) == (2, 9) and tuple(flow.jacobian_norms.shape) == (2, 8)
    assert torch.isfinite(flow.grad_norms).all() and (flow.grad_norms[:, -1] > 0).all()
    assert torch.isfinite(flow.jacobian_norms).all() and (flow.jacobian_norms > 0).all()


class TinyModel(nn.Module):
    def __init__(self, protocol: bool = False):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.first = rnnkit.GRU(4, 8, batch_first=True)
        self.second = rnnkit.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 10)
        self.protocol = protocol

    def recurrent_layers(self):
        return [self.second] if self.protocol else [self.first, self.second]

    def forward(self, ids, targets=None):
        y, _ = self.second(self.first(self.embed(ids))[0])
        logits = self.head(y)
        return logits if targets is None else nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def test_models_protocol_and_loss_fn():
    ids = torch.randint(0, 10, (2, 12))
    flow = gradient_flow(TinyModel(), ids)
    assert flow.layer_names == ("first", "second") and tuple(flow.grad_norms.shape) == (2, 12)
    assert tuple(gradient_flow(TinyModel(protocol=True), ids).grad_norms.shape) == (1, 12)
    # a loss on every step: the model's own output, called with a tuple of arguments
    flow = gradient_flow(TinyModel(), (ids, ids), loss_fn=lambda loss: loss)
    assert flow.loss > 0 and (flow.grad_norms > 0).all()
    float32 = gradient_flow(TinyModel(), ids, dtype=None)
    assert float32.grad_norms.dtype == torch.float32


def test_tied_weights_in_float64():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.rnn, self.out = nn.Embedding(10, 8), rnnkit.GRU(8, 8, batch_first=True), nn.Linear(8, 10)
            self.out.weight = self.embed.weight

        def forward(self, ids):
            return self.out(self.rnn(self.embed(ids))[0])

    model, ids = Tied(), torch.randint(0, 10, (2, 6))
    flow = gradient_flow(model, ids, loss_fn=lambda logits: logits.logsumexp(-1).mean())
    assert flow.loss == pytest.approx(model(ids).logsumexp(-1).mean().item(), rel=1e-5)
    assert model.out.weight is model.embed.weight and model.embed.weight.dtype == torch.float32


def test_errors():
    with pytest.raises(ValueError, match="bidirectional"):
        gradient_flow(rnnkit.GRU(3, 4, bidirectional=True), torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="no rnnkit recurrent layer"):
        gradient_flow(nn.Linear(3, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="scalar"):
        gradient_flow(rnnkit.RNN(3, 4), torch.randn(5, 2, 3), loss_fn=lambda out: out[0])
    with pytest.raises(ValueError, match="unknown cell"):
        compare_cells("rnn,transformer")


def test_diagnose_cells_writes_png_and_rows(tmp_path):
    rows = diagnose_cells("rnn,lstm,mingru", 30, tmp_path / "flow.png", hidden_size=8, batch_size=2)
    assert (tmp_path / "flow.png").stat().st_size > 1000
    assert [r["model"] for r in rows] == ["rnn", "lstm", "mingru"]
    assert all(r["T"] == 30 and 0 <= r["horizon_1e3"] <= 29 and r["jacobian_mean"] > 0 for r in rows)
    assert "| rnn |" in format_table(rows)
    rows = diagnose_module(TinyModel(), torch.randint(0, 10, (2, 5)), tmp_path / "model.png")
    assert len(rows) == 2 and (tmp_path / "model.png").exists()


def test_plot_gradient_flow_handles_underflow():
    flow = GradientFlow(torch.tensor([[0.0, 1e-3, 1.0]]), torch.tensor([[0.5, 2.0]]), torch.ones(1, 3), 0.0, ("l",))
    fig = plot_gradient_flow(flow)
    assert len(fig.axes) == 2


def test_norms_keep_their_size_far_below_float64s_square_root_range():
    """Summing squares underflowed below ~1e-154: a ReLU RNN's dL/ds_1 at T=400 read exactly 0."""
    rows, flows = compare_cells("rnn_relu", 400, hidden_size=16, batch_size=2)
    g = flows["rnn_relu"].grad_norms[0]
    assert bool((g > 0).all()) and float(g[0]) < 1e-154 and 0 < flows["rnn_relu"].ratio() < 1e-150
    from rnnkit.analysis.gradients import _spectral_norm, scaled_norm
    x = torch.tensor([3e-200, 4e-200], dtype=torch.float64)
    assert float(scaled_norm(x)) == pytest.approx(5e-200) and float(scaled_norm(x * 1e300 * 1e90)) == pytest.approx(5e190)
    J = torch.randn(3, 6, 6, dtype=torch.float64)
    for scale in (1e-200, 1.0, 1e200):
        torch.testing.assert_close(_spectral_norm(J * scale), torch.linalg.matrix_norm(J * scale, ord=2))
    J[1, 0, 0], J[2, 1, 1] = float("nan"), float("inf")
    out = _spectral_norm(J)
    assert torch.isfinite(out[0]) and torch.isnan(out[1]) and torch.isinf(out[2])


def test_a_diverged_model_warns_instead_of_failing_in_eigh():
    layer = rnnkit.GRU(4, 8, batch_first=True)
    with torch.no_grad():
        layer.weight_hh_l0[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        flow = gradient_flow(layer, torch.randn(2, 10, 4))
    assert bool(torch.isnan(flow.jacobian_norms).any())


@pytest.mark.parametrize("make", [lambda: rnnkit.GRU(3, 6, zoneout=0.5, batch_first=True),
                                  lambda: rnnkit.LSTM(3, 6, zoneout=(0.2, 0.4), batch_first=True)])
def test_zoneout_layers_are_traced_as_they_compute_in_evaluation(make):
    """The trace and its Jacobians include zoneout's expectation lerp(new, old, p), as eval mode does."""
    from rnnkit.analysis import hidden_states
    torch.manual_seed(0)
    layer = make().eval().double()
    x = torch.randn(1, 6, 3, dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer(x)
    torch.testing.assert_close(hidden_states(layer, x), y[0])
    flow = gradient_flow(layer, x)
    # the last step's Jacobian, from the layer itself: s_5 -> s_6 with x_6 held fixed
    with torch.no_grad():
        _, s5 = layer(x[:, :5])
    lstm = isinstance(s5, tuple)
    flat = torch.cat([s5[0], s5[1]], -1).reshape(-1) if lstm else s5.reshape(-1)

    def one_step(s):
        h = s.view(1, 1, -1)
        state = (h[..., :6].contiguous(), h[..., 6:].contiguous()) if lstm else h
        _, new = layer(x[:, 5:], state)
        return torch.cat([new[0], new[1]], -1).reshape(-1) if lstm else new.reshape(-1)

    J = torch.autograd.functional.jacobian(one_step, flat)
    assert float(flow.jacobian_norms[0, -1]) == pytest.approx(float(torch.linalg.matrix_norm(J, ord=2)), rel=1e-9)
