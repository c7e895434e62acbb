r"""Fused CPU forward and backward of the LSTM family: layer-normalised, peephole, and plain LSTM under
recurrent dropout or zoneout (:mod:`rnnkit.cells.lstm`, :mod:`rnnkit.cells.layernorm`).

One :class:`torch.autograd.Function` runs the whole sequence. Forward, chunk by chunk: the input side
of the chunk's gates as one GEMM (+ layer norm), then per step one prepacked GEMM and a handful of
pointwise ops written into saved buffers. Backward is hand-written, no per-op autograd graph: chunks
in reverse, per step ~10 small ops and one GEMM; per chunk the factors that depend only on saved
activations in a few bulk ops, :math:`\bar W_{hh} \mathrel{+}= \sum_t \bar a_t^\top h_{t-1}` as one GEMM
with ``K = chunk * B`` rows, and the input side's backward.

Layout: gates are reordered to ``(g, i, f, o)``. Without layer norm both tanh's are computed as
:math:`\tanh(a) = 2\sigma(2a) - 1` (one sigmoid over all gates; on CPU a float32 ``tanh`` costs ~8
sigmoids): the loop then receives the ``g`` block of its pre-activations scaled by 2 (the wrapper scales
the weights; autograd carries the factor back). With layer norm they are ``torch.tanh``: the sigmoid
form's absolute error near 0 (~6e-8) is amplified by the norms of the following steps, measurably
beyond the reference's own float32 error. With :math:`u = \mathrm{LN}_c(c_t)` (or :math:`c_t`),
:math:`\tau = \tanh u` and pre-activations :math:`a` (:math:`\bar a_g` halved in the scaled form), the
backward of a step is

.. math::

    \begin{aligned}
    \bar a_o &= \bar h\,\tau\,o(1-o), \qquad \bar u = \bar h\,o\,(1-\tau^2), \qquad
    \bar c_t = \bar c + \mathrm{LN}_c^\top(\bar u) + p_o \bar a_o \\
    \bar a_g &= \bar c_t\, i(1-g^2), \quad \bar a_i = \bar c_t\, g\, i(1-i), \quad
    \bar a_f = \bar c_t\, c_{t-1} f(1-f), \quad \bar c_{t-1} = \bar c_t f + p_i \bar a_i + p_f \bar a_f \\
    \bar h_{t-1} &= \mathrm{LN}_{hh}^\top(\bar a)\, W_{hh} + \bar y_{t-1}
    \end{aligned}

Zoneout's keep mask :math:`k` folds into those factors as :math:`(1-k)` plus one ``addcmul`` per state.

On the CPU (with or without lengths, recurrent dropout and zoneout) the per-step loops of both passes
run in C++ when :mod:`rnnkit.kernels._cpp` can build them (``csrc/ln_lstm.cpp``: the same equations, one
pass over each row per step, no Python per step), for the layer-norm LSTM and for the LSTM without it
(plain under its regularisers, or with peepholes); the chunk-level work (input side, weight gradients,
peepholes' gradients) stays here. ``RNNKIT_CPP=0`` keeps the Python loops.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from rnnkit.kernels._capture import refuse_double_backward
from torch import Tensor

from rnnkit.cells.base import LSTMState
from rnnkit.cells.layernorm import EPS, LayerNormLSTMCell
from rnnkit.cells.lstm import LSTMCell
from rnnkit.kernels import _cpp, triton_ln_lstm
from rnnkit.kernels import _fused_common as fc
from rnnkit.kernels._gemm import InputSide, Weight, add_outer, prepared

__all__ = ["lstm_sequence", "supports"]

_ORDER = (2, 0, 1, 3)  # torch's (i, f, g, o) -> (g, i, f, o)
_SIG_B = torch.ops.aten.sigmoid_backward.grad_input  # (d, s) -> d s (1 - s)
_TANH_B = torch.ops.aten.tanh_backward.grad_input  # (d, y) -> d (1 - y^2)
_LN_B = torch.ops.aten.native_layer_norm_backward.default


def supports(cell) -> bool:
    """True for the cells this kernel computes exactly: LSTM (no projection) and layer-norm LSTM."""
    return isinstance(cell, LayerNormLSTMCell) or (isinstance(cell, LSTMCell) and not cell.proj_size)


class _LSTMFn(torch.autograd.Function):
    """``(x, w_ih, bias, ln_ih, h0, c0, w_hh, ln_hh, lnc_w, lnc_b, peep, mask, keep, b) -> (ys, h_n, c_n)``.

    Time-major, in running (length-sorted) order: ``x`` (T, B, I), ``ys`` (T, B, H) zero past each
    length, ``h_n``/``c_n`` (B, H). Parameters are in ``(g, i, f, o)`` order, pre-scaled (module doc).
    """

    @staticmethod
    def forward(ctx, *args):
        with fc.loop_threads():
            return _LSTMFn._forward(ctx, *args)

    @staticmethod
    def backward(ctx, *grads):
        refuse_double_backward("LSTM")
        with fc.loop_threads():
            try:
                return _LSTMFn._backward(ctx, *grads)[:len(ctx.needs_input_grad)]  # prep: optional
            finally:  # the saved output refers to this node: kept in ctx.s it would make a reference
                # cycle, and the scratch buffers would wait for the garbage collector instead of going
                # back to the pool when the graph is freed (a fresh 32 MB buffer per call, page faults)
                ctx.s.ys = ctx.s.h0 = None

    @staticmethod
    def _forward(ctx, x, w_ih, bias, ln_ih, h0, c0, w_hh, ln_hh, lnc_w, lnc_b, peep, mask, keep, b, prep=None):
        T, B, _ = x.shape
        H, C = h0.shape[1], fc.chunk_size(B)
        s = SimpleNamespace(ln_w=ln_hh, lnc_w=lnc_w, lnc_b=lnc_b, peep=peep, mask=mask, keep=keep, C=C)
        s.scratch = sc = fc.Scratch(b, x)
        keep_xp = None if ln_ih is None else sc.take(T, B, 4 * H)
        s.inp = InputSide(x, w_ih, bias, ln_ih, EPS, C * B, keep_xp, prep)
        s.w = Weight(w_hh, B) if prep is None else prep.weight(w_hh, B)
        ys = fc.new_buffer(b, T, B, H, like=x)
        s.cs = sc.take(T + 1, B, H)  # c_0 .. c_T
        s.cs[0] = c0
        s.cn = s.cs[1:] if keep is None else sc.take(T, B, H)  # c_t before zoneout
        s.hin = None if mask is None else sc.take(T, B, H)  # masked h_{t-1}
        s.act, s.tc = sc.take(T, B, 4 * H), sc.take(T, B, H)  # g, i, f, o; tanh(LN(c_t))
        s.hp = None if ln_hh is None else sc.take(T, B, 4 * H)  # W_hh h_{t-1} before its norm
        s.stats, s.cstats = {}, {}
        s.cpp = _step_loops(s, x)
        if s.cpp is not None:
            _forward_cpp(s, b, x, h0, w_hh, ys)
        for t0, t1 in ([] if s.cpp is not None else fc.chunks(b, C)):
            xa = s.inp.forward(t0, t1).view(t1 - t0, B, 4 * H)
            for t in range(t0, t1):
                n = b.sizes[t]
                if n:
                    _forward_step(s, xa[t - t0, :n], h0[:n] if t == 0 else ys[t - 1, :n], ys[t, :n], t, n)
        ctx.s, ctx.b = s, b
        ctx.save_for_backward(ys, h0)
        return ys, fc.last(ys, h0, b), fc.last(s.cs, c0, b, offset=1)

    @staticmethod
    def _backward(ctx, d_ys, d_hn, d_cn):
        s, b = ctx.s, ctx.b
        s.ys, s.h0 = ctx.saved_tensors
        T, B, H = s.ys.shape
        s.w_t, s.d_w = Weight.transposed(s.w.w, B), torch.zeros_like(s.w.w)  # (H, 4H), (4H, H)
        s.inp.begin_backward(ctx.needs_input_grad[0])
        s.dgam, s.dgc = [], []
        s.d_peep = None if s.peep is None else torch.zeros_like(s.peep)
        need_h0 = ctx.needs_input_grad[4] or ctx.needs_input_grad[5]
        if s.cpp is not None:
            dh0, dc0, d_ln, d_lnc_w, d_lnc_b = _backward_cpp(s, b, d_ys, d_hn, d_cn, need_h0)
        else:
            dh0, dc0 = _backward_chunks(s, b, d_ys, d_hn, d_cn, need_h0)
            d_ln = _sum(s.dgam, s.ln_w)
            d_lnc_w, d_lnc_b = _sum([g for g, _ in s.dgc], s.lnc_w), _sum([g for _, g in s.dgc], s.lnc_b)
        inp = s.inp
        return (inp.dx, inp.d_w, inp.d_bias, inp.d_gain, dh0, dc0, s.d_w, d_ln, d_lnc_w, d_lnc_b, s.d_peep,
                None, None, None, None)


def _sum(parts: list, like: Tensor | None) -> Tensor | None:
    if like is None:
        return None
    return torch.stack(parts).sum(0) if parts else torch.zeros_like(like)


def _step_loops(s, x: Tensor):
    """The compiled step loops when they compute this call (float32/float64, with or without lengths,
    recurrent dropout and zoneout). The layer-norm LSTM: on a GPU the Triton row passes
    (:mod:`rnnkit.kernels.triton_ln_lstm`, per ``RNNKIT_TRITON``; not under zoneout), on the CPU the C++
    loops. The LSTM without layer norm (plain, or with peepholes): the C++ loops on the CPU. Else None:
    the Python loops below."""
    if x.dtype not in (torch.float32, torch.float64):
        return None
    if s.ln_w is not None and triton_ln_lstm.wanted(x):
        return triton_ln_lstm.ops() if s.keep is None else None
    return _cpp.ops() if x.device.type == "cpu" else None


def _forward_cpp(s, b, x: Tensor, h0: Tensor, w_hh: Tensor, ys: Tensor) -> None:
    """The forward's chunks with the C++ step loop; row statistics in (T, B, 2) buffers."""
    T, B, H = ys.shape
    # W_hh^T for at::mm_out: the one s.w made (another copy cost ~1 ms a layer at H=384), or, where s.w
    # packed W_hh for oneDNN, a view (the op then multiplies by the packing)
    s.w_hh, w_t = w_hh.contiguous(), s.w.wt if s.w.packed is None else w_hh.t()
    ln = s.ln_w is not None
    if ln:
        s.st, s.cst = s.scratch.take(T, B, 2), s.scratch.take(T, B, 2)
    h0 = h0.contiguous()
    if s.mask is not None:
        s.mask = s.mask.to(dtype=x.dtype).contiguous()
    zoned = s.keep is not None  # zoneout: the keep masks and c_t before their mix (s.cn) per chunk
    for t0, t1 in fc.chunks(b, s.C):
        xa = s.inp.forward(t0, t1).view(t1 - t0, B, 4 * H).contiguous()
        h_prev, hin = h0 if t0 == 0 else ys[t0 - 1], None if s.mask is None else s.hin[t0:t1]
        keep, cn = (s.keep[t0:t1], s.cn[t0:t1]) if zoned else (None, None)
        if not ln:  # plain or peephole LSTM (the g block of xa and W_hh scaled by 2: module doc)
            s.cpp.lstm_fwd_chunk(xa, h_prev, w_t, s.peep, b.sizes[t0:t1], s.mask, hin, ys[t0:t1], s.cs[t0:t1 + 1],
                                 s.act[t0:t1], s.tc[t0:t1], keep, cn, s.w.packed)
            continue
        s.cpp.ln_lstm_fwd_chunk(xa, h_prev, w_t, s.ln_w, s.lnc_w, s.lnc_b, EPS, b.sizes[t0:t1], s.mask, hin,
                                ys[t0:t1], s.cs[t0:t1 + 1], s.act[t0:t1], s.tc[t0:t1], s.hp[t0:t1], s.st[t0:t1],
                                s.cst[t0:t1], keep, cn,
                                s.w.packed)  # oneDNN's prepacked W_hh where it measured faster (_gemm.Weight)


