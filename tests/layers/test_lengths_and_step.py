"""Acceptance 4 and 5: step T times equals forward; bidirectional with lengths equals each sequence
run alone."""

from __future__ import annotations

import pytest
import torch

import rnnkit

LAYERS = {
    "rnn": lambda: rnnkit.RNN(5, 8, num_layers=2, batch_first=True),
    "lstm": lambda: rnnkit.LSTM(5, 8, num_layers=2, batch_first=True),
    "lstm_proj": lambda: rnnkit.LSTM(5, 8, num_layers=2, batch_first=True, proj_size=3),
    "lstm_peephole": lambda: rnnkit.LSTM(5, 8, num_layers=2, batch_first=True, peephole=True),
    "lstm_ln": lambda: rnnkit.LSTM(5, 8, num_layers=2, batch_first=True, layer_norm=True),
    "gru": lambda: rnnkit.GRU(5, 8, num_layers=2, batch_first=True),
    "gru_ln": lambda: rnnkit.GRU(5, 8, num_layers=2, batch_first=True, layer_norm=True),
    "indrnn": lambda: rnnkit.IndRNN(5, 8, num_layers=2, batch_first=True),
    "mingru": lambda: rnnkit.MinGRU(5, 8, num_layers=2, batch_first=True),
    "minlstm": lambda: rnnkit.MinLSTM(5, 8, num_layers=2, batch_first=True),
}


def _parts(s):
    return tuple(s) if isinstance(s, tuple) else (s,)


@pytest.mark.parametrize("name", list(LAYERS))
def test_step_T_times_equals_forward(name):
    layer = LAYERS[name]().double().eval()
    x = torch.randn(3, 10, 5, dtype=torch.float64)
    h0 = tuple(torch.randn_like(p) for p in _parts(layer.init_state(3)))
    h0 = rnnkit.LSTMState(*h0) if len(h0) == 2 else h0[0]
    y, s = layer(x, h0)
    state, ys = h0, []
    for t in range(10):
        yt, state = layer.step(x[:, t], state)
        ys.append(yt)
    assert torch.allclose(torch.stack(ys, 1), y, atol=1e-10)
    for a, b in zip(_parts(state), _parts(s)):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("name", list(LAYERS))
def test_bidirectional_lengths_equal_each_sequence_alone(name):
    factory = LAYERS[name]
    torch.manual_seed(3)
    uni = factory()
    kind = type(uni)
    kwargs = {k: getattr(uni, k) for k in ("proj_size", "layer_norm", "peephole") if getattr(uni, k, False)}
    layer = kind(5, 8, num_layers=2, batch_first=True, bidirectional=True, **kwargs).double().eval()
    lengths = torch.tensor([6, 2, 9, 1])
    x = torch.randn(4, 9, 5, dtype=torch.float64)
    x_padded = x.clone()
    for b, n in enumerate(lengths.tolist()):
        x_padded[b, n:] = 99.0  # garbage in the padding must not leak
    y, s = layer(x_padded, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        yb, sb = layer(x[b:b + 1, :n])
        assert torch.allclose(y[b, :n], yb[0], atol=1e-10)
        assert torch.count_nonzero(y[b, n:]) == 0
        for a, c in zip(_parts(s), _parts(sb)):
            assert torch.allclose(a[:, b], c[:, 0], atol=1e-10)


def test_step_on_bidirectional_is_a_clear_error():
    layer = rnnkit.LSTM(5, 8, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(torch.randn(2, 5), None)


def test_step_is_exact_across_calls_for_streaming():
    layer = rnnkit.GRU(5, 8, batch_first=True).eval()
    x = torch.randn(1, 30, 5)
    y_full, _ = layer(x)
    y_a, s = layer(x[:, :17])
    y_b, _ = layer(x[:, 17:], s)
    assert torch.allclose(torch.cat([y_a, y_b], 1), y_full, atol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_an_empty_sequence_returns_the_initial_state_on_every_backend(name):
    """T=0: torch's kernels raise 'Expected sequence length to be larger than 0', which the native
    backend passed on while every other backend returned the initial state."""
    torch.manual_seed(0)
    layer = LAYERS[name]().eval()
    h0 = layer.init_state(3)
    h0 = type(h0)(*(torch.randn_like(p) for p in h0)) if isinstance(h0, tuple) else torch.randn_like(h0)
    x = torch.randn(3, 0, 5)
    for backend in ("auto", "cell", "reference"):
        layer.backend = backend
        y, hn = layer(x, h0)
        assert y.shape == (3, 0, layer.proj_size or 8)
        for got, want in zip(_parts(hn), _parts(h0)):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", ["cell", "reference", "auto"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "MinGRU", "RNN"])
def test_padding_stays_zero_after_a_nan_state(kind, backend):
    """Outputs past a length are zero (documented); the loop and the scan masked them by multiplying,
    and NaN * 0 is NaN: a sequence whose state went NaN had NaN padding on some backends only."""
    torch.manual_seed(0)
    x = torch.randn(9, 3, 5, dtype=torch.float64)
    x[3, 1, 2] = float("nan")
    layer = getattr(rnnkit, kind)(5, 7, backend=backend).double()
    y, _ = layer(x, lengths=torch.tensor([9, 6, 2]))
    assert torch.equal(y[6:, 1], torch.zeros_like(y[6:, 1])) and y[4:6, 1].isnan().all()
