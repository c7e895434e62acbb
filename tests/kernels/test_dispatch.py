"""``backend="auto"`` picks the fast kernels, and a spy proves which one ran."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.kernels import dispatch, fused_gru, fused_indrnn, fused_lstm, fused_min

CASES = [
    (lambda: rnnkit.LSTM(4, 6, batch_first=True, layer_norm=True), "fused", fused_lstm, "lstm_sequence"),
    (lambda: rnnkit.LSTM(4, 6, batch_first=True, peephole=True), "fused", fused_lstm, "lstm_sequence"),
    (lambda: rnnkit.LSTM(4, 6, batch_first=True, zoneout=0.2).train(), "fused", fused_lstm, "lstm_sequence"),
    (lambda: rnnkit.GRU(4, 6, batch_first=True, layer_norm=True), "fused", fused_gru, "gru_sequence"),
    (lambda: rnnkit.GRU(4, 6, batch_first=True, recurrent_dropout=0.3).train(), "fused", fused_gru,
     "gru_sequence"),
    (lambda: rnnkit.GRU(4, 6, num_layers=2, batch_first=True, zoneout=0.2).train(), "fused", fused_gru,
     "gru_sequence"),
    (lambda: rnnkit.LSTM(4, 6, batch_first=True, recurrent_dropout=0.3).train(), "fused", fused_lstm,
     "lstm_sequence"),
    (lambda: rnnkit.IndRNN(4, 6, num_layers=2, batch_first=True), "fused", fused_indrnn, "indrnn_sequence"),
    (lambda: rnnkit.IndRNN(4, 6, batch_first=True, nonlinearity="tanh", zoneout=0.2, bidirectional=True), "fused",
     fused_indrnn, "indrnn_sequence"),
    (lambda: rnnkit.MinGRU(4, 6, batch_first=True), "scan", fused_min, "min_sequence"),
    (lambda: rnnkit.MinLSTM(4, 6, batch_first=True, bidirectional=True), "scan", fused_min, "min_sequence"),
]


@pytest.mark.parametrize("make,backend,module,fn", CASES, ids=range(len(CASES)))
def test_auto_picks_and_runs_the_fast_kernel(make, backend, module, fn, monkeypatch):
    layer = make()
    assert layer.select_backend() == backend
    calls = []
    original = getattr(module, fn)

    def spy(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)
    monkeypatch.setattr(module, fn, spy)
    y, _ = layer(torch.randn(3, 5, 4))
    y.sum().backward()
    assert len(calls) == layer.num_layers * layer.num_directions
    assert all(c is cell for c, cell in zip(calls, layer.cells()))


def test_plain_layers_stay_native_and_the_rest_on_the_cell():
    assert rnnkit.LSTM(4, 6).select_backend() == "native"
    assert rnnkit.GRU(4, 6, recurrent_dropout=0.1).eval().select_backend() == "native"
    assert rnnkit.GRU(4, 6, zoneout=0.1).eval().select_backend() == "fused"  # its expectation mix
    assert rnnkit.LSTM(4, 6, proj_size=2, zoneout=0.1).train().select_backend() == "cell"
    assert rnnkit.RNN(4, 6, zoneout=0.1).train().select_backend() == "cell"
    assert rnnkit.MinGRU(4, 6, zoneout=0.1).train().select_backend() == "cell"


def test_explicit_backends_and_their_errors():
    assert rnnkit.LSTM(4, 6, backend="fused").select_backend() == "fused"  # plain LSTM on the fused path
    assert rnnkit.MinGRU(4, 6, backend="cell").select_backend() == "cell"
    with pytest.raises(ValueError, match="fused"):
        rnnkit.RNN(4, 6, backend="fused").select_backend()
    with pytest.raises(ValueError, match="scan"):
        rnnkit.LSTM(4, 6, backend="scan").select_backend()
    with pytest.raises(ValueError, match="scan"):
        rnnkit.MinGRU(4, 6, zoneout=0.1, backend="scan").train().select_backend()
    assert dispatch.fused_supports(rnnkit.LSTM(4, 6, proj_size=2).cells()[0]) is False
