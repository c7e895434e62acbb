"""torch's native kernels get a ``train`` flag that cuDNN needs for a backward, whatever the layer's mode.

torch's one ``train`` argument means both "dropout between layers" and, on cuDNN, "keep what the backward
needs": with ``train=False`` cuDNN refuses the backward ("cudnn RNN backward can only be called in
training mode"). rnnkit passed ``False`` for every variable-length call and for layers in evaluation
mode, so on a GPU a training step with ``lengths=`` (and any gradient through an evaluation-mode layer,
as the analysis tools take) failed. No GPU here: the tests record what the kernels are given, with the
GPU's rule switched on for CPU tensors (``gpu_rule``), and check that the CPU keeps the layer's mode
(oneDNN's training primitive differs: bfloat16 autocast inference failed with ``train=True``)."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.kernels import native


@pytest.fixture
def gpu_rule(monkeypatch):
    monkeypatch.setattr(native, "_backward_needs_train", lambda x: True)


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def spy(real):
        def call(*args):
            # padded: (x, hx, weights, has_bias, num_layers, dropout, train, bidirectional, batch_first);
            # packed: (data, batch_sizes, hx, weights, has_bias, num_layers, dropout, train, bidirectional)
            packed = len(args) == 9 and isinstance(args[1], torch.Tensor) and args[1].dtype == torch.int64
            dropout, train = args[6:8] if packed else args[5:7]
            seen.append((dropout, train))
            return real(*args)
        return call

    for mode in list(native.NATIVE_OPS):
        monkeypatch.setitem(native.NATIVE_OPS, mode, spy(native.NATIVE_OPS[mode]))
    return seen


def test_lengths_in_training_ask_for_a_backward(calls, gpu_rule):
    layer = rnnkit.LSTM(3, 4, batch_first=True, bidirectional=True)
    y, _ = layer(torch.randn(3, 6, 3), lengths=torch.tensor([6, 2, 4]))
    y.sum().backward()
    assert calls and all(train for _, train in calls)


@pytest.mark.parametrize("cls", [rnnkit.LSTM, rnnkit.GRU, rnnkit.RNN])
def test_evaluation_mode_with_gradients_keeps_its_mode_without_dropout(calls, gpu_rule, cls):
    torch.manual_seed(0)
    layer = cls(3, 4, num_layers=2, dropout=0.5, batch_first=True).eval()
    x = torch.randn(2, 5, 3)
    y1, _ = layer(x)
    y2, _ = layer(x)
    assert torch.equal(y1, y2)  # no dropout in evaluation mode
    with torch.no_grad():
        assert torch.allclose(layer(x)[0], y1, atol=1e-6)  # (oneDNN's inference kernel may round differently)
    y1.sum().backward()
    assert calls == [(0.0, True), (0.0, True), (0.0, False)]


def test_training_keeps_its_dropout_and_inference_needs_no_backward(calls, gpu_rule):
    layer = rnnkit.GRU(3, 4, num_layers=2, dropout=0.25, batch_first=True)
    layer(torch.randn(2, 5, 3))
    for p in layer.parameters():
        p.requires_grad_(False)
    layer.eval()(torch.randn(2, 5, 3))  # frozen weights, an input without gradient: nothing to differentiate
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(2, 5, 3), [5, 3], batch_first=True)
    layer.eval()(packed)
    assert calls == [(0.25, True), (0.0, False), (0.0, False)]


def test_the_cpu_kernels_keep_the_layers_mode(calls):
    layer = rnnkit.LSTM(3, 4, num_layers=2, dropout=0.5, batch_first=True)
    x = torch.randn(2, 5, 3)
    layer(x, lengths=torch.tensor([5, 2]))
    layer.eval()(x)[0].sum().backward()
    assert len(calls) > 2 and set(calls[:-1]) == {(0.0, False)}  # one call per layer and distinct length
    assert calls[-1] == (0.5, False)  # torch ignores the dropout outside training


def test_a_projected_lstm_does_not_print_torchs_onednn_note():
    # torch warns once a process that oneDNN has no LSTMP kernel; every `rnnkit generate/complete/evaluate`
    # of a tied language model (hidden wider than the embedding: a projected last layer) printed it
    import subprocess
    import sys
    code = ("import torch, rnnkit\n"
            "m = rnnkit.LSTM(4, 8, proj_size=3)\n"
            "x = torch.randn(5, 2, 4)\n"
            "m(x)[0].sum().backward()\n"
            "m(x, lengths=torch.tensor([5, 2]))\n"
            "print(m.select_backend())\n")
    run = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "native" and "oneDNN" not in run.stderr, run.stderr
