r"""Fused CPU forward and backward of the LSTM family: layer-normalised, peephole, and plain LSTM under
recurrent dropout or zoneout (:mod:`rnnkit.cells.lstm`, :mod:`rnnkit.cells.layernorm`).

The input side of all time steps is one GEMM (and one layer norm) outside the loop, with autograd. The
loop is a :class:`torch.autograd.Function` whose forward does, per step, one ``mm``/``addmm`` into a
preallocated buffer and a handful of pointwise ops written into saved buffers, and whose backward is
hand-written: no per-op autograd graph. Gates are reordered to ``(g, i, f, o)`` so the one tanh gate
comes first and the sigmoid gates are contiguous. With gate pre-activations :math:`a`, the backward of
one step is

.. math::

    \begin{aligned}
    \bar a_o &= \bar h\,\tanh(\hat c)\,o(1-o), \qquad \bar{\hat c} = \bar h\,o\,(1-\tanh^2\hat c), \qquad
    \bar c_t = \bar c + \mathrm{LN}_c^\top(\bar{\hat c}) + p_o \bar a_o \\
    \bar a_g &= \bar c_t\, i(1-g^2), \quad \bar a_i = \bar c_t\, g\, i(1-i), \quad
    \bar a_f = \bar c_t\, c_{t-1} f(1-f), \quad \bar c_{t-1} = \bar c_t (f + p_i \frac{\partial}{} \dots)
    \end{aligned}

where every factor that depends only on saved activations (``FO``, ``FT``, ``FG``, ``K`` below) is
computed for all steps at once before the loop, so the loop is ~8 ops per step. Zoneout's keep mask
``k`` folds into those factors (``(1-k)``) plus one ``addcmul`` per state. The recurrent weight's
gradient is one GEMM over all steps at the end, :math:`\bar W_{hh} = \sum_t \bar a_t^\top h_{t-1}`
as a ``(4H, N) @ (N, H)`` product; the layer-norm gains likewise.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnkit.cells.base import LSTMState
from rnnkit.cells.layernorm import EPS, LayerNormLSTMCell
from rnnkit.cells.lstm import LSTMCell
from rnnkit.kernels import _fused_common as fc

__all__ = ["lstm_sequence", "supports"]

_ORDER = (2, 0, 1, 3)  # torch's (i, f, g, o) -> (g, i, f, o)


def supports(cell) -> bool:
    """True for the cells this kernel computes exactly: LSTM (no projection) and layer-norm LSTM."""
    return isinstance(cell, LayerNormLSTMCell) or (isinstance(cell, LSTMCell) and not cell.proj_size)


class _LSTMLoop(torch.autograd.Function):
    """``(xa, h0, c0, w_hh, ln_w, lnc_w, lnc_b, peep, mask, keep, sizes) -> (hs, cs)`` time-major.

    ``xa`` (T, B, 4H) is the input side of the gates incl. both biases, ``hs``/``cs`` (T+1, B, H) hold
    ``h0``/``c0`` then every step's state (rows past a sequence's end stay zero).
    """

    @staticmethod
    def forward(ctx, xa, h0, c0, w, ln_w, lnc_w, lnc_b, peep, mask, keep, b):
        T, B, G = xa.shape
        s = SimpleNamespace(w=w, ln_w=ln_w, lnc_w=lnc_w, lnc_b=lnc_b, peep=peep, mask=mask, keep=keep)
        s.hs, s.cs = fc.new_buffer(b, T + 1, B, G // 4, like=xa), fc.new_buffer(b, T + 1, B, G // 4, like=xa)
        s.hs[0], s.cs[0] = h0, c0
        s.cn = s.cs[1:] if keep is None else fc.new_buffer(b, T, B, G // 4, like=xa)  # c before zoneout
        s.act = fc.new_buffer(b, T, B, G, like=xa)  # (T, B, 4H): tanh g, sigmoid i, f, o
        s.tc = fc.new_buffer(b, T, B, G // 4, like=xa)  # tanh(LN(c_t))
        s.hin = s.hs if mask is None else fc.new_buffer(b, T, B, G // 4, like=xa)
        s.hp = fc.new_buffer(b, T, B, G, like=xa) if ln_w is not None else None
        s.stats, s.cstats = [], []
        w_t = w.t()
        for t, n in enumerate(b.sizes):
            if n:
                _forward_step(s, xa[t, :n], w_t, t, n)
        hs, cs = s.hs, s.cs
        s.hs = s.cs = None  # outputs go through save_for_backward (no reference cycle)
        s.cn = s.cn if keep is not None else None
        s.hin = s.hin if mask is not None else None
        ctx.s, ctx.b, ctx.zoneout, ctx.masked = s, b, keep is not None, mask is not None
        ctx.save_for_backward(hs, cs)
        return hs, cs

    @staticmethod
    def backward(ctx, d_hs, d_cs):
        s, b = ctx.s, ctx.b
        s.hs, s.cs = ctx.saved_tensors
        if not ctx.zoneout:
            s.cn = s.cs[1:]
        if not ctx.masked:
            s.hin = s.hs
        s.dh, s.dc = d_hs.contiguous().clone(), d_cs.contiguous().clone()  # (T+1, B, H), updated in place
        s.dpre = fc.new_buffer(b, *s.act.shape, like=s.act)  # (T, B, 4H): grad of the gate pre-activations
        s.dcn = fc.new_buffer(b, *s.tc.shape, like=s.tc)  # grad of LN(c_t)
        s.dhp = []
        _backward_factors(s)
        need_h0 = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        for t in range(len(b.sizes) - 1, -1, -1):
            n = b.sizes[t]
            if n:
                _backward_step(s, t, n, t > 0 or need_h0)
        grads = _parameter_grads(s, b)
        return (s.dpre, s.dh[0], s.dc[0], *grads, None, None, None)


def _forward_step(s, xa_t: Tensor, w_t: Tensor, t: int, n: int) -> None:
    H = s.w.shape[1]
    h_prev, c_prev = s.hs[t, :n], s.cs[t, :n]
    hin = h_prev if s.mask is None else torch.mul(h_prev, s.mask[:n], out=s.hin[t, :n])
    if s.ln_w is None:
        pre = torch.addmm(xa_t, hin, w_t)  # (n, 4H)
    else:
        hp = torch.mm(hin, w_t, out=s.hp[t, :n])
        pre, mean, rstd = torch.native_layer_norm(hp, (4 * H,), s.ln_w, None, EPS)
        pre.add_(xa_t)
        s.stats.append((mean, rstd))
    act = s.act[t, :n]
    sig = slice(H, 4 * H) if s.peep is None else slice(H, 3 * H)
    if s.peep is not None:
        pre[:, H:3 * H].unflatten(1, (2, H)).addcmul_(c_prev.unsqueeze(1), s.peep[:2])
    torch.tanh(pre[:, :H], out=act[:, :H])
    torch.sigmoid(pre[:, sig], out=act[:, sig])
    g, i, f, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
    c_new = torch.mul(f, c_prev, out=s.cn[t, :n]).addcmul_(i, g)
    if s.peep is not None:
        torch.sigmoid(pre[:, 3 * H:].addcmul_(c_new, s.peep[2]), out=o)
    if s.lnc_w is not None:
        c_norm, mean, rstd = torch.native_layer_norm(c_new, (H,), s.lnc_w, s.lnc_b, EPS)
        s.cstats.append((mean, rstd))
    else:
        c_norm = c_new
    tc = torch.tanh(c_norm, out=s.tc[t, :n])
    if s.keep is None:
        torch.mul(o, tc, out=s.hs[t + 1, :n])
    else:
        torch.lerp(o * tc, h_prev, s.keep[t, 0, :n], out=s.hs[t + 1, :n])
        torch.lerp(c_new, c_prev, s.keep[t, 1, :n], out=s.cs[t + 1, :n])


def _backward_factors(s) -> None:
    """Per-step factors that depend only on saved activations, for all steps in a few bulk ops."""
    H = s.tc.shape[-1]
    g, i, f, o = s.act.unflatten(-1, (4, H)).unbind(2)  # each (T, B, H)
    c_prev = s.cs[:-1]
    one_minus_kh = None if s.keep is None else 1 - s.keep[:, 0]
    s.fo = s.tc * o * (1 - o)  # dh -> grad of a_o
    s.ft = o * (1 - s.tc * s.tc)  # dh -> grad of LN(c_t)
    if one_minus_kh is not None:
        s.fo, s.ft = s.fo * one_minus_kh, s.ft * one_minus_kh
    s.fg = torch.stack([i * (1 - g * g), g * i * (1 - i), c_prev * f * (1 - f)], 2)  # (T, B, 3, H)
    s.k = f  # dc_t -> dc_{t-1}
    if s.peep is not None:
        s.k = f + s.peep[0] * s.fg[:, :, 1] + s.peep[1] * s.fg[:, :, 2]
        s.fop = s.fo * s.peep[2]
    s.kc = None if s.keep is None else 1 - s.keep[:, 1]


def _backward_step(s, t: int, n: int, need_dh_prev: bool) -> None:
    H = s.tc.shape[-1]
    dh, dc, dpre = s.dh[t + 1, :n], s.dc[t + 1, :n], s.dpre[t, :n]
    torch.mul(dh, s.fo[t, :n], out=dpre[:, 3 * H:])
    dcn = torch.mul(dh, s.ft[t, :n], out=s.dcn[t, :n])
    if s.lnc_w is not None:
        dcn = fc.ln_backward(dcn, s.cn[t, :n], *s.cstats[t], s.lnc_w)
    dc_new = dcn + dc if s.kc is None else torch.addcmul(dcn, dc, s.kc[t, :n])
    if s.peep is not None:
        dc_new.addcmul_(dh, s.fop[t, :n])
    torch.mul(dc_new.unsqueeze(1), s.fg[t, :n], out=dpre[:, :3 * H].unflatten(1, (3, H)))
    s.dc[t, :n].addcmul_(dc_new, s.k[t, :n])
    dhp = dpre if s.ln_w is None else fc.ln_backward(dpre, s.hp[t, :n], *s.stats[t], s.ln_w)
    s.dhp.append(dhp)
    if need_dh_prev:
        if s.mask is None:
            s.dh[t, :n].addmm_(dhp, s.w)
        else:
            s.dh[t, :n].addcmul_(torch.mm(dhp, s.w), s.mask[:n])
    if s.keep is not None:
        s.dh[t, :n].addcmul_(dh, s.keep[t, 0, :n])
        s.dc[t, :n].addcmul_(dc, s.keep[t, 1, :n])


def _parameter_grads(s, b) -> tuple:
    """Gradients of ``w_hh, ln_w, lnc_w, lnc_b, peep``, each a bulk op over all steps."""
    H, sizes = s.tc.shape[-1], b.sizes
    dhp = torch.cat(s.dhp[::-1]) if s.dhp else s.dpre.new_zeros(0, 4 * H)  # (N, 4H), N = sum n_t
    d_w = dhp.t() @ fc.packed(s.hin[:-1] if s.mask is None else s.hin, sizes)  # (4H, H): one GEMM
    d_ln = d_lnc_w = d_lnc_b = d_peep = None
    if s.ln_w is not None:
        d_ln = _gain_grad(fc.packed(s.dpre, sizes), fc.packed(s.hp, sizes), s.stats)
    if s.lnc_w is not None:
        dcn = fc.packed(s.dcn, sizes)
        d_lnc_w, d_lnc_b = _gain_grad(dcn, fc.packed(s.cn, sizes), s.cstats), dcn.sum(0)
    if s.peep is not None:
        dpre = s.dpre.unflatten(-1, (4, H))
        d_peep = torch.stack([(dpre[:, :, 1] * s.cs[:-1]).sum((0, 1)), (dpre[:, :, 2] * s.cs[:-1]).sum((0, 1)),
                              (dpre[:, :, 3] * s.cn).sum((0, 1))])
    return d_w, d_ln, d_lnc_w, d_lnc_b, d_peep


def _gain_grad(grad: Tensor, inp: Tensor, stats: list) -> Tensor:
    """``sum_rows grad * (inp - mean) * rstd``: the layer-norm gain's gradient over all steps."""
    mean = torch.cat([m for m, _ in stats])  # (N, 1)
    rstd = torch.cat([r for _, r in stats])
    return ((inp - mean) * rstd * grad).sum(0)


