"""The streaming fast path: ``step`` under no_grad equals ``forward``, is the path that ran, and follows
parameter updates; anything it does not cover goes to the full ``step``."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch

import rnnkit
from rnnkit.cells.base import LSTMState
from rnnkit.kernels import _cpp
from rnnkit.kernels import step as fast_step

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                    reason="no C++ compiler on this machine: ATen's cell runs instead")
# (B, I, H, layers, bias) of the C++ step's tests: B=1..4, odd sizes, H=1, stacks, no bias
STEP_SHAPES = [(1, 64, 256, 1, True), (1, 3, 1, 1, True), (2, 5, 9, 2, False), (4, 7, 33, 3, True),
               (3, 1, 17, 1, False)]


@pytest.mark.parametrize("make", [lambda: rnnkit.LSTM(5, 8, num_layers=2, batch_first=True),
                                  lambda: rnnkit.GRU(5, 8, num_layers=2, batch_first=True),
                                  lambda: rnnkit.RNN(5, 8, batch_first=True, nonlinearity="relu")],
                         ids=["lstm", "gru", "rnn"])
def test_no_grad_steps_equal_forward_on_the_fast_path(make, monkeypatch):
    layer = make().double().eval()
    x = torch.randn(3, 10, 5, dtype=torch.float64)
    h0 = layer.init_state(3)
    h0 = type(h0)(*(torch.randn_like(p) for p in h0)) if isinstance(h0, tuple) else torch.randn_like(h0)
    y, s = layer(x, h0)
    hits = []
    original = fast_step.try_step
    monkeypatch.setattr("rnnkit.layers.recurrent.try_step", lambda *a, **k: hits.append(1) or original(*a, **k))
    with torch.no_grad():
        state, ys = h0, []
        for t in range(10):
            out = fast_step.try_step(layer, x[:, t], state)
            assert out is not None  # the fast path applies
            yt, state = layer.step(x[:, t], state)
            assert torch.equal(yt, out[0])
            ys.append(yt)
    assert len(hits) == 10
    assert torch.allclose(torch.stack(ys, 1), y, atol=1e-12)
    for a, b in zip(state if isinstance(state, tuple) else (state,), s if isinstance(s, tuple) else (s,)):
        assert torch.allclose(a, b, atol=1e-12)


def _layer_and_cells(kind, I, H, layers=2, bias=True, dtype=torch.float32):
    layer = getattr(rnnkit, kind)(I, H, num_layers=layers, bias=bias).to(dtype).eval()
    cells = [getattr(torch.nn, kind + "Cell")(I if k == 0 else H, H, bias=bias).to(dtype) for k in range(layers)]
    for k, cell in enumerate(cells):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if bias else ("weight_ih", "weight_hh"):
            getattr(cell, name).data.copy_(getattr(layer, f"{name}_l{k}"))
    return layer, cells


def _cells_step(kind, cells, x, st):
    inp, want = x, []
    for k, cell in enumerate(cells):
        out = cell(inp, (st[0][k], st[1][k])) if kind == "LSTM" else cell(inp, st[k])
        want.append(out)
        inp = out[0] if kind == "LSTM" else out
    if kind == "LSTM":
        return inp, (torch.stack([w[0] for w in want]), torch.stack([w[1] for w in want]))
    return inp, (torch.stack(want),)


def _random_state(layer, B, dtype=torch.float32):
    st = layer.init_state(B)
    return type(st)(*(torch.randn_like(p) for p in st)) if isinstance(st, tuple) else torch.randn_like(st)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_without_the_cpp_step_the_fast_step_is_torch_cell_bit_for_bit(kind, monkeypatch):
    """ATen's own cell (no C++ step: RNNKIT_CPP=0, no compiler, or a batch over 4): bit for bit
    torch.nn.LSTMCell / GRUCell, stacked layers too."""
    monkeypatch.setattr(fast_step, "_step_module", None)
    layer, cells = _layer_and_cells(kind, 6, 9)
    x = torch.randn(4, 6)
    st = _random_state(layer, 4)
    with torch.no_grad():
        y, new = layer.step(x, st)
        want_y, want = _cells_step(kind, cells, x, st)
    assert torch.equal(y, want_y)
    for a, b in zip(new if isinstance(new, tuple) else (new,), want):
        assert torch.equal(a, b)


class _Recorder:
    """Stands in for the C++ step module, counting the calls and their results."""

    def __init__(self, real) -> None:
        self.real, self.calls = real, []

    def __getattr__(self, name):
        def call(*args):
            out = getattr(self.real, name)(*args)
            self.calls.append((name, out is not None))
            return out
        return call


@pytest.fixture(params=["avx2", "avx512"])
def cpp_step(request, monkeypatch):
    """The C++ step module behind a recorder, with the AVX2 or the AVX-512 gate sums (the latter skipped
    where the CPU has no AVX-512F); the load-time choice is restored after."""
    monkeypatch.setenv("RNNKIT_CPP", "1")
    mod = _cpp.module()
    chosen_on_load = mod.wide()
    if mod.set_wide(request.param == "avx512") != (request.param == "avx512"):
        mod.set_wide(chosen_on_load)
        pytest.skip("this CPU has no AVX-512F")
    rec = _Recorder(mod)
    monkeypatch.setattr(fast_step, "_step_module", rec)
    yield rec
    mod.set_wide(chosen_on_load)


@needs_compiler
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("shape", STEP_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_the_cpp_step_equals_torch_cell_with_copied_weights(kind, shape, dtype, cpp_step):
    """B=1..4, odd sizes, H=1, stacks, no bias: within float rounding of ATen's cell (the sums run in
    another order), and it is the C++ step that ran."""
    B, I, H, layers, bias = shape
    torch.manual_seed(0)
    layer, cells = _layer_and_cells(kind, I, H, layers, bias, dtype)
    x = torch.randn(B, I, dtype=dtype)
    st = _random_state(layer, B)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    with torch.no_grad():
        for _ in range(3):  # carried state
            y, new = layer.step(x, st)
            want_y, want = _cells_step(kind, cells, x, st)
            torch.testing.assert_close(y, want_y, atol=tol, rtol=0)
            for a, b in zip(new if isinstance(new, tuple) else (new,), want):
                assert a.shape == b.shape and a.dtype == dtype
                torch.testing.assert_close(a, b, atol=tol, rtol=0)
            st = new
    assert cpp_step.calls == [(kind.lower() + "_step", True)] * 3
    assert y.shape == (B, H) and torch.equal(y, (new[0] if kind == "LSTM" else new)[-1])


@needs_compiler
def test_what_the_cpp_step_leaves_to_torch_cell(cpp_step):
    """A batch over 4, half precision, a non-contiguous input, or autograd wanted: None from C++, and the
    step still equals the cell."""
    layer, cells = _layer_and_cells("LSTM", 6, 9, layers=1)
    with torch.no_grad():
        for x, st in [(torch.randn(5, 6), _random_state(layer, 5)),
                      (torch.randn(6, 2).t(), _random_state(layer, 2))]:
            y, _ = layer.step(x, st)
            assert torch.equal(y, _cells_step("LSTM", cells, x, st)[0])
        half = rnnkit.LSTM(6, 9).to(torch.bfloat16).eval()
        st = half.init_state(1)
        half.step(torch.randn(1, 6, dtype=torch.bfloat16), st)
    x, st = torch.randn(1, 6), _random_state(layer, 1)
    y, _ = layer.step(x, st)  # gradients wanted: the C++ step says None, the full step runs
    assert y.requires_grad
    assert cpp_step.calls == [("lstm_step", False)] * 4
    mod = _cpp.module()
    w = (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
    assert mod.lstm_step(x, st[0], st[1], w, True, LSTMState) is None  # autograd would be needed
    with torch.no_grad():
        assert mod.lstm_step(x, st[0], st[1], w, True, LSTMState) is not None
        assert mod.lstm_step(torch.randn(1, 5), st[0], st[1], w, True, LSTMState) is None  # wrong input size
        assert mod.lstm_step(x, st[0][:, :, :4], st[1], w, True, LSTMState) is None  # wrong state
        assert mod.lstm_step(x, st[0], st[1], w[:3], True, LSTMState) is None  # weights do not fit
        assert mod.gru_step(x, st[0], w, True) is None  # LSTM weights are not a GRU's
        assert mod.lstm_step(x.tolist(), st[0], st[1], w, True, LSTMState) is None  # not a tensor
        assert mod.lstm_step(x, st[0], st[1], list(w), True, LSTMState) is None  # weights: a tuple
        assert mod.lstm_step(x, st[0], st[1], w, True, dict) is None  # the state's type: a tuple subclass
        assert mod.lstm_step(x, st[0], st[1], w, True, "LSTMState") is None
    with torch.no_grad(), pytest.raises(ValueError, match="expected x_t"):
        layer.step(x.tolist(), st)  # the full step's error


@needs_compiler
def test_the_cpp_step_runs_with_threads_and_follows_updates(cpp_step):
    """H=256 splits its units over torch's threads (2 here); in-place updates are seen at once."""
    torch.manual_seed(1)
    layer, cells = _layer_and_cells("LSTM", 64, 256, layers=1)
    x, st = torch.randn(1, 64), _random_state(layer, 1)
    with torch.no_grad():
        y1, _ = layer.step(x, st)
        layer.weight_hh_l0.mul_(-1)
        cells[0].weight_hh.mul_(-1)
        y2, _ = layer.step(x, st)
        torch.testing.assert_close(y2, _cells_step("LSTM", cells, x, st)[0], atol=1e-6, rtol=0)
    assert not torch.allclose(y1, y2)


