"""The fused and scan backends through the layers: torch.nn equivalence for plain LSTM/GRU, both
directions of bidirectional layers with lengths, stacking, and zoneout/recurrent dropout under a seed."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from tests.kernels._util import assert_close, random_gains, values_and_grads
from tests.layers._util import as_tuple, assert_close_all, loss_of, pair

LAYERS = {
    "lstm_ln": lambda **kw: rnnkit.LSTM(5, 7, layer_norm=True, **kw),
    "lstm_peephole": lambda **kw: rnnkit.LSTM(5, 7, peephole=True, **kw),
    "gru_ln": lambda **kw: rnnkit.GRU(5, 7, layer_norm=True, **kw),
    "mingru": lambda **kw: rnnkit.MinGRU(5, 7, **kw),
    "minlstm": lambda **kw: rnnkit.MinLSTM(5, 7, **kw),
}


def _twins(name, dtype, **kw):
    fast = LAYERS[name](**kw).to(dtype)
    if dtype == torch.float64:
        random_gains(fast)  # float32 keeps torch's init (random gains make layer norm ill-conditioned)
    ref = LAYERS[name](backend="reference", **kw).to(dtype)
    ref.load_state_dict(fast.state_dict())
    return fast, ref


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_bidirectional_stacked_with_lengths_equals_reference(name, dtype, tol):
    fast, ref = _twins(name, dtype, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(4, 9, 5, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([6, 9, 1, 3])
    h0 = fast.init_state(4)
    h0 = type(h0)(*(torch.randn_like(p) for p in h0)) if isinstance(h0, tuple) else torch.randn_like(h0)
    out = [values_and_grads(lambda: m(x, h0, lengths=lengths), [x], list(m.parameters())) for m in (fast, ref)]
    assert fast.select_backend() in ("fused", "scan")
    assert_close(out[0][0], out[1][0], tol)
    assert_close(out[0][1], out[1][1], tol)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_plain_fused_equals_torch(kind, batch_first):
    tm, rm = pair(kind, {}, torch.float64, "fused", num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn((4, 7, 6) if batch_first else (7, 4, 6), dtype=torch.float64)
    h0 = tuple(torch.randn_like(s) for s in as_tuple(rm.init_state(4)))
    h0 = h0 if kind == "LSTM" else h0[0]
    (yt, st), (yr, sr) = tm(x, h0), rm(x, h0)
    assert_close_all(yt, yr, 1e-10)
    assert_close_all(st, sr, 1e-10)
    assert yr.is_contiguous()
    loss_of(yt, st).backward()
    loss_of(yr, sr).backward()
    for n, p in tm.named_parameters():
        assert torch.allclose(p.grad, getattr(rm, n).grad, atol=1e-9, rtol=0), n


@pytest.mark.parametrize("kind,option", [("LSTM", "zoneout"), ("GRU", "zoneout"), ("LSTM", "recurrent_dropout"),
                                         ("GRU", "recurrent_dropout")])
def test_regularisers_in_training_equal_reference_under_a_seed(kind, option):
    fast = getattr(rnnkit, kind)(4, 6, num_layers=2, batch_first=True, **{option: 0.4}).double().train()
    ref = getattr(rnnkit, kind)(4, 6, num_layers=2, batch_first=True, backend="reference",
                                **{option: 0.4}).double().train()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(3, 8, 4, dtype=torch.float64)
    torch.manual_seed(5)
    y1, s1 = fast(x, lengths=torch.tensor([8, 3, 5]))
    torch.manual_seed(5)
    y2, s2 = ref(x, lengths=torch.tensor([8, 3, 5]))
    assert fast.select_backend() == "fused"
    assert_close_all(y1, y2, 1e-10)
    assert_close_all(s1, s2, 1e-10)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "IndRNN"])
@pytest.mark.parametrize("lengths", [None, [8, 8, 8]])
def test_dropout_between_layers_draws_the_references_mask_under_a_seed(kind, lengths):
    # F.dropout fills its mask in memory order: the fused path's output was a transposed view of its
    # (T, B, H) buffer, so the same seed dropped other units than the reference's contiguous output
    extra = {} if kind == "IndRNN" else {"layer_norm": True}
    fast = getattr(rnnkit, kind)(4, 6, num_layers=3, batch_first=True, dropout=0.4, **extra).double().train()
    ref = getattr(rnnkit, kind)(4, 6, num_layers=3, batch_first=True, dropout=0.4, backend="reference",
                                **extra).double().train()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(3, 8, 4, dtype=torch.float64)
    lengths = None if lengths is None else torch.tensor(lengths)
    torch.manual_seed(5)
    y1, s1 = fast(x, lengths=lengths)
    torch.manual_seed(5)
    y2, s2 = ref(x, lengths=lengths)
    assert fast.select_backend() == "fused"
    assert_close_all(y1, y2, 1e-10)
    assert_close_all(s1, s2, 1e-10)


@pytest.mark.parametrize("name", ["lstm_ln", "gru_ln"])
@pytest.mark.parametrize("cpp", ["0", "auto"])
def test_scratch_buffers_return_to_the_pool_when_the_graph_is_freed(name, cpp, monkeypatch):
    """Without the garbage collector: a reference cycle through the saved output (fixed 2026-12-02) kept
    every call's buffers until a gc pass, so each training step faulted in fresh ones."""
    import gc

    from rnnkit.kernels._fused_common import Scratch
    monkeypatch.setenv("RNNKIT_CPP", cpp)
    monkeypatch.setattr(Scratch, "_pool", type(Scratch._pool)())
    monkeypatch.setattr(Scratch, "_bytes", 0)
    layer = LAYERS[name](batch_first=True)
    T, B, G = 9, 3, (4 if name == "lstm_ln" else 3) * 7
    gc.disable()
    try:
        y, _ = layer(torch.randn(B, T, 5))
        y.sum().backward()
        key = ((T, B, G), torch.float32, torch.device("cpu"))
        assert key not in Scratch._pool  # in use while the graph is alive
        del y, _
        assert len(Scratch._pool.get(key, [])) >= 1
    finally:
        gc.enable()


