"""Chrono initialisation: the biases it sets, and that it lengthens the memory of the gradient."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.analysis import gradient_flow


def _keep(layer, name: str, H: int) -> torch.Tensor:
    """The fraction of the state each unit keeps per step at zero input, from the chrono biases."""
    b = getattr(layer, "bias_ih_l0") + getattr(layer, "bias_hh_l0", torch.zeros_like(layer.bias_ih_l0))
    if name == "lstm":  # i, f, g, o; the cell keeps f (and adds i * g)
        return torch.sigmoid(b[H:2 * H])
    if name == "gru":  # r, z, n; h = (1 - z) n + z h
        return torch.sigmoid(b[H:2 * H])
    if name == "mingru":  # z, h; h = (1 - z) h + z g
        return 1 - torch.sigmoid(b[:H])
    f, i = torch.sigmoid(b[:H]), torch.sigmoid(b[H:2 * H])  # minlstm: f' = f / (f + i)
    return f / (f + i)


@pytest.mark.parametrize("name, make", [
    ("lstm", lambda: rnnkit.LSTM(3, 64, num_layers=2, bidirectional=True)),
    ("lstm", lambda: rnnkit.LSTM(3, 64, layer_norm=True)),
    ("gru", lambda: rnnkit.GRU(3, 64)),
    ("gru", lambda: rnnkit.GRU(3, 64, layer_norm=True)),
    ("mingru", lambda: rnnkit.MinGRU(3, 64, num_layers=2)),
    ("minlstm", lambda: rnnkit.MinLSTM(3, 64)),
])
def test_time_scales_span_one_to_max(name, make):
    layer = make()
    weights = {k: v.clone() for k, v in layer.state_dict().items() if "weight" in k}
    assert rnnkit.chrono_init_(layer, 200, generator=torch.Generator().manual_seed(0)) is layer
    keep = _keep(layer, name, 64).detach()
    scales = 1 / (1 - keep)  # steps a unit remembers: 1 + u with u ~ U(1, T_max - 1)
    assert scales.min() >= 2 - 1e-4 and scales.max() <= 200 + 1e-3
    assert scales.max() > 100 and scales.min() < 50  # spread over the range, not one value
    if name in ("lstm", "minlstm"):  # the input gate opens as the keep gate closes
        H = 64
        b = layer.bias_ih_l0
        fi = (b[H:2 * H], b[:H]) if name == "lstm" else (b[:H], b[H:2 * H])
        assert torch.allclose(fi[0], -fi[1])
    for k, w in weights.items():  # weights are untouched
        assert torch.equal(layer.state_dict()[k], w)
    for cell in layer.cells()[1:]:  # every layer and direction is initialised
        assert not torch.equal(cell.bias_ih, layer.cells()[0].bias_ih)


def test_lstm_gradient_reaches_far_back_after_chrono():
    torch.manual_seed(0)
    x = torch.randn(4, 300, 4)
    plain = rnnkit.LSTM(4, 32, batch_first=True)
    chrono = rnnkit.chrono_init_(rnnkit.LSTM(4, 32, batch_first=True), 300)
    chrono.load_state_dict({k: v for k, v in plain.state_dict().items() if "weight" in k}, strict=False)
    ratio = [(g.grad_norms[0, 0] / g.grad_norms[0, -1]).item() for g in
             (gradient_flow(plain, x), gradient_flow(chrono, x))]
    assert ratio[1] > 1e6 * ratio[0], ratio  # same weights: only the gate biases differ


def test_chrono_inside_a_model_and_bad_input():
    lm = rnnkit.LanguageModel(rnnkit.LanguageModelConfig(vocab_size=20, hidden_size=16, num_layers=2))
    rnnkit.chrono_init_(lm, 50)
    with pytest.raises(TypeError, match="IndRNNCell has no keep gate"):
        rnnkit.chrono_init_(rnnkit.IndRNN(3, 4), 100)
    with pytest.raises(TypeError, match="ElmanRNNCell has no keep gate"):
        rnnkit.chrono_init_(rnnkit.RNN(3, 4), 100)
    with pytest.raises(TypeError, match="holds no rnnkit recurrence"):
        rnnkit.chrono_init_(torch.nn.Linear(3, 4), 100)
    with pytest.raises(ValueError, match="bias=True"):
        rnnkit.chrono_init_(rnnkit.LSTM(3, 4, bias=False), 100)
    for bad in (2, 0, -5, float("nan"), "100", True):
        with pytest.raises(ValueError, match="max_timescale must be a number of steps > 2"):
            rnnkit.chrono_init_(rnnkit.GRU(3, 4), bad)