def _layer_norm_layer(kind, I, H, layers=1, bias=True, dtype=torch.float32, **kw):
    """A layer-normalised layer with its gains away from 1 and nonzero biases (as after training)."""
    layer = getattr(rnnkit, kind)(I, H, num_layers=layers, bias=bias, layer_norm=True, **kw).to(dtype).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


def _cells_recurrence(layer, x, st):
    """One step by the cells' own equations (rnnkit.cells.layernorm), layer by layer."""
    inp, parts = x, []
    for k, cell in enumerate(layer.cells()):
        new = cell.recurrence(cell.project_input(inp), LSTMState(st[0][k], st[1][k]) if isinstance(st, tuple)
                              else st[k])
        parts.append(new if isinstance(new, tuple) else (new,))
        inp = parts[-1][0]
    return inp, tuple(torch.stack(p) for p in zip(*parts))


@needs_compiler
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("shape", STEP_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_the_layer_norm_cpp_step_equals_the_cells(kind, shape, dtype, cpp_step):
    """The layer-normalised LSTM and GRU: B=1..4, odd sizes, H=1, stacks, no bias, both gate-sum loops;
    within float rounding of the cells' equations, state carried, and it is the C++ step that ran."""
    B, I, H, layers, bias = shape
    torch.manual_seed(0)
    layer = _layer_norm_layer(kind, I, H, layers, bias, dtype)
    x, st = torch.randn(B, I, dtype=dtype), _random_state(layer, B)
    tol = 1e-5 if dtype == torch.float32 else 1e-12  # the norms amplify the sums' rounding (~1e-6 seen)
    with torch.no_grad():
        for _ in range(3):
            y, new = layer.step(x, st)
            want_y, want = _cells_recurrence(layer, x, st)
            torch.testing.assert_close(y, want_y, atol=tol, rtol=0)
            for a, b in zip(new if isinstance(new, tuple) else (new,), want):
                assert a.shape == b.shape and a.dtype == dtype
                torch.testing.assert_close(a, b, atol=tol, rtol=0)
            st = new
    assert cpp_step.calls == [("ln_" + kind.lower() + "_step", True)] * 3
    assert isinstance(new, LSTMState) == (kind == "LSTM")


@needs_compiler
@pytest.mark.parametrize("kind, options", [("LSTM", {}), ("GRU", {}), ("LSTM", {"layer_norm": True}),
                                           ("GRU", {"layer_norm": True})], ids=["lstm", "gru", "ln-lstm", "ln-gru"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "time-first"])
def test_a_one_step_forward_without_autograd_is_the_cpp_step(kind, options, batch_first, cpp_step):
    """Generation feeds one token at a time: ``forward`` on a length-1 sequence under no_grad runs the C++
    step (the fused kernels' per-call cost is ~0.5 ms a layer at T=1) and equals the full forward."""
    torch.manual_seed(0)
    layer = getattr(rnnkit, kind)(5, 8, num_layers=2, batch_first=batch_first, **options).eval()
    x = torch.randn(3, 1, 5) if batch_first else torch.randn(1, 3, 5)
    st = _random_state(layer, 3)
    want_y, want_s = layer(x, st)  # autograd on: the full forward
    assert cpp_step.calls == []
    with torch.no_grad():
        y, s = layer(x, st)
    name = ("ln_" if options else "") + kind.lower() + "_step"
    assert cpp_step.calls == [(name, True)]
    assert y.shape == want_y.shape and type(s) is type(want_s)
    torch.testing.assert_close(y, want_y.detach(), atol=1e-5, rtol=0)
    for a, b in zip(s if isinstance(s, tuple) else (s,), want_s if isinstance(want_s, tuple) else (want_s,)):
        torch.testing.assert_close(a, b.detach(), atol=1e-5, rtol=0)
    with torch.no_grad():  # not one step, no state, lengths, a batch over 4: the full forward
        layer(torch.cat([x, x], 1 if batch_first else 0), st)
        layer(x)
        layer(x, st, lengths=torch.ones(3, dtype=torch.long))
        big = torch.randn(5, 1, 5) if batch_first else torch.randn(1, 5, 5)
        layer(big, _random_state(layer, 5))
    assert cpp_step.calls == [(name, True), (name, False)]


@needs_compiler
@pytest.mark.parametrize("kind, options", [("LSTM", {"zoneout": 0.2}), ("LSTM", {"zoneout": (0.1, 0.6)}),
                                           ("GRU", {"zoneout": 0.3}),
                                           ("LSTM", {"zoneout": (0.3, 0.7), "layer_norm": True}),
                                           ("GRU", {"zoneout": 0.6, "layer_norm": True})],
                         ids=["lstm", "lstm-h-c", "gru", "ln-lstm", "ln-gru"])
def test_zoneout_in_evaluation_mode_is_mixed_in_the_cpp_step(kind, options, cpp_step):
    """A layer trained with zoneout, in evaluation mode: each layer's new state is mixed with its old one
    at the rates (zoneout's expectation) inside the C++ step, before the next layer reads h; equal to the
    full step and to the full forward (the fused kernels' expectation). In training: the full step."""
    torch.manual_seed(0)
    layer = getattr(rnnkit, kind)(5, 8, num_layers=2, batch_first=True, **options).eval()
    x, st = torch.randn(3, 5), _random_state(layer, 3)
    name = ("ln_" if options.get("layer_norm") else "") + kind.lower() + "_step"
    with torch.no_grad():
        y, new = layer.step(x, st)
        y1, new1 = layer(x.unsqueeze(1), st)
        saved = fast_step._step_module
        fast_step._step_module = None  # the full step: the cells and zoneout_state(expected=True)
        try:
            want_y, want = layer.step(x, st)
        finally:
            fast_step._step_module = saved
        assert cpp_step.calls == [(name, True)] * 2
        layer.train()
        layer.step(x, st)  # fresh masks: not the C++ step
        assert len(cpp_step.calls) == 2
    torch.testing.assert_close(y, want_y, atol=1e-5, rtol=0)
    torch.testing.assert_close(y1[:, 0], want_y, atol=1e-5, rtol=0)
    for a, b, c in zip(new if isinstance(new, tuple) else (new,), want if isinstance(want, tuple) else (want,),
                       new1 if isinstance(new1, tuple) else (new1,)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        torch.testing.assert_close(c, b, atol=1e-5, rtol=0)
    full_y, _ = layer.eval()(x.unsqueeze(1), st)  # with gradients: the fused kernels' expectation
    torch.testing.assert_close(full_y[:, 0].detach(), want_y, atol=1e-5, rtol=0)


def test_a_traced_or_compiled_one_step_forward_is_the_full_forward():
    """Under torch.jit.trace, torch.export or torch.compile the C++ step is left out: a trace would keep its result as
    a constant. The traced or compiled layer follows a new state. (A plain LSTM: the fused kernels, which
    a layer-normalised one runs instead, are neither traceable nor one graph.)"""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(5, 8, batch_first=True).eval()
    x, st, other = torch.randn(1, 1, 5), _random_state(layer, 1), _random_state(layer, 1)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x, h, c):
            return self.layer(x, (h, c))[0]

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the shape checks become constants
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace: deprecated, still in use
        want = layer(x, other)[0]
        traced = torch.jit.trace(Wrap(), (x, *st), check_trace=False)
        torch.testing.assert_close(traced(x, *other), want, atol=1e-5, rtol=0)
        exported = torch.export.export(Wrap(), (x, *st)).module()
        torch.testing.assert_close(exported(x, *other), want, atol=1e-5, rtol=0)
        compiled = torch.compile(Wrap(), backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x, *other), want, atol=1e-5, rtol=0)


