r"""Fused CPU forward and backward of the LSTM family: layer-normalised, peephole, and plain LSTM under
recurrent dropout or zoneout (:mod:`rnnkit.cells.lstm`, :mod:`rnnkit.cells.layernorm`).

The input side of all time steps is one GEMM (and one layer norm) before the loop, with autograd. The
loop is a :class:`torch.autograd.Function` whose forward does, per step, one GEMM and a handful of
pointwise ops written into saved buffers, and whose backward is hand-written: no per-op autograd graph.

Layout: gates are reordered to ``(g, i, f, o)`` and the two tanh's are computed as
:math:`\tanh(a) = 2\sigma(2a) - 1` (one sigmoid over all gates: on CPU a float32 ``tanh`` costs ~8
sigmoids). So the loop receives the ``g`` block of its pre-activations, and the cell-norm gain and
bias, already scaled by 2 (the wrapper scales the parameters; autograd carries the factor back).
Per step, with :math:`u = 2\,\mathrm{LN}_c(c_t)` and :math:`\tau = \tanh(u/2)`:

.. math::

    \begin{aligned}
    \bar a_o &= \bar h\,\tau\,o(1-o), \qquad \bar u = \bar h\,o\,(1-\tau^2)/2, \qquad
    \bar c_t = \bar c + \mathrm{LN}_c^\top(\bar u) + p_o \bar a_o \\
    \bar a_g &= \bar c_t\, i(1-g^2)/2, \quad \bar a_i = \bar c_t\, g\, i(1-i), \quad
    \bar a_f = \bar c_t\, c_{t-1} f(1-f), \quad
    \bar c_{t-1} = \bar c_t f + p_i \bar a_i + p_f \bar a_f \\
    \bar h_{t-1} &= \mathrm{LN}_{hh}^\top(\bar a)\, W_{hh} + \bar y_{t-1}
    \end{aligned}

Every factor that depends only on saved activations (``fo``, ``ft``, ``fg``, ``k``) is computed for all
steps at once before the backward loop, so the loop is ~8 ops per step. Zoneout's keep mask ``k`` folds
into those factors as ``(1-k)`` plus one ``addcmul`` per state. :math:`\bar W_{hh} = \sum_t \bar a_t^\top
h_{t-1}` is one ``(4H, N) @ (N, H)`` GEMM over all steps at the end; the gains likewise.
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
    """``(xa, h0, c0, w, ln_w, lnc_w, lnc_b, peep, mask, keep, batching) -> (hs, cs)``, time-major.

    ``xa`` (T, B, 4H) is the input side of the gates incl. both biases; ``hs``/``cs`` (T+1, B, H) hold
    ``h0``/``c0`` then every step's state (rows past a sequence's end stay zero).
    """

    @staticmethod
    def forward(ctx, xa, h0, c0, w, ln_w, lnc_w, lnc_b, peep, mask, keep, b):
        T, B, G = xa.shape
        H = G // 4
        s = SimpleNamespace(w=w, ln_w=ln_w, lnc_w=lnc_w, lnc_b=lnc_b, peep=peep, mask=mask, keep=keep)
        hs, cs = fc.new_buffer(b, T + 1, B, H, like=xa), fc.new_buffer(b, T + 1, B, H, like=xa)
        hs[0], cs[0] = h0, c0
        s.cn = cs[1:] if keep is None else fc.new_buffer(b, T, B, H, like=xa)  # c_t before zoneout
        s.hin = hs if mask is None else fc.new_buffer(b, T, B, H, like=xa)  # h_{t-1} (masked)
        s.act = fc.new_buffer(b, T, B, G, like=xa)  # (T, B, 4H): g, i, f, o
        s.tc = fc.new_buffer(b, T, B, H, like=xa)  # tanh(LN(c_t))
        s.hp, s.stats, s.cstats = [], [], []
        with fc.loop_threads():
            for t, n in enumerate(b.sizes):
                if n:
                    _forward_step(s, xa[t, :n], hs, cs, t, n)
        s.cn = None if keep is None else s.cn  # outputs go through save_for_backward (no ref cycle)
        s.hin = None if mask is None else s.hin
        ctx.s, ctx.b = s, b
        ctx.save_for_backward(hs, cs)
        return hs, cs

    @staticmethod
    def backward(ctx, d_hs, d_cs):
        s, b = ctx.s, ctx.b
        hs, cs = ctx.saved_tensors
        s.cs, s.cn = cs, cs[1:] if s.keep is None else s.cn
        s.hin = hs if s.mask is None else s.hin
        s.dhs, s.dcs = d_hs.clone(memory_format=torch.contiguous_format), d_cs.clone(
            memory_format=torch.contiguous_format)  # (T+1, B, H); the loop writes into them
        s.dpre = fc.new_buffer(b, *s.act.shape, like=s.act)  # (T, B, 4H): grads of the pre-activations
        s.du = fc.new_buffer(b, *s.tc.shape, like=s.tc) if s.lnc_w is not None else None
        s.w_t, s.dhp = s.w.t().contiguous(), []  # (H, 4H)
        _backward_factors(s)
        with fc.loop_threads():
            dh0, dc0 = _backward_loop(s, b, ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        return (s.dpre, dh0, dc0, *_parameter_grads(s, b), None, None, None)


def _forward_step(s, xa_t: Tensor, hs: Tensor, cs: Tensor, t: int, n: int) -> None:
    H = s.w.shape[1]
    h_prev, c_prev = hs[t, :n], cs[t, :n]
    hin = h_prev if s.mask is None else torch.mul(h_prev, s.mask[:n], out=s.hin[t, :n])
    if s.ln_w is None:
        pre = fc.linear(hin, s.w, xa_t)  # (n, 4H)
    else:
        s.hp.append(fc.linear(hin, s.w))
        pre, mean, rstd = torch.native_layer_norm(s.hp[-1], (4 * H,), s.ln_w, None, EPS)
        pre.add_(xa_t)
        s.stats.append((mean, rstd))
    act = s.act[t, :n]
    if s.peep is not None:
        pre[:, H:3 * H].unflatten(1, (2, H)).addcmul_(c_prev.unsqueeze(1), s.peep[:2])
    sig = slice(0, 4 * H) if s.peep is None else slice(0, 3 * H)
    torch.sigmoid(pre[:, sig], out=act[:, sig])
    g, i, f, o = fc.tanh_from_sigmoid_(act[:, :H]), act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
    c_new = torch.mul(f, c_prev, out=s.cn[t, :n]).addcmul_(i, g)
    if s.peep is not None:
        torch.sigmoid(pre[:, 3 * H:].addcmul_(c_new, s.peep[2]), out=o)
    if s.lnc_w is not None:
        u, mean, rstd = torch.native_layer_norm(c_new, (H,), s.lnc_w, s.lnc_b, EPS)  # 2 LN(c_t)
        s.cstats.append((mean, rstd))
    else:
        u = c_new * 2.0
    tc = fc.tanh_from_sigmoid_(torch.sigmoid(u, out=s.tc[t, :n]))
    if s.keep is None:
        torch.mul(o, tc, out=hs[t + 1, :n])
    else:
        torch.lerp(o * tc, h_prev, s.keep[t, 0, :n], out=hs[t + 1, :n])
        torch.lerp(c_new, c_prev, s.keep[t, 1, :n], out=cs[t + 1, :n])


def _backward_factors(s) -> None:
    """Per-step factors that depend only on saved activations, for all steps in a few bulk ops."""
    H = s.tc.shape[-1]
    g, i, f, o = s.act.unflatten(-1, (4, H)).unbind(2)  # each (T, B, H)
    s.fo = s.tc * o * (1 - o)  # dh -> grad of a_o
    s.ft = o * (1 - s.tc * s.tc)  # dh -> grad of c_t (no cell norm) or, halved, of u = 2 LN(c_t)
    if s.lnc_w is not None:
        s.ft.mul_(0.5)
    if s.keep is not None:
        one_minus_kh = 1 - s.keep[:, 0]
        s.fo.mul_(one_minus_kh)
        s.ft.mul_(one_minus_kh)
    s.fg = torch.stack([i * (1 - g * g) * 0.5, g * i * (1 - i), s.cs[:-1] * f * (1 - f)], 2)  # (T,B,3,H)
    s.k = f  # dc_t -> dc_{t-1}
    if s.peep is not None:
        s.k = f + s.peep[0] * s.fg[:, :, 1] + s.peep[1] * s.fg[:, :, 2]
        s.fop = s.fo * s.peep[2]
    s.kc = None if s.keep is None else 1 - s.keep[:, 1]


def _backward_loop(s, b, need_h0: bool):
    """Steps in reverse; ``dh``/``dc`` carry the state gradients of the running rows."""
    dh = dc = None
    for t in range(len(b.sizes) - 1, -1, -1):
        n = b.sizes[t]
        if n:
            dh = _extend(dh, s.dhs[t + 1], n)
            dc = _extend(dc, s.dcs[t + 1], n)
            dh, dc = _backward_step(s, dh, dc, t, n, t > 0 or need_h0)
    B = s.dhs.shape[1]
    return _extend(dh, s.dhs[0], B), _extend(dc, s.dcs[0], B)


def _extend(carry: Tensor | None, row: Tensor, n: int) -> Tensor:
    """The first ``n`` rows of a state gradient: ``carry`` for the rows that ran the later step."""
    if carry is None:
        return row[:n]
    if carry.shape[0] == n:
        return carry
    row[:carry.shape[0]].copy_(carry)
    return row[:n]


def _backward_step(s, dh: Tensor, dc: Tensor, t: int, n: int, need_dh_prev: bool):
    H = s.tc.shape[-1]
    dpre = s.dpre[t, :n]
    torch.mul(dh, s.fo[t, :n], out=dpre[:, 3 * H:])
    if s.lnc_w is not None:
        du = torch.mul(dh, s.ft[t, :n], out=s.du[t, :n])
        du = fc.ln_backward(du, s.cn[t, :n], *s.cstats[t], s.lnc_w)
    else:
        du = torch.mul(dh, s.ft[t, :n])
    dc_new = du.add_(dc) if s.kc is None else du.addcmul_(dc, s.kc[t, :n])
    if s.peep is not None:
        dc_new.addcmul_(dh, s.fop[t, :n])
    torch.mul(dc_new.unsqueeze(1), s.fg[t, :n], out=dpre[:, :3 * H].unflatten(1, (3, H)))
    dc_prev = torch.addcmul(s.dcs[t, :n], dc_new, s.k[t, :n])
    dhp = dpre if s.ln_w is None else fc.ln_backward(dpre, s.hp[t], *s.stats[t], s.ln_w)
    s.dhp.append(dhp)
    if not need_dh_prev:
        dh_prev = s.dhs[t, :n].clone()
    elif s.mask is None:
        dh_prev = fc.linear(dhp, s.w_t, s.dhs[t, :n])
    else:
        dh_prev = torch.addcmul(s.dhs[t, :n], fc.linear(dhp, s.w_t), s.mask[:n])
    if s.keep is not None:
        dh_prev.addcmul_(dh, s.keep[t, 0, :n])
        dc_prev.addcmul_(dc, s.keep[t, 1, :n])
    return dh_prev, dc_prev


def _parameter_grads(s, b) -> tuple:
    """Gradients of ``w, ln_w, lnc_w, lnc_b, peep``, each a bulk op over all steps."""
    H, sizes = s.tc.shape[-1], b.sizes
    dhp = torch.cat(s.dhp[::-1]) if s.dhp else s.dpre.new_zeros(0, 4 * H)  # (N, 4H), N = sum n_t
    hin = fc.packed(s.hin[:-1] if s.mask is None else s.hin, sizes)  # (N, H)
    d_w = torch.mm(dhp.t(), hin)  # (4H, H): one GEMM over all steps
    d_ln = d_lnc_w = d_lnc_b = d_peep = None
    if s.ln_w is not None:
        d_ln = _gain_grad(fc.packed(s.dpre, sizes), torch.cat(s.hp), s.stats)
    if s.lnc_w is not None:
        du = fc.packed(s.du, sizes)
        d_lnc_w, d_lnc_b = _gain_grad(du, fc.packed(s.cn, sizes), s.cstats), du.sum(0)
    if s.peep is not None:
        dpre = s.dpre.unflatten(-1, (4, H))
        d_peep = torch.stack([(dpre[:, :, 1] * s.cs[:-1]).sum((0, 1)), (dpre[:, :, 2] * s.cs[:-1]).sum((0, 1)),
                              (dpre[:, :, 3] * s.cn).sum((0, 1))])
    return d_w, d_ln, d_lnc_w, d_lnc_b, d_peep


def _gain_grad(grad: Tensor, inp: Tensor, stats: list) -> Tensor:
    """``sum_rows grad * (inp - mean) * rstd``: a layer-norm gain's gradient over all steps."""
    mean = torch.cat([m for m, _ in stats])  # (N, 1)
    rstd = torch.cat([r for _, r in stats])
    return ((inp - mean) * rstd * grad).sum(0)


