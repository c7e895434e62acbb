"""Acceptance 1: rnnkit's RNN/LSTM/GRU equal torch.nn's with copied weights, on every backend."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from tests.layers._util import KIND_IDS, TORCH_KINDS, as_tuple, assert_close_all, loss_of, pair

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
BACKENDS = ["auto", "cell", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tf"])
@pytest.mark.parametrize("kind,kw", TORCH_KINDS, ids=KIND_IDS)
def test_outputs_states_and_grads_equal_torch(kind, kw, batch_first, dtype, backend):
    tm, rm = pair(kind, kw, dtype, backend, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn((4, 7, 6) if batch_first else (7, 4, 6), dtype=dtype)
    h0 = tuple(torch.randn_like(s) for s in as_tuple(rm.init_state(4)))
    h0 = h0 if kind == "LSTM" else h0[0]
    yt, st = tm(x, h0)
    yr, sr = rm(x, h0)
    tol = TOL[dtype]
    assert yt.shape == yr.shape
    assert_close_all(yt, yr, tol)
    assert_close_all(st, sr, tol)
    loss_of(yt, st).backward()
    loss_of(yr, sr).backward()
    gt, gr = dict(tm.named_parameters()), dict(rm.named_parameters())
    assert list(gt) == list(gr)
    for name in gt:
        assert torch.allclose(gt[name].grad, gr[name].grad, atol=tol * 10, rtol=0), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind,kw", TORCH_KINDS, ids=KIND_IDS)
def test_lengths_equal_torch_packed_sequence(kind, kw, backend):
    tm, rm = pair(kind, kw, torch.float64, backend, num_layers=2, bidirectional=True, batch_first=True)
    lengths = torch.tensor([5, 8, 2, 8, 1])
    x = torch.randn(5, 8, 6, dtype=torch.float64)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    yp, sp = tm(packed)
    yp, _ = pad_packed_sequence(yp, batch_first=True, total_length=8)
    yr, sr = rm(x, lengths=lengths)
    assert_close_all(yp, yr, 1e-10)
    assert_close_all(sp, sr, 1e-10)
    loss_of(yp, sp).backward()
    loss_of(yr, sr).backward()
    for name, p in tm.named_parameters():
        assert torch.allclose(p.grad, getattr(rm, name).grad, atol=1e-9, rtol=0), name


@pytest.mark.parametrize("backend", ["auto", "cell"])
@pytest.mark.parametrize("kind,kw", TORCH_KINDS, ids=KIND_IDS)
def test_packed_sequence_in_and_out(kind, kw, backend):
    tm, rm = pair(kind, kw, torch.float64, backend, num_layers=2, bidirectional=True)
    lengths = torch.tensor([3, 6, 6, 1])
    x = torch.randn(6, 4, 6, dtype=torch.float64)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    h0 = tuple(torch.randn_like(s) for s in as_tuple(rm.init_state(4)))
    h0 = h0 if kind == "LSTM" else h0[0]
    yt, st = tm(packed, h0)
    yr, sr = rm(packed, h0)
    assert isinstance(yr, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(yr.batch_sizes, yt.batch_sizes) and torch.equal(yr.sorted_indices, yt.sorted_indices)
    assert_close_all(yt.data, yr.data, 1e-10)
    assert_close_all(st, sr, 1e-10)


def test_state_dict_keys_are_torchs():
    for kind, kw in [("LSTM", {"proj_size": 3}), ("GRU", {}), ("RNN", {"bias": False})]:
        tm = getattr(torch.nn, kind)(4, 6, num_layers=3, bidirectional=True, **kw)
        rm = getattr(rnnkit, kind)(4, 6, num_layers=3, bidirectional=True, **kw)
        assert list(tm.state_dict()) == list(rm.state_dict())
        assert all(a.shape == b.shape for a, b in zip(tm.state_dict().values(), rm.state_dict().values()))


def test_unbatched_input_equals_batch_of_one():
    tm, rm = pair("LSTM", {}, torch.float64, "cell", num_layers=2)
    x = torch.randn(7, 6, dtype=torch.float64)
    y, (h, c) = rm(x)
    yt, (ht, ct) = tm(x)
    assert y.shape == (7, 9) and h.shape == (2, 9)
    assert torch.allclose(y, yt, atol=1e-12) and torch.allclose(c, ct, atol=1e-12)


def test_training_dropout_between_layers_only_in_train_mode():
    rm = rnnkit.GRU(6, 9, num_layers=2, dropout=0.5, backend="cell").double()
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    rm.eval()
    assert torch.equal(rm(x)[0], rm(x)[0])
    rm.train()
    assert not torch.allclose(rm(x)[0], rm(x)[0])