def test_the_fast_step_follows_parameter_updates():
    layer = rnnkit.LSTM(3, 4).eval()
    x, st = torch.randn(2, 3), layer.init_state(2)
    with torch.no_grad():
        y1, _ = layer.step(x, st)
        layer.weight_hh_l0.add_(0.5)  # in place, as an optimizer step or load_state_dict does
        layer.bias_ih_l0.zero_()
        y2, _ = layer.step(x, st)
        y_full, _ = layer(x.unsqueeze(0), st)
    assert not torch.allclose(y1, y2) and torch.allclose(y2, y_full[0], atol=1e-6)


def test_what_the_fast_path_leaves_to_the_full_step():
    layer = rnnkit.LSTM(3, 4)
    x, st = torch.randn(2, 3), layer.init_state(2)
    assert fast_step.try_step(layer, x, st) is None  # gradients wanted
    with torch.no_grad():
        assert fast_step.try_step(layer, x, None) is None  # no state: full step makes zeros
        proj = rnnkit.LSTM(3, 4, proj_size=2)
        assert fast_step.try_step(proj, x, proj.init_state(2)) is None
        assert fast_step.try_step(rnnkit.LSTM(3, 4, peephole=True), x, st) is None
        assert fast_step.try_step(rnnkit.LSTM(3, 4, layer_norm=True, zoneout=0.1).train(), x, st) is None
        assert fast_step.try_step(layer, x[0], st) is None  # unbatched
        assert fast_step.try_step(layer, torch.randn(2, 5), st) is None  # wrong size -> the full step's error
    y, s = layer.step(x, st)  # with autograd: the full step
    assert y.requires_grad
    with torch.no_grad(), pytest.raises(ValueError, match="expected x_t"):
        layer.step(torch.randn(2, 5), st)