def _gate_params(cell, perm: Tensor, ln: bool):
    """Weights in ``(g, i, f, o)`` order with the ``g`` block scaled by 2 where it enters a sigmoid."""
    H = cell.hidden_size
    scale = torch.ones(4 * H, 1, device=perm.device, dtype=cell.weight_ih.dtype)
    scale[:H] = 2.0  # (4H, 1)
    bias = None if cell.bias_ih is None else (cell.bias_ih + cell.bias_hh).index_select(0, perm) * scale[:, 0]
    if ln:
        ln_ih = cell.ln_ih_weight.index_select(0, perm) * scale[:, 0]
        ln_hh = cell.ln_hh_weight.index_select(0, perm) * scale[:, 0]
        return cell.weight_ih.index_select(0, perm), bias, ln_ih, cell.weight_hh.index_select(0, perm), ln_hh
    w_ih, w_hh = cell.weight_ih.index_select(0, perm) * scale, cell.weight_hh.index_select(0, perm) * scale
    return w_ih, bias, None, w_hh, None


def lstm_sequence(cell, x: Tensor, state: LSTMState, lengths: Tensor | None = None,
                  recurrent_mask: Tensor | None = None, zoneout: float = 0.0):
    """The fused equivalent of ``cell.forward(x, state, lengths=..., ...)`` for a supported cell.

    ``x`` is batch-first (B, T, I); returns ``(y, LSTMState(h_n, c_n))`` like the cell.
    """
    B, T, _ = x.shape
    H, ln = cell.hidden_size, isinstance(cell, LayerNormLSTMCell)
    b = fc.batching(lengths, B, T)
    keep = fc.zoneout_keep(zoneout, T, 2, B, H, x)
    if keep is not None and b.order is not None:
        keep = keep.index_select(2, b.order)  # drawn in the caller's batch order
    w_ih, bias, ln_ih, w_hh, ln_hh = _gate_params(cell, fc.gate_perm(4, _ORDER, H, x.device), ln)
    xt = b.rows(x).transpose(0, 1).contiguous()  # (T, B, I): one GEMM below, not T small ones
    xa = F.layer_norm(F.linear(xt, w_ih), (4 * H,), ln_ih, bias, EPS) if ln else F.linear(xt, w_ih, bias)
    peep = None
    if not ln and cell.peephole:
        peep = torch.stack([cell.weight_ci, cell.weight_cf, cell.weight_co])
    lnc = (cell.ln_c_weight * 2.0, cell.ln_c_bias * 2.0) if ln else (None, None)
    hs, cs = _LSTMLoop.apply(xa, b.rows(state.h), b.rows(state.c), w_hh, ln_hh, *lnc, peep,
                             b.rows(recurrent_mask), keep, b)
    y, (h_n, c_n) = fc.finish(b, hs, [hs, cs])
    return y, LSTMState(h_n, c_n)
