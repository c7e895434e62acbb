r"""The layer-norm GRU's per-step row passes as Triton kernels (GPU), driven like the LSTM's.

:mod:`rnnkit.kernels.fused_gru` runs a GRU as chunks of steps. For a layer-norm GRU on a GPU this
module gives the step loops of a chunk, ``ln_gru_fwd_chunk`` and ``ln_gru_bwd_chunk``: per step one
GEMM by torch (cuBLAS) and one Triton launch over the running rows, one program per row, instead of
the ~10 (forward) and ~8 (backward) separate kernels of the device-agnostic Python step. Everything
else — the input side of a chunk as one GEMM and its norm, the backward's per-chunk factors, the weight
gradients as one GEMM per chunk — stays as in the Python loops, so both paths share their buffers and
their meaning (:mod:`rnnkit.kernels.fused_gru`'s module doc has the equations and the ``n`` blocks'
scaling by 2).

* Forward row pass: the hidden side's layer norm over the row's 3H values ``W_hh h_{t-1}`` (gain and
  bias), the gates ``r, z = \sigma(\cdot)``, the candidate ``n = 2\sigma(2a) - 1`` (as the CPU path
  computes it), ``h_t = n + z (h_{t-1} - n)`` and zoneout's ``h_t + k (h_{t-1} - h_t)``; it keeps the
  gates, the candidate's recurrent side and the row's mean and ``1/std`` for the backward.
* Backward row pass: from ``dh`` and the chunk's factors, the input side's gradient, the norm's
  backward (the row's share of the gain's and bias' gradients into a per-row buffer: no atomics;
  summed over rows in float64 at the end of the chunk), and ``dh \cdot \partial h_t/\partial h_{t-1}``
  plus the previous step's output gradient, to which torch adds ``dhp\, W_{hh}``.

Selected as the LSTM's row passes are (:func:`wanted`). Measured on an H200 (benchmarks/gpu.py): values
and gradients equal the float64 reference within 1e-6 in float32 and 3e-15 in float64; the training step
is bound by the per-step launches (docs/performance.md, GPU rows).
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import torch

from rnnkit.kernels import triton_scan
from rnnkit.kernels.triton_ln_lstm import _block, wanted  # the same rule: RNNKIT_TRITON, as for the scan

__all__ = ["ops", "wanted"]


@lru_cache(maxsize=2)
def _kernels(interpret: bool):
    """``(forward row pass, backward row pass)``; keyed on the interpreter setting, as the scan's."""
    import triton
    import triton.language as tl

    @triton.jit
    def fwd_row(xa_ptr, hp_ptr, lw_ptr, lb_ptr, hprev_ptr, keep_ptr, act_ptr, ahn_ptr, y_ptr, st_ptr, H, eps_ptr,
                HAS_BIAS: tl.constexpr, HAS_KEEP: tl.constexpr, BLOCK: tl.constexpr):
        r = tl.program_id(0).to(tl.int64)
        eps = tl.load(eps_ptr)  # in the data's dtype: a float argument would be float32 (off by 1e-11 in float64)
        k = tl.arange(0, BLOCK)
        m = k < H
        G = 3 * H
        base = r * G
        # the hidden side's layer norm over the row's 3H values (r, z, n blocks)
        x0 = tl.load(hp_ptr + base + k, mask=m, other=0.0)
        x1 = tl.load(hp_ptr + base + H + k, mask=m, other=0.0)
        x2 = tl.load(hp_ptr + base + 2 * H + k, mask=m, other=0.0)
        mean = (tl.sum(x0, 0) + tl.sum(x1, 0) + tl.sum(x2, 0)) / G
        d0 = tl.where(m, x0 - mean, 0.0)
        d1 = tl.where(m, x1 - mean, 0.0)
        d2 = tl.where(m, x2 - mean, 0.0)
        rs = 1.0 / tl.sqrt((tl.sum(d0 * d0, 0) + tl.sum(d1 * d1, 0) + tl.sum(d2 * d2, 0)) / G + eps)
        a0 = d0 * rs * tl.load(lw_ptr + k, mask=m, other=0.0)
        a1 = d1 * rs * tl.load(lw_ptr + H + k, mask=m, other=0.0)
        a2 = d2 * rs * tl.load(lw_ptr + 2 * H + k, mask=m, other=0.0)
        if HAS_BIAS:
            a0 += tl.load(lb_ptr + k, mask=m, other=0.0)
            a1 += tl.load(lb_ptr + H + k, mask=m, other=0.0)
            a2 += tl.load(lb_ptr + 2 * H + k, mask=m, other=0.0)
        tl.store(ahn_ptr + r * H + k, a2, mask=m)
        rg = tl.sigmoid(tl.load(xa_ptr + base + k, mask=m, other=0.0) + a0)
        zg = tl.sigmoid(tl.load(xa_ptr + base + H + k, mask=m, other=0.0) + a1)
        cand = 2.0 * tl.sigmoid(tl.load(xa_ptr + base + 2 * H + k, mask=m, other=0.0) + rg * a2) - 1.0
        tl.store(act_ptr + base + k, rg, mask=m)
        tl.store(act_ptr + base + H + k, zg, mask=m)
        tl.store(act_ptr + base + 2 * H + k, cand, mask=m)
        hp_ = tl.load(hprev_ptr + r * H + k, mask=m, other=0.0)
        h = cand + zg * (hp_ - cand)
        if HAS_KEEP:
            h += tl.load(keep_ptr + r * H + k, mask=m, other=0.0) * (hp_ - h)
        tl.store(y_ptr + r * H + k, h, mask=m)
        tl.store(st_ptr + 2 * r, mean)
        tl.store(st_ptr + 2 * r + 1, rs)

    @triton.jit
    def bwd_row(dh_ptr, fx_ptr, fh_ptr, direct_ptr, other_ptr, hp_ptr, st_ptr, lw_ptr, dxa_ptr, dhp_ptr,
                part_ptr, H, HAS_OTHER: tl.constexpr, BLOCK: tl.constexpr):
        r = tl.program_id(0).to(tl.int64)
        k = tl.arange(0, BLOCK)
        m = k < H
        G = 3 * H
        base = r * G
        pbase = r * (2 * G)  # this row's partial sums: the gain's gradient, then the bias'
        d = tl.load(dh_ptr + r * H + k, mask=m, other=0.0)
        # the input side's gradient and the recurrent side's (before its norm's backward)
        tl.store(dxa_ptr + base + k, d * tl.load(fx_ptr + base + k, mask=m, other=0.0), mask=m)
        tl.store(dxa_ptr + base + H + k, d * tl.load(fx_ptr + base + H + k, mask=m, other=0.0), mask=m)
        tl.store(dxa_ptr + base + 2 * H + k, d * tl.load(fx_ptr + base + 2 * H + k, mask=m, other=0.0), mask=m)
        g0 = d * tl.load(fh_ptr + base + k, mask=m, other=0.0)
        g1 = d * tl.load(fh_ptr + base + H + k, mask=m, other=0.0)
        g2 = d * tl.load(fh_ptr + base + 2 * H + k, mask=m, other=0.0)
        mean = tl.load(st_ptr + 2 * r)
        rs = tl.load(st_ptr + 2 * r + 1)
        xh0 = tl.where(m, (tl.load(hp_ptr + base + k, mask=m, other=0.0) - mean) * rs, 0.0)
        xh1 = tl.where(m, (tl.load(hp_ptr + base + H + k, mask=m, other=0.0) - mean) * rs, 0.0)
        xh2 = tl.where(m, (tl.load(hp_ptr + base + 2 * H + k, mask=m, other=0.0) - mean) * rs, 0.0)
        pw = part_ptr + pbase + k
        tl.store(pw, tl.load(pw, mask=m, other=0.0) + g0 * xh0, mask=m)
        tl.store(pw + H, tl.load(pw + H, mask=m, other=0.0) + g1 * xh1, mask=m)
        tl.store(pw + 2 * H, tl.load(pw + 2 * H, mask=m, other=0.0) + g2 * xh2, mask=m)
        pb = part_ptr + pbase + G + k
        tl.store(pb, tl.load(pb, mask=m, other=0.0) + g0, mask=m)
        tl.store(pb + H, tl.load(pb + H, mask=m, other=0.0) + g1, mask=m)
        tl.store(pb + 2 * H, tl.load(pb + 2 * H, mask=m, other=0.0) + g2, mask=m)
        dx0 = g0 * tl.load(lw_ptr + k, mask=m, other=0.0)
        dx1 = g1 * tl.load(lw_ptr + H + k, mask=m, other=0.0)
        dx2 = g2 * tl.load(lw_ptr + 2 * H + k, mask=m, other=0.0)
        b1 = (tl.sum(dx0, 0) + tl.sum(dx1, 0) + tl.sum(dx2, 0)) / G
        b2 = (tl.sum(dx0 * xh0, 0) + tl.sum(dx1 * xh1, 0) + tl.sum(dx2 * xh2, 0)) / G
        tl.store(dhp_ptr + base + k, rs * (dx0 - b1 - xh0 * b2), mask=m)
        tl.store(dhp_ptr + base + H + k, rs * (dx1 - b1 - xh1 * b2), mask=m)
        tl.store(dhp_ptr + base + 2 * H + k, rs * (dx2 - b1 - xh2 * b2), mask=m)
        # dh_{t-1} without the GEMM's share: dh dh_t/dh_{t-1} (+ the previous step's output gradient)
        nxt = d * tl.load(direct_ptr + r * H + k, mask=m, other=0.0)
        if HAS_OTHER:
            nxt += tl.load(other_ptr + r * H + k, mask=m, other=0.0)
        tl.store(dh_ptr + r * H + k, nxt, mask=m)

    return fwd_row, bwd_row