def test_a_layer_pickled_without_the_step_weights_getter_still_steps():
    import pickle

    layer = rnnkit.LSTM(3, 4).eval()
    for key in ("_step_weights", "weight_drop", "_dropped"):  # as pickled by an rnnkit from before them
        del layer.__dict__[key]
    again = pickle.loads(pickle.dumps(layer))
    x, st = torch.randn(2, 3), layer.init_state(2)
    with torch.no_grad():
        y, _ = again.step(x, st)
        want, _ = again(x.unsqueeze(0), st)
    torch.testing.assert_close(y, want[0], atol=1e-6, rtol=0)


@needs_compiler
def test_the_avx512_gate_sums_follow_torchs_cpu_capability(monkeypatch):
    """On load the step uses the AVX-512 gate sums exactly where torch itself uses AVX-512, so
    ATEN_CPU_CAPABILITY=avx2 turns both off (checked in a fresh process)."""
    import subprocess
    import sys

    monkeypatch.setenv("RNNKIT_CPP", "1")
    assert _cpp.module().wide() == (torch.backends.cpu.get_cpu_capability() == "AVX512")
    code = ("import torch; from rnnkit.kernels import _cpp; "
            "print(torch.backends.cpu.get_cpu_capability(), _cpp.module().wide())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "RNNKIT_CPP": "1"}).stdout.split()
    assert out[0] != "AVX512" and out[1] == "False"