def _backward_cpp(s, b, d_ys: Tensor, d_hn: Tensor, d_cn: Tensor, need_h0: bool):
    """The backward's chunks with the C++ step loop; returns dh0, dc0 and the three gains' gradients
    (None without layer norm).

    A row's state gradients start at its last step (``d_hn`` plus its output gradient, ``d_cn``); the
    rows still running after a chunk have arrived before it (``b.sizes[t1]`` of them)."""
    T, B, H = s.ys.shape
    C, d_ys, d_hn, d_cn = s.C, d_ys.contiguous(), d_hn.contiguous(), d_cn.contiguous()
    ln = s.ln_w is not None
    new = d_ys.new_empty if b.full else d_ys.new_zeros
    wk = SimpleNamespace(dpre=new(C, B, 4 * H), dhp=new(C, B, 4 * H) if ln else None)
    acc = [torch.zeros(n, dtype=torch.float64, device=d_ys.device) for n in (4 * H, H, H)] if ln else []
    dh, dc = d_ys.new_zeros(B, H), d_ys.new_zeros(B, H)
    zoned = s.keep is not None
    for t0, t1 in fc.chunks(b, C, reverse=True):
        if not b.full:  # rows that do not run must not enter the weight gradients
            wk.dpre.zero_()
            if ln:
                wk.dhp.zero_()
        c, d_prev, arrived = t1 - t0, d_ys[t0 - 1] if t0 else None, b.sizes[t1] if t1 < T else 0
        keep = s.keep[t0:t1] if zoned else None
        if ln:
            s.cpp.ln_lstm_bwd_chunk(s.act[t0:t1], s.tc[t0:t1], s.cs[t0:t1 + 1], s.hp[t0:t1], s.st[t0:t1],
                                    s.cst[t0:t1], s.ln_w, s.lnc_w, s.w_hh, d_ys[t0:t1], d_prev, d_hn, d_cn,
                                    b.sizes[t0:t1], arrived, s.mask, t0 > 0 or need_h0, dh, dc, wk.dpre[:c],
                                    wk.dhp[:c], *acc, keep, s.cn[t0:t1] if zoned else None, s.w_t.packed)
        else:
            s.cpp.lstm_bwd_chunk(s.act[t0:t1], s.tc[t0:t1], s.cs[t0:t1 + 1], s.w_hh, s.peep, d_ys[t0:t1], d_prev,
                                 d_hn, d_cn, b.sizes[t0:t1], arrived, s.mask, t0 > 0 or need_h0, dh, dc,
                                 wk.dpre[:c], keep, s.w_t.packed)
        _chunk_weight_grads(s, wk, t0, t1)
    m = b.sizes[0] if T else 0  # rows of length 0 never ran: h_n = h_0, c_n = c_0
    dh[m:], dc[m:] = d_hn[m:], d_cn[m:]
    grads = [a.to(d_ys.dtype) for a in acc] if ln else [None] * 3
    return (dh if need_h0 else None), dc, *grads