def ln_gru_fwd_chunk(xa, h0, w_t, ln_w, ln_b, eps, sizes, mask, keep, hin, ys, act, ahn, hp, stats):
    """A chunk of forward steps (``fused_gru``'s Python step, for a layer-norm GRU).

    ``xa`` (c, B, 3H) the chunk's input side; ``h0`` (B, H) the state before the chunk; ``w_t`` (H, 3H)
    the recurrent weight transposed (a view will do); ``ln_b`` the norm's bias or None; step ``t``
    computes the running prefix of ``sizes[t]`` rows; ``mask`` (B, H) multiplies ``h_{t-1}`` (written
    to ``hin``), ``keep`` (c, B, H) is zoneout's keep mask. Writes ``ys``, ``act`` (r, z, n), ``ahn``,
    ``hp`` (``W_hh h_{t-1}`` before the norm) and ``stats`` (c, B, 2: mean, 1/std)."""
    fwd, _ = _kernels(triton_scan._interpreting())
    H = h0.shape[1]
    eps_t = xa.new_full((1,), eps)
    for t in range(xa.shape[0]):
        n = sizes[t]
        if n == 0:
            continue
        h_prev = (h0 if t == 0 else ys[t - 1])[:n]
        hh = h_prev if mask is None else torch.mul(h_prev, mask[:n], out=hin[t, :n])
        torch.mm(hh, w_t, out=hp[t, :n])
        fwd[(n,)](xa[t], hp[t], ln_w, ln_w if ln_b is None else ln_b, h_prev, h_prev if keep is None else keep[t],
                  act[t], ahn[t], ys[t], stats[t], H, eps_t, HAS_BIAS=ln_b is not None, HAS_KEEP=keep is not None,
                  BLOCK=_block(H))


