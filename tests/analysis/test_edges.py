"""The analysis tools on the edges users reach: nested start states, packed input, NaN gradients, an
exploding recurrence in the figure, and one-line errors for the usual mistakes."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.analysis import (GradientFlow, diagnose_cells, diagnose_module, format_table, gradient_flow,
                             hidden_states, pca, plot_gradient_flow, plot_unit_activations)
from rnnkit.cells.base import LSTMState
from rnnkit.errors import ConfigError


# -- start states in float64 -------------------------------------------------------------------
def test_nested_start_states_are_cast_with_the_inputs():
    """Only top-level tensors were cast: a start state (a tuple, an LSTMState, a model's state) stayed
    float32 and the layer refused it ('expected hx of dtype torch.float64 like the input')."""
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(4, 3, batch_first=True)
    x = torch.randn(2, 6, 4)
    h0 = torch.randn(1, 2, 3), torch.randn(1, 2, 3)
    reference = gradient_flow(lstm, (x, h0), dtype=None).ratio()
    for inputs in [(x, h0), [x, LSTMState(*h0)], {"input": x, "hx": h0}, OrderedDict(input=x, hx=list(h0))]:
        flow = gradient_flow(lstm, inputs)
        assert flow.grad_norms.dtype == torch.float64
        assert flow.ratio() == pytest.approx(reference, rel=1e-4)
    assert diagnose_module(lstm, (x, h0), None)[0]["T"] == 6
    # a language model continuing from a previous chunk's state (LMState of LSTMStates)
    from rnnkit.models import LanguageModel, LanguageModelConfig
    lm = LanguageModel(LanguageModelConfig(vocab_size=12, embedding_size=4, hidden_size=6, cell="lstm",
                                           num_layers=2)).eval()
    ids = torch.randint(0, 12, (2, 5))
    state = lm(ids).state
    flow = gradient_flow(lm, (ids, None, state))
    assert tuple(flow.grad_norms.shape) == (2, 5) and bool((flow.grad_norms > 0).all())
    assert all(t.dtype == torch.float32 for s in state.layers for t in s)  # the caller's state is not changed


def test_cast_keeps_the_containers_types():
    from rnnkit.analysis._trace import _cast
    t = torch.ones(2)
    out = _cast({"a": (t, [t, LSTMState(t, t)]), "n": torch.arange(2)}, torch.float64)
    assert type(out["a"]) is tuple and type(out["a"][1]) is list and type(out["a"][1][1]) is LSTMState
    assert out["a"][1][1].c.dtype == torch.float64 and out["n"].dtype == torch.int64
    assert type(_cast(OrderedDict(a=t), torch.float64)) is OrderedDict


# -- packed input ------------------------------------------------------------------------------
def test_packed_input_and_lengths_are_refused_before_the_forward():
    """A PackedSequence (a NamedTuple) was unpacked as four positional arguments, or ran into the layer's
    dtype check: a confusing TypeError instead of the documented ValueError."""
    gru = rnnkit.GRU(4, 3, batch_first=True)
    x = torch.randn(2, 10, 4)
    packed = pack_padded_sequence(x, torch.tensor([10, 6]), batch_first=True)
    for call in (lambda: gradient_flow(gru, packed), lambda: hidden_states(gru, packed),
                 lambda: gradient_flow(gru, (packed,)), lambda: gradient_flow(gru, (packed,), dtype=None)):
        with pytest.raises(ValueError, match="trace full-length batches; got a PackedSequence"):
            call()
    with pytest.raises(ValueError, match="got lengths="):
        gradient_flow(gru, {"input": x, "lengths": torch.tensor([10, 6])})


# -- diverged networks -------------------------------------------------------------------------
class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = rnnkit.LSTM(4, 8, batch_first=True), nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def test_nan_gradients_read_nan_not_inf():
    """A NaN in the head made every gradient NaN; ratio() said inf (the value for a zero last gradient)
    and horizon_1e3 said -1."""
    torch.manual_seed(0)
    net = _Head()
    with torch.no_grad():
        net.head.weight[0, 0] = math.nan
    with pytest.warns(RuntimeWarning, match="non-finite"):
        rows = diagnose_module(net, torch.randn(2, 8, 4), None, loss_fn=lambda y: y[:, -1].mean())
    assert math.isnan(rows[0]["ratio_first_last"]) and rows[0]["horizon_1e3"] is None
    assert rows[0]["log10_ratio"] is None and "| nan | - |" in format_table(rows, ("ratio_first_last", "horizon_1e3"))
    by_hand = GradientFlow(torch.tensor([[math.nan, 1.0], [1.0, math.nan], [1.0, 0.0]]), torch.zeros(3, 1),
                           torch.ones(3, 2), 0.0, ("a", "b", "c"))
    assert math.isnan(by_hand.ratio(0)) and math.isnan(by_hand.ratio(1)) and by_hand.ratio(2) == math.inf


# -- the figure --------------------------------------------------------------------------------
def _flow(grads, jac, names=("l",), custom=False) -> GradientFlow:
    grads, jac = torch.tensor(grads, dtype=torch.float64), torch.tensor(jac, dtype=torch.float64)
    return GradientFlow(grads, jac, torch.ones_like(grads), 0.0, names, custom)


def test_plot_of_an_exploding_gradient_shows_its_range(tmp_path):
    """Norms up to 4.8e307: matplotlib's autoscale overflowed (a warning) and the left panel showed y in
    (1, 10), empty; its log ticks past 1e308 then failed to draw."""
    grads = [[math.inf, 4.8e307, 1e200, 1e50, 0.0, 0.25]]
    flow = _flow(grads, [[60.0, 55.0, 50.0, 45.0, 40.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_gradient_flow({"relu": flow}, tmp_path / "explode.png")
    left, right = fig.axes[:2]
    low, high = left.get_ylim()
    assert low <= 0.25 and 4.8e307 <= high <= torch.finfo(torch.float64).max
    assert left.get_xlim() == (1, 6) and right.get_xlim() == (1, 6)
    assert right.get_ylim()[0] <= 1.0 and right.get_ylim()[1] >= 60.0  # the 1.0 line and every norm
    # a mild explosion keeps matplotlib's own ticks, inside the same kind of limits
    mild = plot_gradient_flow(_flow([[1e26, 1e10, 0.25]], [[5.0, 5.0]]), tmp_path / "mild.png").axes[0].get_ylim()
    assert mild[0] <= 0.25 and 1e26 <= mild[1] < 1e30


def test_plot_marks_a_single_step_and_colours_each_layer(tmp_path):
    one = plot_gradient_flow(_flow([[0.5]], [[]]), tmp_path / "t1.png")
    line = one.axes[0].lines[0]
    assert len(line.get_xdata()) == 1 and line.get_marker() == "o"
    stack = _flow([[1.0, 2.0]] * 3, [[1.0]] * 3, names=("L[0]", "L[1]", "L[2]"))
    fig = plot_gradient_flow({"a": stack, "b": _flow([[1.0, 3.0]], [[2.0]])})
    colours = [line.get_color() for line in fig.axes[0].lines]
    assert len(colours) == 4 and len(set(colours)) == 4
    assert "loss at the last step" in fig.axes[0].get_title()
    custom = plot_gradient_flow(_flow([[1.0, 2.0]], [[1.0]], custom=True))
    assert "last step" not in custom.axes[0].get_title()
    assert gradient_flow(rnnkit.GRU(2, 3), torch.randn(4, 1, 2), loss_fn=lambda o: o[0].sum()).custom_loss
    assert not gradient_flow(rnnkit.GRU(2, 3), torch.randn(4, 1, 2)).custom_loss


def test_an_unsupported_figure_suffix_is_refused_before_the_work(tmp_path, monkeypatch):
    from rnnkit.analysis import diagnose

    def no_work(*args, **kwargs):
        raise AssertionError("the analysis ran before the output path was checked")

    monkeypatch.setattr(diagnose, "compare_cells", no_work)
    monkeypatch.setattr(diagnose, "gradient_flow", no_work)
    with pytest.raises(ConfigError, match=r"cannot write '\.xyz' files"):
        diagnose_cells("rnn", 10, tmp_path / "flow.xyz")
    with pytest.raises(ConfigError, match=r"cannot write '\.xyz' files"):
        diagnose_module(rnnkit.GRU(2, 3), torch.randn(4, 2, 2), tmp_path / "flow.xyz")


# -- one-line errors ---------------------------------------------------------------------------
def test_usual_mistakes_get_clear_errors():
    gru, x = rnnkit.GRU(4, 3, batch_first=True), torch.randn(2, 5, 4)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        gradient_flow(gru, x)
    for dtype in (torch.float16, torch.int64):
        with pytest.raises(ValueError, match="dtype must be torch.float64"):
            gradient_flow(gru, x, dtype=dtype)
    with pytest.raises(TypeError, match="GradientFlow or a non-empty dict of them, got list"):
        plot_gradient_flow([gradient_flow(gru, x)])
    with pytest.raises(ValueError, match=r"unit must be in \[0, 5\)"):
        plot_unit_activations("abc", torch.randn(3, 5), 9)
    with pytest.raises(TypeError, match=r"rnnkit\.load\(path\)"):
        diagnose_module("runs/lm/bundle", torch.zeros(1, 3, dtype=torch.long), None)

    class TorchInside(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 3, batch_first=True)

        def recurrent_layers(self):
            return [self.rnn]

    with pytest.raises(ValueError, match=r"recurrent_layers\(\) must return rnnkit recurrent layers, got \['GRU'\]"):
        gradient_flow(TorchInside(), x)
    with pytest.raises(ValueError, match="pca: the states hold NaN or inf"):
        pca(torch.full((5, 3), math.nan))