def _forward_step(s, xa_t: Tensor, h_prev: Tensor, h_out: Tensor, t: int, n: int) -> None:
    H = h_prev.shape[1]
    c_prev = s.cs[t, :n]
    hin = h_prev if s.mask is None else torch.mul(h_prev, s.mask[:n], out=s.hin[t, :n])
    if s.ln_w is None:
        pre = s.w(hin, other=xa_t)  # (n, 4H)
    else:
        hp = s.hp[t, :n]
        hp.copy_(s.w(hin))
        pre, mean, rstd = torch.native_layer_norm(hp, (4 * H,), s.ln_w, None, EPS)
        pre.add_(xa_t)
        s.stats[t] = (mean, rstd)
    act = s.act[t, :n]
    if s.peep is not None:
        pre[:, H:3 * H].unflatten(1, (2, H)).addcmul_(c_prev.unsqueeze(1), s.peep[:2])
    sig = slice(0, 4 * H) if s.peep is None else slice(0, 3 * H)
    if s.ln_w is None:
        torch.sigmoid(pre[:, sig], out=act[:, sig])
        fc.tanh_from_sigmoid_(act[:, :H])
    else:  # exact tanh where layer norm amplifies rounding near 0 (module doc)
        torch.sigmoid(pre[:, H:sig.stop], out=act[:, H:sig.stop])
        torch.tanh(pre[:, :H], out=act[:, :H])
    g, i, f, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
    c_new = torch.mul(f, c_prev, out=s.cn[t, :n]).addcmul_(i, g)
    if s.peep is not None:
        torch.sigmoid(pre[:, 3 * H:].addcmul_(c_new, s.peep[2]), out=o)
    if s.lnc_w is not None:
        u, mean, rstd = torch.native_layer_norm(c_new, (H,), s.lnc_w, s.lnc_b, EPS)  # LN(c_t)
        s.cstats[t] = (mean, rstd)
        tc = torch.tanh(u, out=s.tc[t, :n])  # exact: layer norm amplifies h's rounding near 0
    else:
        tc = fc.tanh_from_sigmoid_(torch.sigmoid(c_new * 2, out=s.tc[t, :n]))
    if s.keep is None:
        torch.mul(o, tc, out=h_out)
    else:
        torch.lerp(o * tc, h_prev, s.keep[t, 0, :n], out=h_out)
        torch.lerp(c_new, c_prev, s.keep[t, 1, :n], out=s.cs[t + 1, :n])


