"""torch's native recurrent kernels (oneDNN/MKL on CPU, cuDNN on GPU), called as torch.nn calls them.

``run_full`` is exactly what ``torch.nn.LSTM/GRU/RNN.forward`` does for a padded batch or a
``PackedSequence``. ``run_lengths`` runs one layer and one direction over a padded batch with
per-sequence lengths without packing: it sorts the batch by length and runs the kernel once per
distinct length on the still-active prefix of the batch, carrying the state, so the work is the
packed work while the calls stay large. The final state of each sequence is taken when it ends.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["NATIVE_OPS", "run_full", "run_packed", "run_lengths"]

NATIVE_OPS = {"lstm": torch._VF.lstm, "gru": torch._VF.gru,
              "rnn_tanh": torch._VF.rnn_tanh, "rnn_relu": torch._VF.rnn_relu}


def _split_result(mode: str, result):
    if mode == "lstm":
        return result[0], (result[1], result[2])
    return result[0], result[1]


def _float32(value):
    if isinstance(value, Tensor) and value.dtype in (torch.bfloat16, torch.float16):
        return value.float()
    if isinstance(value, (tuple, list)):
        return type(value)(_float32(v) for v in value)
    return value


def _projected(args) -> bool:
    """Whether an LSTM call's state ``(h, c)`` (the first pair among ``args``) has a projected ``h``."""
    hx = next((a for a in args if isinstance(a, (tuple, list)) and len(a) == 2), None)
    return hx is not None and hx[0].shape[-1] != hx[1].shape[-1]


def _call(mode: str, *args):
    """torch's kernel; under CPU autocast, in float32 where oneDNN cannot build the low-precision one.

    On CPUs without AVX-512 oneDNN has no bfloat16 LSTM ("could not create a primitive descriptor for the
    LSTM forward propagation primitive"), so ``torch.nn.LSTM`` fails under CPU autocast there; rnnkit's
    layer then runs the kernel as its other backends do under autocast: in float32, autocast off."""
    try:
        if mode == "lstm" and _projected(args):
            with warnings.catch_warnings():  # torch's note that oneDNN falls back for LSTMP (once a process)
                warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
                return NATIVE_OPS[mode](*args)
        return NATIVE_OPS[mode](*args)
    except RuntimeError as exc:  # (the refusal costs under 1 ms; which calls oneDNN takes is torch's choice)
        if not torch.is_autocast_enabled("cpu") or "could not create a primitive" not in str(exc):
            raise
    with torch.autocast("cpu", enabled=False):
        return NATIVE_OPS[mode](*_float32(list(args)))


def _backward_needs_train(x: Tensor) -> bool:
    """Whether torch's kernel for ``x`` refuses a backward after ``train=False``: cuDNN (and MIOpen) on a
    GPU do; the CPU's (oneDNN) do not, and there ``train=True`` would change the kernel (oneDNN has no
    bfloat16 LSTM training primitive on some CPUs, so inference under autocast would fail)."""
    return x.device.type != "cpu"


def _mode_flags(x: Tensor, hx, weights: list[Tensor], dropout: float, training: bool) -> tuple[float, bool]:
    """``(dropout, train)`` for torch's kernels. Their one ``train`` flag means two things: dropout between
    layers (the layer's mode decides that) and, for cuDNN, keeping what its backward needs: called with
    ``train=False``, cuDNN refuses the backward ("cudnn RNN backward can only be called in training mode"),
    which broke every backward through a layer in evaluation mode and through ``run_lengths`` (always
    ``False`` there) on a GPU. So on a GPU the kernel runs in training mode whenever autograd will
    differentiate it, with the dropout only the layer's mode asks for."""
    if training or not _backward_needs_train(x):
        return dropout, training
    tensors = [x, *(hx if isinstance(hx, tuple) else (hx,)), *weights]
    differentiated = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return 0.0, differentiated


def run_full(mode: str, x: Tensor, hx, weights: list[Tensor], has_bias: bool, num_layers: int,
             dropout: float, training: bool, bidirectional: bool, batch_first: bool):
    """All layers and directions in one native call; ``hx`` is ``(h, c)`` for LSTM, else ``h``."""
    dropout, train = _mode_flags(x, hx, weights, dropout, training)
    result = _call(mode, x, hx, weights, has_bias, num_layers, dropout, train, bidirectional, batch_first)
    return _split_result(mode, result)


def run_packed(mode: str, data: Tensor, batch_sizes: Tensor, hx, weights: list[Tensor], has_bias: bool,
               num_layers: int, dropout: float, training: bool, bidirectional: bool):
    """The native kernel on packed data (``hx`` already in sorted batch order)."""
    dropout, train = _mode_flags(data, hx, weights, dropout, training)
    result = _call(mode, data, batch_sizes, hx, weights, has_bias, num_layers, dropout, train, bidirectional)
    return _split_result(mode, result)


def _rows(state, stop: int, start: int = 0):
    if isinstance(state, tuple):
        return tuple(s[:, start:stop] for s in state)
    return state[:, start:stop]


def _cat_rows(parts):
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p, 1) for p in zip(*parts))
    return torch.cat(parts, 1)


def run_lengths(mode: str, x: Tensor, h0, weights: list[Tensor], has_bias: bool, lengths: Tensor):
    """One layer, one direction, batch-first ``x`` (B, T, F) with ``lengths`` (B,).

    ``h0`` is ``(1, B, H)`` (or a pair for LSTM). Returns ``(y, h_n)`` in the original batch order,
    ``y`` zero past each length.
    """
    B, T = x.shape[:2]
    lens_sorted, order = torch.sort(lengths.cpu(), descending=True, stable=True)
    order_dev = order.to(x.device)
    xs = x.index_select(0, order_dev)
    state = _index_state(h0, order_dev)
    outs, finished, active, t0 = [], [], B, 0
    for u in sorted(set(lens_sorted.tolist()) - {0}):
        n = int((lens_sorted >= u).sum())  # the sequences still running between t0 and u
        if n < active:
            finished.append(_rows(state, active, n))
            state = _rows(state, n)
            active = n
        y, state = run_full(mode, xs[:n, t0:u], state, weights, has_bias, 1, 0.0, False, False, True)
        outs.append(F.pad(y, (0, 0, 0, 0, 0, B - n)))
        t0 = u
    final = _cat_rows([state] + finished[::-1]) if outs else _index_state(h0, order_dev)
    y = torch.cat(outs, 1) if outs else x.new_zeros(B, 0, _out_size(mode, weights))
    y = F.pad(y, (0, 0, 0, T - y.shape[1]))
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(B)
    inverse = inverse.to(x.device)
    return y.index_select(0, inverse), _index_state(final, inverse)


def _index_state(state, index: Tensor):
    if isinstance(state, tuple):
        return tuple(s.index_select(1, index) for s in state)
    return state.index_select(1, index)


def _out_size(mode: str, weights: list[Tensor]) -> int:
    if mode == "lstm" and len(weights) in (3, 5):  # projected LSTM: the last weight is weight_hr
        return weights[-1].shape[0]
    return weights[1].shape[1]
