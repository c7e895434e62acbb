r"""Fast one-step inference (streaming, generation) for LSTM, GRU and RNN layers without autograd, plain
or layer-normalised.

``Recurrent.step`` validates its input, loops over its cells and stacks the new state: ~100 small ops
for a 1-layer LSTM. When nothing needs a gradient (``torch.no_grad()``, or no parameter requires one)
and no regulariser draws masks (evaluation mode, or none configured), :func:`try_step` runs the whole
stack in one call; zoneout's expectation in evaluation mode (each layer's new state mixed with its old
one at the rates before the next layer reads ``h``) is part of the C++ step. ``Recurrent.forward`` on a one-step sequence with a state under ``no_grad`` (what generation
does for every token) takes the C++ step too: torch's LSTM kernel costs ~0.1-0.4 ms at T=1, B=1 and the
fused kernels ~0.5 ms a layer, against ~0.02 ms here.

* layer-normalised LSTM and GRU (``layer_norm=True``) at batch <= 4, float32/float64 on the CPU: the
  C++ step's ``ln_lstm_step`` / ``ln_gru_step``: both sides' sums in one parallel region over the
  gate rows, then per batch row the two norms, the gates and (LSTM) the cell's norm; within float
  rounding of the cells' equations (:mod:`rnnkit.cells.layernorm`; ~1e-6 in float32, the norms amplify
  the sums' rounding), ~0.15x their eager time at B=1, I=64, H=256. Otherwise the full ``step``.
* plain LSTM and GRU at batch <= 4, float32/float64 on the CPU: the C++ step of
  :mod:`rnnkit.kernels._cpp` (``csrc/step.cpp``; built on the first such step of a machine, ~15 s):
  one parallel region per layer, the gate sums formed from the weight rows as they are (AVX-512 where
  torch uses it on this CPU, else AVX2), then the gates in one vectorised pass. Equal to
  ``torch.nn.LSTMCell`` within float rounding (the sums run in another order; ~1e-7 in float32),
  ~0.3x its time at B=1, I=64, H=256 on the project's Xeon VMs (docs/performance.md). The output
  ``y`` is a copy of the last layer's new ``h``, not a view of it.
* otherwise for plain layers (larger batches, the Elman RNN, no C++ compiler, ``RNNKIT_CPP=0``; in
  ``step`` only, a one-step ``forward`` keeps torch's kernels): ATen's own cell per layer,
  ``torch._VF.lstm_cell`` / ``gru_cell`` / ``rnn_*_cell`` (what ``torch.nn.LSTMCell`` and friends call),
  bit for bit ``torch.nn.LSTMCell`` with the same weights.

Both use the layer's parameters as they are, so parameter updates are seen at once (there is no copy
of the weights to keep in sync). Whether the C++ step is used is decided on the first fast step of
the process (``RNNKIT_CPP`` is read then; reading the environment on each ~10 us step would cost 3%).

An earlier version cached ``[W_ih | W_hh]^T`` and ran one ``addmm`` plus 6 pointwise ops in Python: on
the AMD VM of docs/performance.md that was 1.05x an ``LSTMCell`` call; on the Xeon VM it was 82 us
against 49 us for ``_VF.lstm_cell`` (each Python-level op costs more than the fused C++ cell saves).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells.base import LSTMState, zoneout_rates
from rnnkit.cells.layernorm import EPS, LayerNormLSTMCell
from rnnkit.kernels import _cpp
from rnnkit.kernels._capture import capturing

__all__ = ["try_step"]

_UNSET = object()
_step_module = _UNSET

_CELLS = {"lstm": torch._VF.lstm_cell, "gru": torch._VF.gru_cell, "rnn_tanh": torch._VF.rnn_tanh_cell,
          "rnn_relu": torch._VF.rnn_relu_cell}


def _applies(layer, x_t, hx) -> bool:
    """Cheap checks after try_step's own; anything unusual goes to the full ``step`` (and its clear
    errors)."""
    mode = layer.native_mode
    if mode == "lstm" and layer.proj_size:
        return False
    if torch.is_grad_enabled() and any(p.requires_grad for p in layer._flat_weights()):
        return False
    if x_t.dim() != 2 or x_t.shape[1] != layer.input_size or x_t.requires_grad or \
            x_t.dtype != layer.weight_ih_l0.dtype:
        return False
    parts = (hx,) if isinstance(hx, Tensor) else tuple(hx) if isinstance(hx, tuple) else None
    if parts is None or len(parts) != (2 if mode == "lstm" else 1):
        return False
    want = (layer.num_layers, x_t.shape[0], layer.hidden_size)
    return all(isinstance(p, Tensor) and tuple(p.shape) == want and p.dtype == x_t.dtype and not p.requires_grad
               for p in parts)


def try_step(layer, x_t: Tensor, hx, cpp_only: bool = False):
    """``layer.step(x_t, hx)`` on the fast path, or None when it does not apply (see module doc);
    with ``cpp_only`` only the C++ step (for a one-step ``forward``, which otherwise keeps torch's kernels)."""
    if hx is None or torch.compiler.is_compiling() or capturing(x_t):
        return None  # a trace or a compiled graph would hold the C++ call's result as a constant
    if isinstance(x_t, Tensor) and autocast_for(x_t):
        return None  # autocast casts torch's ops to its dtype; the C++ step would stay in float32
    mode = layer.native_mode
    if layer.bidirectional or (layer.training and (
            layer.zoneout or layer.dropout or layer.recurrent_dropout or layer.weight_drop)):
        return None  # fresh masks in training
    # plain isinstance tests (not a loop over the parts): this runs once per generated token; the C++
    # step compares dtypes itself and _applies does for the cells' path, so a mismatch reaches the full
    # step, which names what is wrong
    if not isinstance(x_t, Tensor) or not (isinstance(hx, Tensor) or (
            isinstance(hx, tuple) and len(hx) == 2 and isinstance(hx[0], Tensor) and isinstance(hx[1], Tensor))):
        return None
    cpp = _step_module if _step_module is not _UNSET else _cpp_step()
    # zoneout in evaluation mode mixes each state part with its old value (its expectation): the C++
    # step does that per layer; ATen's cells do not
    zone = zoneout_rates(layer.zoneout, len(layer._state_sizes)) if layer.zoneout else ()
    if mode is None:
        return _layer_norm_step(cpp, layer, x_t, hx, zone) if getattr(layer, "layer_norm", False) else None
    lstm = mode == "lstm"
    if cpp is not None and (mode == "gru" or (lstm and isinstance(hx, tuple) and len(hx) == 2 and not layer.proj_size)):
        # the C++ step checks the rest (tensors, shapes, dtypes, autograd): None where it does not apply
        w = _step_params(layer)
        out = (cpp.lstm_step(x_t, hx[0], hx[1], w, layer.bias, LSTMState, *zone) if lstm
               else cpp.gru_step(x_t, hx, w, layer.bias, *zone))
        if out is not None:
            return out
    if cpp_only or zone or not _applies(layer, x_t, hx):
        return None
    params = layer._params()
    cell = _CELLS[mode]
    new = []  # per layer: h, or (h, c)
    for k, names in enumerate(layer._bindings):
        w = [params[t] for _, t in names]
        out = cell(x_t, (hx[0][k], hx[1][k]) if lstm else hx[k], *(w if layer.bias else (w[0], w[1], None, None)))
        x_t = out[0] if lstm else out
        new.append(out)
    if len(new) == 1:  # the state is a view of the last h (_stack): y_t must not be, as on every other path
        x_t = x_t.clone()  # (an in-place change of y_t, a residual's add_, changed the state)
    if lstm:
        return x_t, LSTMState(*(_stack(p) for p in zip(*new)))
    return x_t, _stack(new)


def _step_params(layer):
    """The layer's flat weights in torch's order, read straight from ``_parameters`` (200 ns; through
    ``layer._params()``'s check of every name, 600 ns a token); a name missing there (prune, the
    hook-based weight norms, a DataParallel replica) or parametrized goes the long way."""
    if "parametrizations" not in layer._modules:
        try:
            return layer._step_weights(layer._parameters)
        except KeyError:
            pass
    return layer._step_weights(layer._params())


def _layer_norm_step(cpp, layer, x_t: Tensor, hx, zone: tuple = ()):
    """The C++ step of a layer-normalised LSTM or GRU stack, or None (no C++ module, or the step does
    not apply: the full ``step`` then runs the cells)."""
    if cpp is None:
        return None
    w = _step_params(layer)
    if isinstance(layer._cells[0], LayerNormLSTMCell):
        if not (isinstance(hx, tuple) and len(hx) == 2):
            return None
        return cpp.ln_lstm_step(x_t, hx[0], hx[1], w, layer.bias, EPS, LSTMState, *zone)
    return cpp.ln_gru_step(x_t, hx, w, layer.bias, EPS, *zone)


def autocast_on(device_type: str) -> bool:
    """Whether autocast is on for this device type (``torch.is_autocast_enabled(device)``, torch >= 2.4)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # pragma: no cover - an older signature without the device type
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


def autocast_for(x: Tensor) -> bool:
    """:func:`autocast_on` for ``x``'s device (``is_cuda``/``is_cpu``: 86 ns, ``device.type``: 335 ns)."""
    return autocast_on("cuda" if x.is_cuda else "cpu" if x.is_cpu else x.device.type)


def _cpp_step():
    """The C++ step module, or None (no compiler, ``RNNKIT_CPP=0``): settled on the first call."""
    global _step_module
    if _step_module is _UNSET:
        _step_module = _cpp.module()
    return _step_module


def _stack(parts) -> Tensor:
    """(L, B, H) from L tensors (B, H); one layer, the common streaming case, is a view, not a copy."""
    return parts[0].unsqueeze(0) if len(parts) == 1 else torch.stack(parts)