def _backward_chunks(s, b, d_ys: Tensor, d_hn: Tensor, d_cn: Tensor, need_h0: bool):
    """Chunks of steps in reverse; ``dh``/``dc`` carry the state gradients of the running rows."""
    T, B, H = s.ys.shape
    C, new = s.C, d_ys.new_empty
    wk = SimpleNamespace(fo=new(C, B, H), ft=new(C, B, H), fg=new(C, B, 3, H), kc=new(C, B, H),
                         dpre=new(C, B, 4 * H), dhp=None if s.ln_w is None else new(C, B, 4 * H))
    dh = dc = None
    for t0, t1 in fc.chunks(b, C, reverse=True):
        _chunk_factors(s, wk, t0, t1)
        if not b.full:
            wk.dpre.zero_()  # rows that do not run must not enter the weight gradients
            if wk.dhp is not None:
                wk.dhp.zero_()
        for t in range(t1 - 1, t0 - 1, -1):
            n = b.sizes[t]
            if n:
                dh = fc.arrive(dh, n, d_hn, d_ys[t])
                dc = fc.arrive(dc, n, d_cn)
                dh, dc = _backward_step(s, wk, d_ys, dh, dc, t, t - t0, n, t > 0 or need_h0)
        _chunk_weight_grads(s, wk, t0, t1)
    return fc.arrive(dh, B, d_hn), fc.arrive(dc, B, d_cn)


