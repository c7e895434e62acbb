r"""Fused CPU forward and backward of the GRU family: layer-normalised GRU, and plain GRU under recurrent
dropout or zoneout (:mod:`rnnkit.cells.gru`, :mod:`rnnkit.cells.layernorm`).

The structure is :mod:`rnnkit.kernels.fused_lstm`'s: one :class:`torch.autograd.Function`, chunks of
steps, the input side of a chunk as one GEMM (+ layer norm), one prepacked GEMM per step, a
hand-written backward. Gate order is torch's ``(r, z, n)``; the candidate's tanh is computed as
:math:`2\sigma(2a) - 1`, so the ``n`` blocks of both projections come in scaled by 2. With
:math:`a^x, a^h` the input and recurrent sides (:math:`a^h` incl. its bias and norm):

.. math::

    \begin{aligned}
    r &= \sigma(a^x_r + a^h_r), \quad z = \sigma(a^x_z + a^h_z), \quad
    n = \tanh(a^x_n + r\,a^h_n), \quad h_t = n + z\,(h_{t-1} - n) \\
    \bar a_n &= \bar h\,(1-z)(1-n^2), \quad \bar a_z = \bar h\,(h_{t-1}-n)\,z(1-z), \quad
    \bar a_r = \bar a_n\, a^h_n\, r(1-r) \\
    \bar a^x &= (\bar a_r, \bar a_z, \bar a_n), \quad \bar a^h = (\bar a_r, \bar a_z, r\,\bar a_n), \quad
    \bar h_{t-1} = \mathrm{LN}^\top(\bar a^h)\,W_{hh} + z\,\bar h + \bar y_{t-1}
    \end{aligned}

Per chunk, ``dh -> (\bar a^x, \bar a^h)`` is two factor tensors computed in bulk, so a backward step is
two multiplies, the norm's backward, one GEMM and one ``addcmul``. Zoneout (keep mask :math:`k`,
:math:`h_t = k h_{t-1} + (1-k) h'_t`) folds into the same factors.

The step loops are torch ops on any device; for a layer-norm GRU on a GPU (``RNNKIT_TRITON``) each step's
pointwise work is instead one Triton launch (:mod:`rnnkit.kernels.triton_ln_gru`), with the same buffers.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from rnnkit.kernels._capture import refuse_double_backward
from torch import Tensor

from rnnkit.cells.gru import GRUCell
from rnnkit.cells.layernorm import EPS, LayerNormGRUCell
from rnnkit.kernels import _fused_common as fc
from rnnkit.kernels import triton_ln_gru
from rnnkit.kernels._gemm import InputSide, Weight, add_outer, prepared

__all__ = ["gru_sequence", "supports"]

_SIG_B = torch.ops.aten.sigmoid_backward.grad_input
_TANH_B = torch.ops.aten.tanh_backward.grad_input
_LN_B = torch.ops.aten.native_layer_norm_backward.default


def supports(cell) -> bool:
    """True for the cells this kernel computes exactly: GRU and layer-norm GRU."""
    return isinstance(cell, (GRUCell, LayerNormGRUCell))


class _GRUFn(torch.autograd.Function):
    """``(x, w_ih, b_ih, ln_ih, h0, w_hh, b_hh, ln_hh, mask, keep, b) -> (ys, h_n)``, time-major.

    In running (length-sorted) order: ``x`` (T, B, I), ``ys`` (T, B, H) zero past each length,
    ``h_n`` (B, H). The ``n`` blocks of the parameters are pre-scaled by 2 (module doc).
    """

    @staticmethod
    def forward(ctx, *args):
        with fc.loop_threads():
            return _GRUFn._forward(ctx, *args)

    @staticmethod
    def backward(ctx, *grads):
        refuse_double_backward("GRU")
        with fc.loop_threads():
            try:
                return _GRUFn._backward(ctx, *grads)[:len(ctx.needs_input_grad)]  # prep: optional
            finally:  # the saved output refers to this node: kept in ctx.s it would make a reference
                # cycle, and the scratch buffers would wait for the garbage collector instead of going
                # back to the pool when the graph is freed (a fresh 32 MB buffer per call, page faults)
                ctx.s.ys = ctx.s.h0 = None

    @staticmethod
    def _forward(ctx, x, w_ih, b_ih, ln_ih, h0, w_hh, b_hh, ln_hh, mask, keep, b, prep=None):
        T, B, _ = x.shape
        H, C = h0.shape[1], fc.chunk_size(B)
        s = SimpleNamespace(b_hh=b_hh, ln_w=ln_hh, mask=mask, keep=keep, C=C)
        sc = s.scratch = fc.Scratch(b, x)
        keep_xp = None if ln_ih is None else sc.take(T, B, 3 * H)
        s.inp = InputSide(x, w_ih, b_ih, ln_ih, EPS, C * B, keep_xp, prep)
        s.w = Weight(w_hh, B) if prep is None else prep.weight(w_hh, B)
        ys = fc.new_buffer(b, T, B, H, like=x)
        s.act, s.ahn = sc.take(T, B, 3 * H), sc.take(T, B, H)  # r, z, n; the recurrent side of n
        s.hp = None if ln_hh is None else sc.take(T, B, 3 * H)  # W_hh h_{t-1} before its norm
        s.hin = None if mask is None else sc.take(T, B, H)
        s.stats = {}
        s.tri = _row_passes(ln_hh, x)
        if s.tri is not None:
            s.st, h0 = sc.take(T, B, 2), h0.contiguous()  # the hidden side's mean and 1/std per row
        for t0, t1 in fc.chunks(b, C):
            xa = s.inp.forward(t0, t1).view(t1 - t0, B, 3 * H)
            if s.tri is not None:
                s.tri.ln_gru_fwd_chunk(xa.contiguous(), h0 if t0 == 0 else ys[t0 - 1], w_hh.t(), ln_hh, b_hh, EPS,
                                       b.sizes[t0:t1], mask, None if keep is None else s.keep[t0:t1, 0],
                                       None if mask is None else s.hin[t0:t1], ys[t0:t1], s.act[t0:t1],
                                       s.ahn[t0:t1], s.hp[t0:t1], s.st[t0:t1])
                continue
            for t in range(t0, t1):
                n = b.sizes[t]
                if n:
                    _forward_step(s, xa[t - t0, :n], h0[:n] if t == 0 else ys[t - 1, :n], ys[t, :n], t, n)
        ctx.s, ctx.b = s, b
        ctx.save_for_backward(ys, h0)
        return ys, fc.last(ys, h0, b)

    @staticmethod
    def _backward(ctx, d_ys, d_hn):
        s, b = ctx.s, ctx.b
        s.ys, s.h0 = ctx.saved_tensors
        s.w_t, s.d_w = Weight.transposed(s.w.w, s.ys.shape[1]), torch.zeros_like(s.w.w)
        s.d_b = None if s.b_hh is None else torch.zeros_like(s.b_hh)
        s.d_ln = None if s.ln_w is None else torch.zeros_like(s.ln_w)
        s.inp.begin_backward(ctx.needs_input_grad[0])
        dh0 = _backward_chunks(s, b, d_ys, d_hn, ctx.needs_input_grad[4])
        inp = s.inp
        return inp.dx, inp.d_w, inp.d_bias, inp.d_gain, dh0, s.d_w, s.d_b, s.d_ln, None, None, None, None


def _row_passes(ln_hh: Tensor | None, x: Tensor):
    """The Triton row passes (:mod:`rnnkit.kernels.triton_ln_gru`) when they compute this call: a
    layer-norm GRU in float32/float64 on a GPU (``RNNKIT_TRITON``); else None, the torch-op steps."""
    if ln_hh is None or x.dtype not in (torch.float32, torch.float64) or not triton_ln_gru.wanted(x):
        return None
    return triton_ln_gru.ops()


def _forward_step(s, xa_t: Tensor, h_prev: Tensor, h_out: Tensor, t: int, n: int) -> None:
    H = h_prev.shape[1]
    hin = h_prev if s.mask is None else torch.mul(h_prev, s.mask[:n], out=s.hin[t, :n])
    if s.ln_w is None:
        ah = s.w(hin, bias=s.b_hh)  # (n, 3H)
    else:
        hp = s.hp[t, :n]
        hp.copy_(s.w(hin))
        ah, mean, rstd = torch.native_layer_norm(hp, (3 * H,), s.ln_w, s.b_hh, EPS)
        s.stats[t] = (mean, rstd)
    act, ahn = s.act[t, :n], s.ahn[t, :n]
    ahn.copy_(ah[:, 2 * H:])
    rz = torch.add(xa_t[:, :2 * H], ah[:, :2 * H], out=act[:, :2 * H]).sigmoid_()
    cand = torch.addcmul(xa_t[:, 2 * H:], rz[:, :H], ahn)
    cand = fc.tanh_from_sigmoid_(torch.sigmoid(cand, out=act[:, 2 * H:]))
    if s.keep is None:
        torch.lerp(cand, h_prev, rz[:, H:], out=h_out)
    else:
        torch.lerp(torch.lerp(cand, h_prev, rz[:, H:]), h_prev, s.keep[t, 0, :n], out=h_out)


def _backward_chunks(s, b, d_ys: Tensor, d_hn: Tensor, need_h0: bool) -> Tensor:
    """Chunks of steps in reverse; ``dh`` carries the state gradient of the running rows."""
    T, B, H = s.ys.shape
    C, new = s.C, d_ys.new_empty
    wk = SimpleNamespace(fx=new(C, B, 3, H), fh=new(C, B, 3, H), dxa=new(C, B, 3 * H), dah=new(C, B, 3 * H),
                         dhp=None if s.ln_w is None else new(C, B, 3 * H))
    if s.tri is not None:
        return _backward_triton(s, b, wk, d_ys, d_hn, need_h0)
    dh = None
    for t0, t1 in fc.chunks(b, C, reverse=True):
        _chunk_factors(s, wk, t0, t1)
        _zero_idle_rows(b, wk)
        for t in range(t1 - 1, t0 - 1, -1):
            n = b.sizes[t]
            if n:
                dh = fc.arrive(dh, n, d_hn, d_ys[t])
                dh = _backward_step(s, wk, d_ys, dh, t, t - t0, n, t > 0 or need_h0)
        _chunk_weight_grads(s, wk, t0, t1)
    return fc.arrive(dh, B, d_hn)


def _zero_idle_rows(b, wk) -> None:
    if not b.full:
        for buf in (wk.dxa, wk.dah, wk.dhp):
            if buf is not None:
                buf.zero_()  # rows that do not run must not enter the weight gradients


def _backward_triton(s, b, wk, d_ys: Tensor, d_hn: Tensor, need_h0: bool) -> Tensor | None:
    """The chunks of :func:`_backward_chunks` with the Triton row passes for the steps; ``dh`` is one
    (B, H) buffer, the rows still running after a chunk have arrived before it (``b.sizes[t1]``)."""
    T, B, H = s.ys.shape
    d_ys, d_hn = d_ys.contiguous(), d_hn.contiguous()
    dh = d_ys.new_zeros(B, H)
    acc = [torch.zeros(3 * H, dtype=torch.float64, device=d_ys.device) for _ in range(2)]  # gain, bias
    for t0, t1 in fc.chunks(b, s.C, reverse=True):
        _chunk_factors(s, wk, t0, t1)
        _zero_idle_rows(b, wk)
        c = t1 - t0
        s.tri.ln_gru_bwd_chunk(wk.fx[:c], wk.fh[:c], wk.direct.contiguous(), s.hp[t0:t1], s.st[t0:t1], s.ln_w,
                               s.w.w, d_ys[t0:t1], d_ys[t0 - 1] if t0 else None, d_hn, b.sizes[t0:t1],
                               b.sizes[t1] if t1 < T else 0, s.mask, t0 > 0 or need_h0, dh, wk.dxa[:c],
                               wk.dhp[:c], *acc)
        _chunk_weight_grads(s, wk, t0, t1)
    s.d_ln.add_(acc[0].to(s.d_ln.dtype))
    if s.d_b is not None:
        s.d_b.add_(acc[1].to(s.d_b.dtype))
    m = b.sizes[0] if T else 0  # rows of length 0 never ran: their gradient is d_hn's
    dh[m:] = d_hn[m:]
    return dh if need_h0 else None


def _chunk_factors(s, wk, t0: int, t1: int) -> None:
    """``dh -> (grad of a^x, grad of a^h)`` and ``dh -> dh_{t-1}`` factors of the chunk's steps."""
    c, (T, B, H) = t1 - t0, s.ys.shape
    r, z, cand = s.act[t0:t1].unflatten(-1, (3, H)).unbind(2)  # each (c, B, H)
    h_prev = s.ys[t0 - 1:t1 - 1] if t0 else torch.cat([s.h0.unsqueeze(0), s.ys[:t1 - 1]])
    fx, fh = wk.fx[:c], wk.fh[:c]
    _TANH_B(1 - z, cand, grad_input=fx[:, :, 2]).mul_(0.5)  # dh -> grad of the scaled a_n
    _SIG_B(h_prev - cand, z, grad_input=fx[:, :, 1])  # dh -> grad of a_z
    keep = None if s.keep is None else s.keep[t0:t1, 0]
    if keep is not None:
        fx[:, :, 1:].mul_((1 - keep).unsqueeze(2))
    _SIG_B(fx[:, :, 2] * s.ahn[t0:t1], r, grad_input=fx[:, :, 0])  # dh -> grad of a_r
    fh[:, :, :2] = fx[:, :, :2]
    torch.mul(fx[:, :, 2], r, out=fh[:, :, 2])
    wk.direct = z if keep is None else torch.lerp(z, torch.ones_like(z), keep)  # dh -> dh_{t-1}


