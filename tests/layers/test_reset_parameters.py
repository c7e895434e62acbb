"""``reset_parameters`` as torch.nn's layers have it: every parameter drawn again as the constructor did,
in place, so that with the same seed a layer equals a newly built one (an optimizer keeps its params)."""

from __future__ import annotations

import pickle

import pytest
import torch

import rnnkit

LAYERS = {
    "lstm": lambda: rnnkit.LSTM(4, 5, num_layers=2, bidirectional=True),
    "lstm_proj": lambda: rnnkit.LSTM(4, 5, proj_size=3),
    "lstm_peephole": lambda: rnnkit.LSTM(4, 5, peephole=True),
    "lstm_ln": lambda: rnnkit.LSTM(4, 5, num_layers=2, layer_norm=True, forget_bias=1.0),
    "gru_ln": lambda: rnnkit.GRU(4, 5, layer_norm=True, bias=False),
    "rnn_relu": lambda: rnnkit.RNN(4, 5, nonlinearity="relu"),
    "indrnn": lambda: rnnkit.IndRNN(4, 5, recurrent_max=0.5),
    "mingru": lambda: rnnkit.MinGRU(4, 5, num_layers=2),
    "minlstm": lambda: rnnkit.MinLSTM(4, 5, bidirectional=True),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_reset_draws_what_a_new_layer_draws(name):
    torch.manual_seed(3)
    want = LAYERS[name]()
    layer = LAYERS[name]()
    params = list(layer.parameters())
    with torch.no_grad():
        for p in params:
            p.fill_(7.0)  # trained, copied or re-initialised weights
    x = torch.randn(2, 6, 4)
    layer(x)  # any cached prepared weights must not survive the reset
    torch.manual_seed(3)
    layer.reset_parameters()
    assert [p is q for p, q in zip(layer.parameters(), params)] == [True] * len(params)
    for (n, p), (m, q) in zip(layer.named_parameters(), want.named_parameters()):
        assert n == m and torch.equal(p, q), n
    torch.testing.assert_close(layer(x)[0], want(x)[0], atol=0, rtol=0)


def test_reset_after_pickling_and_on_a_float64_layer():
    torch.manual_seed(0)
    layer = pickle.loads(pickle.dumps(rnnkit.LSTM(3, 4, layer_norm=True).double()))
    with torch.no_grad():
        layer.cells()[0].weight_hh.zero_()
    layer.reset_parameters()
    w = layer.cells()[0].weight_hh
    assert w.dtype == torch.float64 and w.abs().max() > 0 and w.abs().max() <= 4 ** -0.5