def _chunk_factors(s, wk, t0: int, t1: int) -> None:
    """Factors of the chunk's steps that depend only on saved activations, in a few bulk ops."""
    c, H = t1 - t0, s.tc.shape[-1]
    g, i, f, o = s.act[t0:t1].unflatten(-1, (4, H)).unbind(2)  # each (c, B, H)
    tc, fo, ft, fg = s.tc[t0:t1], wk.fo[:c], wk.ft[:c], wk.fg[:c]
    _SIG_B(tc, o, grad_input=fo)  # dh -> grad of a_o
    _TANH_B(o, tc, grad_input=ft)  # dh -> grad of c_t (no cell norm) or of LN(c_t)
    if s.keep is not None:
        torch.sub(1.0, s.keep[t0:t1, 1], out=wk.kc[:c])
        kh = 1.0 - s.keep[t0:t1, 0]
        fo.mul_(kh)
        ft.mul_(kh)
    _TANH_B(i, g, grad_input=fg[:, :, 0])
    if s.ln_w is None:
        fg[:, :, 0].mul_(0.5)  # the g block enters scaled by 2 (sigmoid form of its tanh)
    _SIG_B(g, i, grad_input=fg[:, :, 1])
    _SIG_B(s.cs[t0:t1], f, grad_input=fg[:, :, 2])
    wk.k = f  # dc_t -> dc_{t-1}
    if s.peep is not None:
        wk.k = f + s.peep[0] * fg[:, :, 1] + s.peep[1] * fg[:, :, 2]
        wk.fop = fo * s.peep[2]


def _backward_step(s, wk, d_ys: Tensor, dh: Tensor, dc: Tensor, t: int, j: int, n: int, need_prev: bool):
    H = s.tc.shape[-1]
    dpre = wk.dpre[j, :n]
    torch.mul(dh, wk.fo[j, :n], out=dpre[:, 3 * H:])
    du = torch.mul(dh, wk.ft[j, :n])
    if s.lnc_w is not None:
        du, dgw, dgb = _LN_B(du, s.cn[t, :n], (H,), *s.cstats[t], s.lnc_w, s.lnc_b, [True, True, True])
        s.dgc.append((dgw, dgb))
    dc_new = du.add_(dc) if s.keep is None else du.addcmul_(dc, wk.kc[j, :n])
    if s.peep is not None:
        dc_new.addcmul_(dh, wk.fop[j, :n])
    torch.mul(dc_new.unsqueeze(1), wk.fg[j, :n], out=dpre[:, :3 * H].unflatten(1, (3, H)))
    dc_prev = torch.mul(dc_new, wk.k[j, :n])
    dhp = dpre
    if s.ln_w is not None:
        dhp, dgam, _ = _LN_B(dpre, s.hp[t, :n], (4 * H,), *s.stats[t], s.ln_w, None, [True, True, False])
        s.dgam.append(dgam)
        wk.dhp[j, :n] = dhp
    if not need_prev:
        return None, dc_prev
    other = d_ys[t - 1, :n] if t else None
    if s.mask is None:
        dh_prev = s.w_t(dhp, other=other)
    else:
        dh_prev = s.w_t(dhp).mul_(s.mask[:n])
        dh_prev = dh_prev if other is None else dh_prev.add_(other)
    if s.keep is not None:
        dh_prev.addcmul_(dh, s.keep[t, 0, :n])
        dc_prev.addcmul_(dc, s.keep[t, 1, :n])
    return dh_prev, dc_prev