def _backward_step(s, wk, d_ys: Tensor, dh: Tensor, t: int, j: int, n: int, need_prev: bool):
    H = dh.shape[1]
    dhu = dh.unsqueeze(1)  # (n, 1, H)
    torch.mul(dhu, wk.fx[j, :n], out=wk.dxa[j, :n].view(n, 3, H))
    dah = torch.mul(dhu, wk.fh[j, :n], out=wk.dah[j, :n].view(n, 3, H)).view(n, 3 * H)
    dhp = dah
    if s.ln_w is not None:
        dhp, dg, db = _LN_B(dah, s.hp[t, :n], (3 * H,), *s.stats[t], s.ln_w, s.b_hh,
                            [True, True, s.b_hh is not None])
        s.d_ln.add_(dg)
        if s.b_hh is not None:
            s.d_b.add_(db)
        wk.dhp[j, :n] = dhp
    if not need_prev:
        return None
    other = d_ys[t - 1, :n] if t else None
    if s.mask is None:
        dh_prev = s.w_t(dhp, other=other)
    else:
        dh_prev = s.w_t(dhp).mul_(s.mask[:n])
        dh_prev = dh_prev if other is None else dh_prev.add_(other)
    return dh_prev.addcmul_(dh, wk.direct[j, :n])


def _chunk_weight_grads(s, wk, t0: int, t1: int) -> None:
    """``dW_hh += dhp^T h_{t-1}`` over the chunk as one GEMM, the bias, the input side's backward."""
    c, (T, B, H) = t1 - t0, s.ys.shape
    dhp = (wk.dah if wk.dhp is None else wk.dhp)[:c].reshape(c * B, 3 * H)
    if s.ln_w is None and s.d_b is not None:
        s.d_b.add_(dhp.sum(0))
    if s.mask is not None:
        add_outer(s.d_w, dhp, s.hin[t0:t1].reshape(c * B, H))
    elif t0 > 0:
        add_outer(s.d_w, dhp, s.ys[t0 - 1:t1 - 1].reshape(c * B, H))
    else:
        add_outer(s.d_w, dhp[:B], s.h0)
        add_outer(s.d_w, dhp[B:], s.ys[:t1 - 1].reshape(-1, H))
    s.inp.backward(t0, t1, wk.dxa[:c].reshape(c * B, 3 * H))