def lstm_sequence(cell, x: Tensor, state: LSTMState, lengths: Tensor | None = None,
                  recurrent_mask: Tensor | None = None, zoneout: float = 0.0):
    """The fused equivalent of ``cell.forward(x, state, lengths=..., ...)`` for a supported cell.

    ``x`` is batch-first (B, T, I); returns ``(y, LSTMState(h_n, c_n))`` like the cell.
    """
    B, T, _ = x.shape
    H, ln = cell.hidden_size, isinstance(cell, LayerNormLSTMCell)
    perm = fc.gate_perm(4, _ORDER, H, x.device)
    b = fc.batching(lengths, B, T)
    keep = fc.zoneout_keep(zoneout, T, 2, B, H, x)
    xt = b.rows(x).transpose(0, 1)  # (T, B, I)
    bias = None if cell.bias_ih is None else (cell.bias_ih + cell.bias_hh).index_select(0, perm)
    w_ih = cell.weight_ih.index_select(0, perm)
    if ln:
        xa = F.layer_norm(F.linear(xt, w_ih), (4 * H,), cell.ln_ih_weight.index_select(0, perm), bias, EPS)
    else:
        xa = F.linear(xt, w_ih, bias)  # (T, B, 4H)
    peep = None
    if not ln and cell.peephole:
        peep = torch.stack([cell.weight_ci, cell.weight_cf, cell.weight_co])
    if keep is not None and b.order is not None:
        keep = keep.index_select(2, b.order)  # drawn in the caller's batch order
    hs, cs = _LSTMLoop.apply(
        xa, b.rows(state.h), b.rows(state.c), cell.weight_hh.index_select(0, perm),
        cell.ln_hh_weight.index_select(0, perm) if ln else None,
        cell.ln_c_weight if ln else None, cell.ln_c_bias if ln else None, peep,
        b.rows(recurrent_mask), keep, b)
    y, (h_n, c_n) = fc.finish(b, hs, [hs, cs])
    return y, LSTMState(h_n, c_n)
