"""Layers that run C++ kernels (fused layer norm / peephole / zoneout, the MinGRU scan) under
torch.export and torch.jit.trace: the capture records the cells' own loop, the exported or traced module
equals the reference on new data, and nothing of the capture leaks into later eager calls (export once
left fake tensors in the fused kernels' buffer pool, and the next real calls wrote into them)."""

from __future__ import annotations

import warnings

import pytest
import torch

import rnnkit
from rnnkit.kernels._fused_common import Scratch

CASES = [(rnnkit.LSTM, dict(layer_norm=True)), (rnnkit.GRU, dict(layer_norm=True)),
         (rnnkit.LSTM, dict(peephole=True)), (rnnkit.LSTM, dict(zoneout=0.2)), (rnnkit.MinGRU, {})]


def _pair(cls, kw):
    torch.manual_seed(0)
    layer = cls(3, 4, **kw)
    ref = cls(3, 4, backend="reference", **kw)
    ref.load_state_dict(layer.state_dict())
    return layer, ref


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("cls,kw", CASES, ids=lambda c: getattr(c, "__name__", str(c)))
def test_export_records_the_cells_and_leaves_eager_calls_alone(cls, kw, grad):
    layer, ref = _pair(cls, kw)
    x, new = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    layer.eval(), ref.eval()
    with torch.set_grad_enabled(grad):
        exported = torch.export.export(layer, (x,)).module()
    assert all(type(b) is torch.Tensor for bufs in Scratch._pool.values() for b in bufs)
    with torch.no_grad():
        torch.testing.assert_close(exported(new)[0], ref(new)[0], atol=1e-5, rtol=0)
    layer.train(), ref.train()
    torch.manual_seed(1)
    got = layer(new)[0]  # eager, the fused kernels again
    torch.manual_seed(1)
    torch.testing.assert_close(got, ref(new)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls,kw", CASES, ids=lambda c: getattr(c, "__name__", str(c)))
def test_trace_records_the_cells(cls, kw):
    layer, ref = _pair(cls, kw)
    layer.eval(), ref.eval()
    x, new = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning: the shape checks become constants
        traced = torch.jit.trace(layer, (x,), check_trace=False)
    with torch.no_grad():
        torch.testing.assert_close(traced(new)[0], ref(new)[0], atol=1e-5, rtol=0)


def test_a_training_export_draws_zoneout_masks_with_torch():
    layer = rnnkit.LSTM(3, 4, zoneout=0.2).train()
    out = torch.export.export(layer, (torch.randn(5, 2, 3),)).module()(torch.randn(5, 2, 3))[0]
    assert out.shape == (5, 2, 4) and torch.isfinite(out).all()


def test_an_explicit_fused_backend_refuses_a_capture_in_one_line():
    layer = rnnkit.LSTM(3, 4, layer_norm=True, backend="fused").eval()
    with pytest.raises(Exception, match="backend='fused' runs C\\+\\+ kernels, which torch.jit.trace, torch.export"):
        torch.export.export(layer, (torch.randn(5, 2, 3),))


def test_jit_script_is_refused_in_one_line():
    """TorchScript failed on the layers' annotations ('Unknown type annotation: int'), deep in its parser."""
    from rnnkit.errors import ConfigError
    for module in (rnnkit.LSTM(3, 4), torch.nn.Sequential(rnnkit.MinGRU(3, 4))):
        with pytest.raises(ConfigError, match="torch.jit.script does not support rnnkit layers"):
            torch.jit.script(module)


def test_torch_compile_keeps_the_fused_kernels():
    """Dynamo answers functorch's interpreter-stack query with an object of its own: compile passed for
    a torch.func transform, an explicit fused backend refused it and auto ran the unrolled cells."""
    from rnnkit.kernels._capture import capturing
    torch.manual_seed(0)
    seen = []
    layer = rnnkit.LSTM(3, 4, layer_norm=True, backend="fused")
    compiled = torch.compile(lambda x: (seen.append(capturing(x)), layer(x))[1][0], backend="eager")
    x = torch.randn(6, 2, 3)
    torch.testing.assert_close(compiled(x), layer(x)[0], rtol=0, atol=0)
    assert seen and not any(seen)