def _params(cell, ln: bool):
    """The parameters with the ``n`` blocks scaled by 2 where they enter a sigmoid (module doc)."""
    H, like = cell.hidden_size, cell.weight_ih
    scale = torch.ones(3 * H, device=like.device, dtype=like.dtype)
    scale[2 * H:] = 2.0
    b_ih = None if cell.bias_ih is None else cell.bias_ih * scale
    b_hh = None if cell.bias_hh is None else cell.bias_hh * scale
    if ln:
        return cell.weight_ih, b_ih, cell.ln_ih_weight * scale, cell.weight_hh, b_hh, cell.ln_hh_weight * scale
    return cell.weight_ih * scale[:, None], b_ih, None, cell.weight_hh * scale[:, None], b_hh, None


def gru_sequence(cell, x: Tensor, state: Tensor, lengths: Tensor | None = None,
                 recurrent_mask: Tensor | None = None, zoneout: float = 0.0, zoneout_expected: bool = False):
    """The fused equivalent of ``cell.forward(x, state, lengths=..., ...)`` for a supported cell.

    ``x`` is batch-first (B, T, I); returns ``(y, h_n)`` like the cell.
    """
    B, T, _ = x.shape
    b = fc.batching(lengths, B, T)
    keep = fc.zoneout_keep(zoneout, T, 1, B, cell.hidden_size, x, zoneout_expected, b.order)
    ln = isinstance(cell, LayerNormGRUCell)
    (w_ih, b_ih, ln_ih, w_hh, b_hh, ln_hh), prep = prepared(cell, lambda: _params(cell, ln))
    xt = b.rows(x).transpose(0, 1).contiguous()  # (T, B, I)
    ys, h_n = _GRUFn.apply(xt, w_ih, b_ih, ln_ih, b.rows(state), w_hh, b_hh, ln_hh, b.rows(recurrent_mask),
                           keep, b, prep)
    y, (h_n,) = fc.finish(b, ys, [h_n])
    return y, h_n