def _chunk_weight_grads(s, wk, t0: int, t1: int) -> None:
    """``dW_hh += dhp^T h_{t-1}`` over the chunk as one GEMM, the input side's backward, peepholes."""
    c, (T, B, H) = t1 - t0, s.ys.shape
    dhp = (wk.dpre if wk.dhp is None else wk.dhp)[:c].reshape(c * B, 4 * H)
    if s.mask is not None:
        add_outer(s.d_w, dhp, s.hin[t0:t1].reshape(c * B, H))
    elif t0 > 0:
        add_outer(s.d_w, dhp, s.ys[t0 - 1:t1 - 1].reshape(c * B, H))
    else:
        add_outer(s.d_w, dhp[:B], s.h0)
        add_outer(s.d_w, dhp[B:], s.ys[:t1 - 1].reshape(-1, H))
    s.inp.backward(t0, t1, wk.dpre[:c].reshape(c * B, 4 * H))
    if s.peep is not None:
        dp = wk.dpre[:c].unflatten(-1, (4, H))
        s.d_peep[0] += (dp[:, :, 1] * s.cs[t0:t1]).sum((0, 1))
        s.d_peep[1] += (dp[:, :, 2] * s.cs[t0:t1]).sum((0, 1))
        s.d_peep[2] += (dp[:, :, 3] * s.cn[t0:t1]).sum((0, 1))


def _gate_params(cell, ln: bool):
    """Weights in ``(g, i, f, o)`` order; without layer norm the ``g`` block scaled by 2 (sigmoid form)."""
    H, like = cell.hidden_size, cell.weight_ih
    perm = fc.gate_perm(4, _ORDER, H, like.device)
    bias = None if cell.bias_ih is None else (cell.bias_ih + cell.bias_hh).index_select(0, perm)
    if ln:
        ln_ih, ln_hh = cell.ln_ih_weight.index_select(0, perm), cell.ln_hh_weight.index_select(0, perm)
        return cell.weight_ih.index_select(0, perm), bias, ln_ih, cell.weight_hh.index_select(0, perm), ln_hh
    scale = torch.ones(4 * H, 1, device=like.device, dtype=like.dtype)
    scale[:H] = 2.0  # (4H, 1): the g block enters the sigmoid form of its tanh
    bias = None if bias is None else bias * scale[:, 0]
    w_ih, w_hh = cell.weight_ih.index_select(0, perm) * scale, cell.weight_hh.index_select(0, perm) * scale
    return w_ih, bias, None, w_hh, None


def lstm_sequence(cell, x: Tensor, state: LSTMState, lengths: Tensor | None = None,
                  recurrent_mask: Tensor | None = None, zoneout: float = 0.0, zoneout_expected: bool = False):
    """The fused equivalent of ``cell.forward(x, state, lengths=..., ...)`` for a supported cell.

    ``x`` is batch-first (B, T, I); returns ``(y, LSTMState(h_n, c_n))`` like the cell.
    """
    B, T, _ = x.shape
    H, ln = cell.hidden_size, isinstance(cell, LayerNormLSTMCell)
    b = fc.batching(lengths, B, T)
    keep = fc.zoneout_keep(zoneout, T, 2, B, H, x, zoneout_expected, b.order)
    (w_ih, bias, ln_ih, w_hh, ln_hh), prep = prepared(cell, lambda: _gate_params(cell, ln))
    peep = None
    if not ln and cell.peephole:
        peep = torch.stack([cell.weight_ci, cell.weight_cf, cell.weight_co])
    lnc = (cell.ln_c_weight, cell.ln_c_bias) if ln else (None, None)
    xt = b.rows(x).transpose(0, 1).contiguous()  # (T, B, I)
    ys, h_n, c_n = _LSTMFn.apply(xt, w_ih, bias, ln_ih, b.rows(state.h), b.rows(state.c), w_hh, ln_hh, *lnc,
                                 peep, b.rows(recurrent_mask), keep, b, prep)
    y, (h_n, c_n) = fc.finish(b, ys, [h_n, c_n])
    return y, LSTMState(h_n, c_n)