def ln_gru_bwd_chunk(fx, fh, direct, hp, stats, ln_w, w_hh, d_ys, d_prev, d_hn, sizes, arrived, mask, need_first,
                     dh, dxa, dhp, dgam, dgb):
    """A chunk of backward steps, in reverse.

    ``fx``, ``fh`` (c, B, 3, H) and ``direct`` (c, B, H) are the chunk's factors (``dh`` -> the input
    and recurrent sides' gradients, ``dh`` -> ``dh_{t-1}``); ``dh`` (B, H) carries the state gradients
    of the rows that have arrived (``arrived`` of them; a row arrives at its last step with ``d_hn`` plus
    its output gradient) and leaves with ``dh_{t-1}`` of the chunk's first step where ``need_first``.
    Writes ``dxa`` and ``dhp`` (c, B, 3H); adds the norm's gain and bias gradients to the float64
    ``dgam``, ``dgb``."""
    _, bwd = _kernels(triton_scan._interpreting())
    C, B, _, H = fx.shape
    part = fx.new_zeros(B, 6 * H)  # per-row partial sums of the gain's and the bias' gradients
    for j in range(C - 1, -1, -1):
        n = sizes[j]
        if n == 0:
            continue
        if n > arrived:  # rows whose last step this is
            dh[arrived:n] = d_hn[arrived:n] + d_ys[j, arrived:n]
            arrived = n
        other = d_ys[j - 1] if j > 0 else d_prev
        bwd[(n,)](dh, fx[j], fh[j], direct[j], dh if other is None else other, hp[j], stats[j], ln_w, dxa[j],
                  dhp[j], part, H, HAS_OTHER=other is not None, BLOCK=_block(H))
        if j > 0 or need_first:  # dh_{t-1} = (dhp W_hh) m + dh dh_t/dh_{t-1} + dy_{t-1}
            if mask is None:
                dh[:n].addmm_(dhp[j, :n], w_hh)
            else:
                dh[:n].addcmul_(torch.mm(dhp[j, :n], w_hh), mask[:n])
    sums = part.to(torch.float64).sum(0)
    dgam += sums[:3 * H]
    dgb += sums[3 * H:]


def ops() -> SimpleNamespace:
    """The two chunk operations (what fused_gru calls; a namespace, so that tests can record the calls)."""
    return SimpleNamespace(ln_gru_fwd_chunk=ln_gru_fwd_chunk, ln_gru_bwd_chunk=ln_gru_bwd_chunk)
