"""Bad input: a ValueError/TypeError saying what was expected and what came."""

from __future__ import annotations

import pytest
import torch

import rnnkit


@pytest.fixture
def lstm():
    return rnnkit.LSTM(8, 16, num_layers=2, batch_first=True)


def test_wrong_rank(lstm):
    with pytest.raises(ValueError, match=r"3-D input \(batch, seq, features\).*4-D"):
        lstm(torch.randn(2, 3, 4, 8))


def test_wrong_feature_size(lstm):
    with pytest.raises(ValueError, match=r"8 features.*got 9"):
        lstm(torch.randn(2, 5, 9))


def test_wrong_dtype(lstm):
    with pytest.raises(ValueError, match="float32.*float64"):
        lstm(torch.randn(2, 5, 8, dtype=torch.float64))


@pytest.mark.parametrize("make", [lambda: rnnkit.LSTM(3, 4), lambda: rnnkit.GRU(3, 4),
                                  lambda: rnnkit.LSTM(3, 4, layer_norm=True), lambda: rnnkit.GRU(3, 4, layer_norm=True)],
                         ids=["lstm", "gru", "ln-lstm", "ln-gru"])
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_wrong_dtype_of_a_step_or_a_state_names_it(make, grad):
    """Not torch's 'mat1 and mat2 must have the same dtype' from deep inside, nor the C++ step's."""
    layer = make()
    lstm = isinstance(layer, rnnkit.LSTM)
    h64 = torch.zeros(1, 2, 4, dtype=torch.float64)
    state = (h64, h64) if lstm else h64
    with torch.set_grad_enabled(grad):
        with pytest.raises(ValueError, match=r"step: x_t dtype must be torch.float32 like the weights, got torch.float64"):
            layer.step(torch.randn(2, 3, dtype=torch.float64))
        for x in (torch.randn(5, 2, 3), torch.randn(1, 2, 3)):  # T=1: the one-step path
            with pytest.raises(ValueError, match=r"expected hx of dtype torch.float32 like the input, got torch.float64"):
                layer(x, state)
        with pytest.raises(ValueError, match=r"expected hx of dtype torch.float32"):
            layer.step(torch.randn(2, 3), state)


def test_not_a_tensor(lstm):
    with pytest.raises(TypeError, match="list"):
        lstm([[1.0] * 8])


@pytest.mark.parametrize("lengths,match", [
    (torch.tensor([5, 6]), r"\[0, 5\].*6"),
    (torch.tensor([5]), r"shape \(2,\).*\(1,\)"),
    (torch.tensor([5.0, 2.0]), "integers"),
    (torch.tensor([-1, 2]), r"\[0, 5\]"),
    ("5,2", "tensor or list"),
])
def test_bad_lengths(lstm, lengths, match):
    with pytest.raises((ValueError, TypeError), match=match):
        lstm(torch.randn(2, 5, 8), lengths=lengths)


def test_empty_lengths_for_an_empty_batch(lstm):
    assert lstm(torch.randn(0, 5, 8), lengths=[])[0].shape == (0, 5, 16)


def test_bad_state_shape(lstm):
    with pytest.raises(ValueError, match=r"\(2, 3, 16\).*\(2, 3, 15\)"):
        lstm(torch.randn(3, 5, 8), (torch.zeros(2, 3, 15), torch.zeros(2, 3, 16)))


def test_bad_state_type(lstm):
    with pytest.raises(TypeError, match=r"pair \(h_0, c_0\)"):
        lstm(torch.randn(3, 5, 8), torch.zeros(2, 3, 16))
    gru = rnnkit.GRU(8, 16)
    with pytest.raises(TypeError, match="single tensor"):
        gru(torch.randn(5, 3, 8), (torch.zeros(1, 3, 16), torch.zeros(1, 3, 16)))


@pytest.mark.parametrize("make,match", [
    (lambda: rnnkit.LSTM(8, 16, layer_norm=True, proj_size=4), "layer_norm"),
    (lambda: rnnkit.LSTM(8, 16, dropout=1.5), r"dropout must be a number in \[0, 1\)"),
    (lambda: rnnkit.GRU(8, 16, zoneout=-0.1), "zoneout"),
    (lambda: rnnkit.GRU(8, 16, backend="fast"), "backend must be one of"),
    (lambda: rnnkit.RNN(8, 16, nonlinearity="sigmoid"), "nonlinearity"),
    (lambda: rnnkit.GRU(8, 16, num_layers=0), "num_layers"),
    (lambda: rnnkit.LSTM(8, 16, proj_size=16), "proj_size"),
    (lambda: rnnkit.GRU(8, 0), "hidden_size"),
])
def test_bad_options(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_step_bad_input(lstm):
    with pytest.raises(ValueError, match=r"\(batch, 8\).*\(2, 7\)"):
        lstm.step(torch.randn(2, 7))


def test_lengths_with_packed_sequence_is_refused(lstm):
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(2, 3, 8), [3, 2], batch_first=True)
    with pytest.raises(ValueError, match="not both"):
        lstm(packed, lengths=torch.tensor([3, 2]))


def test_devices_and_init_state_sizes_are_checked_by_the_layer():
    """A state or input on another device gave torch's errors without the layer's name; init_state(-1)
    a raw torch error. (The meta device stands in for a GPU here.)"""
    layer = rnnkit.LSTM(3, 4)
    with pytest.raises(ValueError, match="LSTM: input on meta, the weights on cpu"):
        layer(torch.randn(5, 2, 3, device="meta"))
    with pytest.raises(ValueError, match="LSTM: expected hx on cpu like the input, got meta"):
        layer(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4, device="meta"), torch.zeros(1, 2, 4)))
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="init_state: batch_size must be an int >= 0"):
            layer.init_state(bad)


def test_a_backend_refusal_says_what_the_backend_covers():
    with pytest.raises(ValueError, match=r"backend='fused' covers LSTM .*no proj_size.*not this layer's"):
        rnnkit.LSTM(3, 4, proj_size=2, backend="fused")(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="backend='scan' covers MinGRU and MinLSTM"):
        rnnkit.GRU(3, 4, backend="scan")(torch.randn(5, 2, 3))


def test_a_backend_that_cannot_cover_the_layer_is_refused_at_construction():
    """The refusal came only at the first forward call, far from the line that chose the backend."""
    with pytest.raises(ValueError, match="backend='fused' covers"):
        rnnkit.LSTM(3, 4, proj_size=2, backend="fused")
    with pytest.raises(ValueError, match="backend='native' .* covers plain RNN, LSTM .* and GRU"):
        rnnkit.LSTM(3, 4, layer_norm=True, backend="native")
    with pytest.raises(ValueError, match="backend='native' .*zoneout"):
        rnnkit.GRU(3, 4, zoneout=0.1, backend="native")
    # recurrent dropout acts in training only: the layer may still run natively in evaluation
    layer = rnnkit.LSTM(3, 4, recurrent_dropout=0.2, backend="native").eval()
    assert layer.select_backend() == "native"
    with pytest.raises(ValueError, match="recurrent dropout in training"):
        layer.train()(torch.randn(5, 2, 3))
