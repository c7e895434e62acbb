r"""Fused forward and backward of the IndRNN (:mod:`rnnkit.cells.indrnn`), with lengths, recurrent
dropout and zoneout.

.. math::

    h'_t = \phi(a_t), \quad a_t = x_t W_{ih}^\top + b + u \odot m \odot h_{t-1}, \quad
    h_t = k_t\, h_{t-1} + (1 - k_t)\, h'_t

with ``u`` the clipped per-unit recurrent weight, ``m`` the recurrent-dropout mask and ``k_t`` zoneout's
keep mask (``m = 1``, ``k = 0`` without them). The input projection of all steps is one GEMM (left to
autograd: one node), the clip too; the recurrence is one :class:`torch.autograd.Function` with a
hand-written backward. On the CPU (float32/float64, when the C++ library builds:
:mod:`rnnkit.kernels._cpp`) each direction is one call of ``csrc/indrnn.cpp``, which splits the B×H
independent scalar recurrences over threads once and walks time within each thread's slice. Otherwise
a step is two in-place torch ops
(``addcmul`` into the output row, then ``relu_``/``tanh_``). Both compute the same backward: with
:math:`\phi'_t` from the saved activations (``h' > 0`` for ReLU, ``1 - h'^2`` for tanh) and
:math:`f_t = \phi'_t (1 - k_t)`,

.. math::

    \bar a_t = f_t \bar h_t, \quad \bar h_{t-1} = u\, m\, \bar a_t + k_t \bar h_t + \bar y_{t-1}, \quad
    \bar u = \textstyle\sum_{t,b} \bar a_t\, m\, h_{t-1}, \quad \bar x^{proj}_t = \bar a_t,

in torch ops three per step (``threshold_backward``/``tanh_backward`` into the input side's gradient,
one ``addcmul`` into a per-row sum for ``u``'s gradient, one for ``dh_{t-1}``; zoneout's factor taken
in bulk), instead of the cell path's per-step autograd graph (~6 nodes a step).
"""

from __future__ import annotations

import torch

from rnnkit.kernels._capture import refuse_double_backward
from torch import Tensor

from rnnkit.cells.indrnn import IndRNNCell
from rnnkit.kernels import _cpp
from rnnkit.kernels import _fused_common as fc

__all__ = ["indrnn_sequence", "supports"]


def supports(cell) -> bool:
    """True for the cell this kernel computes exactly: IndRNN (ReLU or tanh)."""
    return isinstance(cell, IndRNNCell)


class _IndRNNFn(torch.autograd.Function):
    """``(xp, u, h0, mask, keep, b, relu) -> (ys, h_n)``, time-major, in running (length-sorted) order:
    ``xp`` (T, B, H) the projected input, ``u`` (H,), ``ys`` (T, B, H) zero past each length."""

    @staticmethod
    def forward(ctx, xp, u, h0, mask, keep, b, relu):
        with fc.loop_threads():
            T, B, H = xp.shape
            ys = fc.new_buffer(b, T, B, H, like=xp)
            act = ys if keep is None else fc.new_buffer(b, T, B, H, like=xp)  # h' before zoneout
            uv = u if mask is None else u * mask  # (H,) or (B, H): the recurrent factor of each row
            ctx.cpp = _cpp.ops_for(xp) if T else None
            if ctx.cpp is not None:  # the whole recurrence in one call (csrc/indrnn.cpp)
                uv, h0 = uv.expand(B, H).contiguous(), h0.contiguous()
                keep = None if keep is None else keep[:, 0].contiguous()  # (T, B, H)
                ctx.cpp.indrnn_fwd(xp.contiguous(), uv, h0, keep, list(b.sizes), relu, ys,
                                   None if keep is None else act)
            else:
                _forward_steps(xp, uv, h0, mask, keep, b, relu, ys, act)
        ctx.b, ctx.relu = b, relu
        ctx.save_for_backward(None if keep is None else act, ys, h0, uv, mask, keep)
        return ys, fc.last(ys, h0, b)

    @staticmethod
    def backward(ctx, d_ys, d_hn):
        refuse_double_backward("IndRNN")
        with fc.loop_threads():
            act, ys, h0, uv, mask, keep = ctx.saved_tensors
            act = ys if keep is None else act
            if ctx.cpp is not None:
                return _backward_cpp(ctx, act, ys, h0, uv, mask, keep, d_ys, d_hn)
            return _backward(ctx, act, ys, h0, uv, mask, keep, d_ys, d_hn)


