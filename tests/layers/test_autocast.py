"""Under autocast: torch's kernels (``native``) follow autocast's dtype as torch.nn does; rnnkit's own
recurrences (fused, scan, cell, reference, and the streaming step) run in the weights' dtype with
autocast off. Before, the GRU cell refused the mix of dtypes (``lerp``), the C++ step refused a
bfloat16 state and one-step calls returned float32 where whole sequences returned bfloat16."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit

LAYERS = {
    "lstm": lambda **kw: rnnkit.LSTM(6, 8, num_layers=2, **kw),
    "lstm_proj": lambda **kw: rnnkit.LSTM(6, 8, num_layers=2, proj_size=3, **kw),
    "lstm_ln": lambda **kw: rnnkit.LSTM(6, 8, num_layers=2, layer_norm=True, **kw),
    "lstm_zoneout": lambda **kw: rnnkit.LSTM(6, 8, num_layers=2, zoneout=0.1, **kw),
    "gru": lambda **kw: rnnkit.GRU(6, 8, num_layers=2, **kw),
    "gru_zoneout": lambda **kw: rnnkit.GRU(6, 8, num_layers=2, zoneout=0.1, **kw),
    "rnn_zoneout": lambda **kw: rnnkit.RNN(6, 8, num_layers=2, zoneout=0.1, **kw),
    "indrnn": lambda **kw: rnnkit.IndRNN(6, 8, num_layers=2, **kw),
    "mingru": lambda **kw: rnnkit.MinGRU(6, 8, num_layers=2, **kw),
    "minlstm_zoneout": lambda **kw: rnnkit.MinLSTM(6, 8, num_layers=2, zoneout=0.1, **kw),
}
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _onednn_has_bf16_lstm() -> bool:
    """Whether torch.nn.LSTM runs under CPU bfloat16 autocast here (oneDNN has no bfloat16 LSTM on CPUs
    without AVX-512; rnnkit's layer then runs the kernel in float32, as its other backends do)."""
    try:
        with torch.autocast(**BF16):
            torch.nn.LSTM(2, 3)(torch.randn(4, 1, 2))
        return True
    except RuntimeError:
        return False


def test_a_cpu_without_a_bfloat16_lstm_runs_it_in_float32(monkeypatch):
    """On an AVX2 CPU torch.nn.LSTM fails under bfloat16 autocast ("could not create a primitive descriptor
    for the LSTM forward propagation primitive"), and so did rnnkit's LSTM and a trainer with amp="bf16".
    Here oneDNN's refusal is simulated, so the test runs on any CPU."""
    from rnnkit.kernels import native
    real = native.NATIVE_OPS["lstm"]

    def onednn(*args):
        if args[0].dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu"):
            raise RuntimeError("could not create a primitive descriptor for the LSTM forward propagation primitive")
        return real(*args)
    monkeypatch.setitem(native.NATIVE_OPS, "lstm", onednn)
    torch.manual_seed(0)
    layer = rnnkit.LSTM(6, 8, num_layers=2)
    x = torch.randn(5, 3, 6)
    want, want_state = layer(x)
    with torch.autocast(**BF16):
        got, got_state = layer(x)
        got_len, _ = layer(x.bfloat16(), lengths=torch.tensor([5, 2, 4]))
    assert got.dtype == torch.float32 and got_len.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    torch.testing.assert_close(tuple(got_state), tuple(want_state), atol=0, rtol=0)
    got.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    monkeypatch.setitem(native.NATIVE_OPS, "lstm", lambda *a: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="other"), torch.autocast(**BF16):
        layer(x)  # any other error is the caller's


def _parts(s):
    return tuple(s) if isinstance(s, tuple) else (s,)


@pytest.mark.parametrize("backend", ["auto", "cell"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_run_under_cpu_autocast(name, backend):
    torch.manual_seed(0)
    layer = LAYERS[name](backend=backend).eval()
    x = torch.randn(5, 3, 6)
    lengths = torch.tensor([5, 2, 4])
    want, want_h = layer(x)
    want_len, _ = layer(x, lengths=lengths)
    with torch.autocast(**BF16):
        got, got_h = layer(x)
        got_len, _ = layer(x.bfloat16(), lengths=lengths)  # a bfloat16 input, as an autocast Linear gives
        packed, _ = layer(pack_padded_sequence(x, [5, 4, 2]))
    if layer.select_backend() == "native":  # torch's kernels, in autocast's dtype as torch.nn's layers
        low = name != "gru" and (name == "lstm_proj" or _onednn_has_bf16_lstm())  # as torch.nn.GRU/LSTM
        assert got.dtype == (torch.bfloat16 if low else torch.float32)
        torch.testing.assert_close(got.float(), want, atol=0.05, rtol=0.05)
    else:  # rnnkit's own recurrences: the weights' dtype, autocast off, so the float32 result exactly
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=0, rtol=0)
        for a, b in zip(_parts(got_h), _parts(want_h)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(got_len.float(), want_len, atol=0.05, rtol=0.05)
    assert torch.isfinite(packed.data.float()).all()
    layer.train()
    with torch.autocast(**BF16):
        y, _ = layer(x)
    y.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("name", list(LAYERS))
def test_streaming_step_under_autocast_equals_the_float32_step(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().eval()
    x = torch.randn(4, 1, 6)
    with torch.no_grad():
        s_ref = s = None
        for t in range(4):
            want, s_ref = layer.step(x[t], s_ref)
            with torch.autocast(**BF16):
                got, s = layer.step(x[t], s)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want, atol=0, rtol=0)
        with torch.autocast(**BF16):  # a one-step forward with a state: as the sequence forward
            one, _ = layer(x[:1], s)
            seq, _ = layer(torch.cat([x[:1], x[:1]]), s)
        assert one.dtype == seq.dtype