@pytest.mark.parametrize("name", list(LAYERS))
def test_training_after_an_evaluation_under_inference_mode(name, monkeypatch):
    """What the kernels keep across calls (the gate permutation cache, the scratch pool) must not be
    inference tensors: a training step after ``torch.inference_mode()`` used to fail to save them."""
    from rnnkit.kernels import _fused_common as fc
    monkeypatch.setattr(fc.Scratch, "_pool", type(fc.Scratch._pool)())
    monkeypatch.setattr(fc.Scratch, "_bytes", 0)
    fc._perm.cache_clear()  # so that the evaluation below is the first call that fills it
    layer = LAYERS[name](batch_first=True)
    x = torch.randn(3, 10, 5)
    with torch.inference_mode():
        y_eval, _ = layer(x)
    y, _ = layer(x)
    y.sum().backward()
    assert torch.allclose(y.detach(), y_eval) and all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("make", [lambda **kw: rnnkit.LSTM(5, 7, layer_norm=True, **kw),
                                  lambda **kw: rnnkit.LSTM(5, 7, peephole=True, **kw),
                                  lambda **kw: rnnkit.LSTM(5, 7, zoneout=0.1, **kw),
                                  lambda **kw: rnnkit.GRU(5, 7, layer_norm=True, **kw),
                                  lambda **kw: rnnkit.GRU(5, 7, zoneout=0.1, **kw)])
@pytest.mark.parametrize("lengths", [[10, 30], [0, 0]])
def test_the_input_gradient_past_the_longest_sequence_is_zero(make, lengths):
    """Whole chunks of steps past the longest sequence run no backward: their rows of dx were left as
    the buffer's memory (garbage, NaN, up to 3e38), which a layer in front (an embedding, a Linear)
    then trained on."""
    torch.manual_seed(0)
    fast, ref = make(batch_first=True).eval(), make(batch_first=True, backend="reference").eval()
    ref.load_state_dict(fast.state_dict())
    assert fast.select_backend() == "fused"
    for _ in range(3):  # freed buffers full of NaN for the backward's allocations to reuse
        torch.full((2, 200, 5), float("nan")).sum()
        x = torch.randn(2, 200, 5, requires_grad=True)
        grads = []
        for layer in (fast, ref):
            x.grad = None
            y, _ = layer(x, lengths=torch.tensor(lengths))
            y.pow(2).sum().backward() if y.requires_grad else None
            grads.append(torch.zeros_like(x) if x.grad is None else x.grad.clone())
        assert torch.isfinite(grads[0]).all()
        assert grads[0][:, max(lengths):].abs().max() == 0
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)