def _forward_steps(xp, uv, h0, mask, keep, b, relu: bool, ys: Tensor, act: Tensor) -> None:
    """The recurrence as two in-place torch ops a step (three under zoneout)."""
    for t in range(xp.shape[0]):
        n = b.sizes[t]
        if n == 0:
            break  # sizes never grow again
        h_prev = h0[:n] if t == 0 else ys[t - 1, :n]
        a = torch.addcmul(xp[t, :n], uv if mask is None else uv[:n], h_prev, out=act[t, :n])
        if relu:
            a.relu_()
        else:
            a.tanh_()
        if keep is not None:
            torch.lerp(a, h_prev, keep[t, 0, :n], out=ys[t, :n])


def _backward_cpp(ctx, act, ys, h0, uv, mask, keep, d_ys, d_hn):
    """The C++ backward: ``uv`` (B, H), ``keep`` (T, B, H) as the forward made them contiguous."""
    b = ctx.b
    dxp = (torch.empty_like if b.full else torch.zeros_like)(ys)
    dh, acc = torch.empty_like(h0), torch.zeros_like(h0)
    ctx.cpp.indrnn_bwd(act, ys, h0, uv, keep, d_ys.contiguous(), d_hn.contiguous(), list(b.sizes), ctx.relu,
                       dxp, dh, acc)
    du = (acc if mask is None else acc.mul_(mask)).sum(0) if ctx.needs_input_grad[1] else None
    return dxp, du, (dh if ctx.needs_input_grad[2] else None), None, None, None, None


_THRESHOLD_B = torch.ops.aten.threshold_backward.grad_input
_TANH_B = torch.ops.aten.tanh_backward.grad_input


def _backward(ctx, act, ys, h0, uv, mask, keep, d_ys, d_hn):
    b, relu = ctx.b, ctx.relu
    need_u, need_h0 = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    T, B, H = ys.shape
    f = None  # without zoneout phi' is applied per step from the saved activation (one op)
    if keep is not None:
        f = (act > 0).to(act.dtype) if relu else 1 - act * act
        f.mul_(1 - keep[:, 0])
    dxp = (torch.empty_like if b.full else torch.zeros_like)(ys)
    acc = ys.new_zeros(B, H) if need_u else None  # sum over steps of dxp * h_{t-1}, per row
    dh = None
    for t in range(T - 1, -1, -1):
        n = b.sizes[t]
        if n == 0:
            continue
        dh = fc.arrive(dh, n, d_hn, d_ys[t])
        da = dxp[t, :n]
        if f is not None:
            torch.mul(dh, f[t, :n], out=da)
        elif relu:
            _THRESHOLD_B(dh, act[t, :n], 0, grad_input=da)
        else:
            _TANH_B(dh, act[t, :n], grad_input=da)
        if acc is not None:
            acc[:n].addcmul_(da, h0[:n] if t == 0 else ys[t - 1, :n])
        if t == 0 and not need_h0:
            break
        factor = uv if mask is None else uv[:n]
        prev = torch.mul(da, factor) if t == 0 else torch.addcmul(d_ys[t - 1, :n], da, factor)
        if keep is not None:
            prev.addcmul_(dh, keep[t, 0, :n])
        dh = prev
    dh0 = fc.arrive(dh, B, d_hn) if need_h0 else None  # + the rows of length 0
    du = None if acc is None else (acc if mask is None else acc.mul_(mask)).sum(0)
    return dxp, du, dh0, None, None, None, None


def indrnn_sequence(cell, x: Tensor, state: Tensor, lengths: Tensor | None = None,
                    recurrent_mask: Tensor | None = None, zoneout: float = 0.0, zoneout_expected: bool = False):
    """The fused equivalent of ``cell.forward(x, state, lengths=..., ...)`` for an IndRNN cell.

    ``x`` is batch-first (B, T, I); returns ``(y, h_n)`` like the cell.
    """
    B, T, _ = x.shape
    b = fc.batching(lengths, B, T)
    keep = fc.zoneout_keep(zoneout, T, 1, B, cell.hidden_size, x, zoneout_expected, b.order)
    xp = cell.project_input(b.rows(x).transpose(0, 1))  # (T, B, H): all steps in one GEMM
    if xp.dtype != state.dtype:  # autocast's GEMM: the recurrence runs in the state's dtype, as the cell's
        xp = xp.to(state.dtype)
    ys, h_n = _IndRNNFn.apply(xp, cell.recurrent_weight(), b.rows(state), b.rows(recurrent_mask), keep, b,
                              cell.nonlinearity == "relu")
    y, (h_n,) = fc.finish(b, ys, [h_n])
    return y, h_n

