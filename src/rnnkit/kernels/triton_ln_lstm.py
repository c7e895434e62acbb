r"""The layer-norm LSTM's per-step row passes as Triton kernels (GPU), driven like the C++ loops.

:mod:`rnnkit.kernels.fused_lstm` runs a layer-norm LSTM as chunks of steps; on the CPU the step loops of
a chunk are the C++ ops of ``csrc/ln_lstm.cpp``. This module gives the same two operations,
``ln_lstm_fwd_chunk`` and ``ln_lstm_bwd_chunk`` (same arguments, same buffers, same meaning), for
tensors on a GPU: per step one GEMM by torch (cuBLAS) and one Triton kernel launch over the running
rows, one program per row. The forward program does what the C++ row pass does — the hidden side's
layer norm over the 4H gate pre-activations, the gates' sigmoid/tanh, the cell update, the cell's layer
norm and the output — instead of ~20 separate kernels per step; the backward program the matching
row pass (no transcendental function: products of the saved values), and accumulates its row's share
of the three gains' gradients in a per-row buffer (no atomics; summed over rows in float64 at the end
of the chunk).

``tanh`` is written out in the forward kernel (``expm1`` by Kahan's ``(u - 1) x / log u``, then
``expm1(2x) / (expm1(2x) + 2)``) because Triton's interpreter has no libdevice and the layer norm needs a
tanh whose error stays relative near 0 (docs/performance.md, Numerics).

Selected like the Triton scan (:func:`rnnkit.kernels.triton_scan.wanted`, ``RNNKIT_TRITON``): CUDA
float32/float64 tensors when triton is importable; ``RNNKIT_TRITON=force`` with
``TRITON_INTERPRET=1`` runs them on CPU tensors, which is how the tests check them without a GPU. Measured
on an H200 (benchmarks/gpu.py): values and gradients equal the float64 reference within 4e-5 in float32
and 1e-13 in float64; the training step is bound by the per-step launches (docs/performance.md, GPU rows).
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import torch
from torch import Tensor

from rnnkit.kernels import triton_scan

__all__ = ["ops", "wanted"]


def wanted(x: Tensor) -> bool:
    """Whether a layer-norm LSTM on ``x`` runs its step loops here (``RNNKIT_TRITON``, as for the scan)."""
    return triton_scan.wanted(x)


def _block(n: int) -> int:
    return max(16, 1 << (max(n, 1) - 1).bit_length())


@lru_cache(maxsize=2)
def _kernels(interpret: bool):
    """``(forward row pass, backward row pass)``; keyed on the interpreter setting, as the scan's."""
    import triton
    import triton.language as tl

    @triton.jit
    def fwd_row(xa_ptr, hp_ptr, lw_ptr, cw_ptr, cb_ptr, c0_ptr, c1_ptr, act_ptr, tc_ptr, y_ptr, st_ptr, cst_ptr,
                H, eps_ptr, BLOCK: tl.constexpr):
        r = tl.program_id(0).to(tl.int64)
        eps = tl.load(eps_ptr)  # in the data's dtype: a float argument would be float32 (off by 1e-9 in float64)
        k = tl.arange(0, BLOCK)
        m = k < H
        G = 4 * H
        base = r * G
        # the hidden side's layer norm over the row's 4H values: pre = LN(W_hh h) * w + (x side)
        x0 = tl.load(hp_ptr + base + k, mask=m, other=0.0)
        x1 = tl.load(hp_ptr + base + H + k, mask=m, other=0.0)
        x2 = tl.load(hp_ptr + base + 2 * H + k, mask=m, other=0.0)
        x3 = tl.load(hp_ptr + base + 3 * H + k, mask=m, other=0.0)
        mean = (tl.sum(x0, 0) + tl.sum(x1, 0) + tl.sum(x2, 0) + tl.sum(x3, 0)) / G
        d0 = tl.where(m, x0 - mean, 0.0)
        d1 = tl.where(m, x1 - mean, 0.0)
        d2 = tl.where(m, x2 - mean, 0.0)
        d3 = tl.where(m, x3 - mean, 0.0)
        var = (tl.sum(d0 * d0, 0) + tl.sum(d1 * d1, 0) + tl.sum(d2 * d2, 0) + tl.sum(d3 * d3, 0)) / G
        rs = 1.0 / tl.sqrt(var + eps)
        pg = d0 * rs * tl.load(lw_ptr + k, mask=m, other=0.0) + tl.load(xa_ptr + base + k, mask=m, other=0.0)
        # tanh written out (no libdevice in the interpreter), relative near 0: expm1(y) by Kahan's
        # (u - 1) y / log u, then tanh(a) = expm1(2a) / (expm1(2a) + 2); tanh(20) is 1 in float64 too
        ya = 2.0 * tl.minimum(tl.abs(pg), 20.0)
        ua = tl.exp(ya)
        ea = tl.where(ua == 1.0, ya, (ua - 1.0) * ya / tl.log(tl.where(ua == 1.0, 2.0, ua)))
        g = tl.where(pg < 0, -(ea / (ea + 2.0)), ea / (ea + 2.0))
        i = tl.sigmoid(d1 * rs * tl.load(lw_ptr + H + k, mask=m, other=0.0)
                       + tl.load(xa_ptr + base + H + k, mask=m, other=0.0))
        f = tl.sigmoid(d2 * rs * tl.load(lw_ptr + 2 * H + k, mask=m, other=0.0)
                       + tl.load(xa_ptr + base + 2 * H + k, mask=m, other=0.0))
        o = tl.sigmoid(d3 * rs * tl.load(lw_ptr + 3 * H + k, mask=m, other=0.0)
                       + tl.load(xa_ptr + base + 3 * H + k, mask=m, other=0.0))
        tl.store(act_ptr + base + k, g, mask=m)
        tl.store(act_ptr + base + H + k, i, mask=m)
        tl.store(act_ptr + base + 2 * H + k, f, mask=m)
        tl.store(act_ptr + base + 3 * H + k, o, mask=m)
        # c_t = f c_{t-1} + i g, its layer norm, h_t = o tanh(LN_c(c_t))
        c0 = tl.load(c0_ptr + r * H + k, mask=m, other=0.0)
        c1 = tl.where(m, f * c0 + i * g, 0.0)
        tl.store(c1_ptr + r * H + k, c1, mask=m)
        mc = tl.sum(c1, 0) / H
        dc = tl.where(m, c1 - mc, 0.0)
        rc = 1.0 / tl.sqrt(tl.sum(dc * dc, 0) / H + eps)
        pu = dc * rc * tl.load(cw_ptr + k, mask=m, other=0.0) + tl.load(cb_ptr + k, mask=m, other=0.0)
        yu = 2.0 * tl.minimum(tl.abs(pu), 20.0)
        uu = tl.exp(yu)
        eu = tl.where(uu == 1.0, yu, (uu - 1.0) * yu / tl.log(tl.where(uu == 1.0, 2.0, uu)))
        u = tl.where(pu < 0, -(eu / (eu + 2.0)), eu / (eu + 2.0))
        tl.store(tc_ptr + r * H + k, u, mask=m)
        tl.store(y_ptr + r * H + k, o * u, mask=m)
        tl.store(st_ptr + 2 * r, mean)
        tl.store(st_ptr + 2 * r + 1, rs)
        tl.store(cst_ptr + 2 * r, mc)
        tl.store(cst_ptr + 2 * r + 1, rc)

    @triton.jit
    def bwd_row(act_ptr, tc_ptr, c0_ptr, c1_ptr, hp_ptr, st_ptr, cst_ptr, lw_ptr, cw_ptr, dh_ptr, dc_ptr,
                dpre_ptr, dhp_ptr, part_ptr, H, BLOCK: tl.constexpr):
        r = tl.program_id(0).to(tl.int64)
        k = tl.arange(0, BLOCK)
        m = k < H
        G = 4 * H
        base = r * G
        pbase = r * (G + 2 * H)  # this row's partial sums: gains of the hidden side's norm, then c's w, b
        g = tl.load(act_ptr + base + k, mask=m, other=0.0)
        i = tl.load(act_ptr + base + H + k, mask=m, other=0.0)
        f = tl.load(act_ptr + base + 2 * H + k, mask=m, other=0.0)
        o = tl.load(act_ptr + base + 3 * H + k, mask=m, other=0.0)
        tk = tl.load(tc_ptr + r * H + k, mask=m, other=0.0)
        d = tl.load(dh_ptr + r * H + k, mask=m, other=0.0)
        c0 = tl.load(c0_ptr + r * H + k, mask=m, other=0.0)
        c1 = tl.load(c1_ptr + r * H + k, mask=m, other=0.0)
        # output gate; u = LN_c(c_t) and its norm's backward
        dpo = d * tk * o * (1.0 - o)
        du = d * o * (1.0 - tk * tk)
        mc = tl.load(cst_ptr + 2 * r)
        rc = tl.load(cst_ptr + 2 * r + 1)
        xc = tl.where(m, (c1 - mc) * rc, 0.0)
        dxc = du * tl.load(cw_ptr + k, mask=m, other=0.0)
        pw = part_ptr + pbase + G + k
        tl.store(pw, tl.load(pw, mask=m, other=0.0) + du * xc, mask=m)
        pb = part_ptr + pbase + G + H + k
        tl.store(pb, tl.load(pb, mask=m, other=0.0) + du, mask=m)
        a1 = tl.sum(dxc, 0) / H
        a2 = tl.sum(dxc * xc, 0) / H
        dct = tl.where(m, rc * (dxc - a1 - xc * a2) + tl.load(dc_ptr + r * H + k, mask=m, other=0.0), 0.0)
        dpg = dct * i * (1.0 - g * g)
        dpi = dct * g * i * (1.0 - i)
        dpf = dct * c0 * f * (1.0 - f)
        tl.store(dc_ptr + r * H + k, dct * f, mask=m)  # dc_{t-1}
        tl.store(dpre_ptr + base + k, dpg, mask=m)
        tl.store(dpre_ptr + base + H + k, dpi, mask=m)
        tl.store(dpre_ptr + base + 2 * H + k, dpf, mask=m)
        tl.store(dpre_ptr + base + 3 * H + k, dpo, mask=m)
        # the hidden side's norm (gain only), backward
        mean = tl.load(st_ptr + 2 * r)
        rs = tl.load(st_ptr + 2 * r + 1)
        xh0 = tl.where(m, (tl.load(hp_ptr + base + k, mask=m, other=0.0) - mean) * rs, 0.0)
        xh1 = tl.where(m, (tl.load(hp_ptr + base + H + k, mask=m, other=0.0) - mean) * rs, 0.0)
        xh2 = tl.where(m, (tl.load(hp_ptr + base + 2 * H + k, mask=m, other=0.0) - mean) * rs, 0.0)
        xh3 = tl.where(m, (tl.load(hp_ptr + base + 3 * H + k, mask=m, other=0.0) - mean) * rs, 0.0)
        dx0 = dpg * tl.load(lw_ptr + k, mask=m, other=0.0)
        dx1 = dpi * tl.load(lw_ptr + H + k, mask=m, other=0.0)
        dx2 = dpf * tl.load(lw_ptr + 2 * H + k, mask=m, other=0.0)
        dx3 = dpo * tl.load(lw_ptr + 3 * H + k, mask=m, other=0.0)
        pg = part_ptr + pbase + k
        tl.store(pg, tl.load(pg, mask=m, other=0.0) + dpg * xh0, mask=m)
        tl.store(pg + H, tl.load(pg + H, mask=m, other=0.0) + dpi * xh1, mask=m)
        tl.store(pg + 2 * H, tl.load(pg + 2 * H, mask=m, other=0.0) + dpf * xh2, mask=m)
        tl.store(pg + 3 * H, tl.load(pg + 3 * H, mask=m, other=0.0) + dpo * xh3, mask=m)
        b1 = (tl.sum(dx0, 0) + tl.sum(dx1, 0) + tl.sum(dx2, 0) + tl.sum(dx3, 0)) / G
        b2 = (tl.sum(dx0 * xh0, 0) + tl.sum(dx1 * xh1, 0) + tl.sum(dx2 * xh2, 0) + tl.sum(dx3 * xh3, 0)) / G
        tl.store(dhp_ptr + base + k, rs * (dx0 - b1 - xh0 * b2), mask=m)
        tl.store(dhp_ptr + base + H + k, rs * (dx1 - b1 - xh1 * b2), mask=m)
        tl.store(dhp_ptr + base + 2 * H + k, rs * (dx2 - b1 - xh2 * b2), mask=m)
        tl.store(dhp_ptr + base + 3 * H + k, rs * (dx3 - b1 - xh3 * b2), mask=m)

    return fwd_row, bwd_row


def _no_zoneout(keep) -> None:
    if keep is not None:
        raise NotImplementedError("the Triton layer-norm LSTM rows do not compute zoneout (the Python loops do)")


def ln_lstm_fwd_chunk(xa, h0, w_t, ln_w, lnc_w, lnc_b, eps, sizes, mask, hin, ys, cs, act, tc, hp, stats, cstats,
                      keep=None, cn=None, packed=None):
    """A chunk of forward steps; the C++ op's contract (``csrc/ln_lstm.cpp``): step ``t`` computes the
    running prefix of ``sizes[t]`` rows; ``mask`` (recurrent dropout) multiplies ``h_{t-1}``. Zoneout
    (``keep``, ``cn``) is not computed here: the caller keeps the Python loops for it. ``packed`` (a
    oneDNN weight, CPU only) is not used on a GPU."""
    _no_zoneout(keep)
    fwd, _ = _kernels(triton_scan._interpreting())
    H = h0.shape[1]
    eps_t = xa.new_full((1,), eps)
    for t in range(xa.shape[0]):
        n = sizes[t]
        if n == 0:
            continue
        h_prev = (h0 if t == 0 else ys[t - 1])[:n]
        if mask is not None:
            h_prev = torch.mul(h_prev, mask[:n], out=hin[t, :n])
        torch.mm(h_prev, w_t, out=hp[t, :n])
        fwd[(n,)](xa[t], hp[t], ln_w, lnc_w, lnc_b, cs[t], cs[t + 1], act[t], tc[t], ys[t], stats[t], cstats[t],
                  H, eps_t, BLOCK=_block(H))


def ln_lstm_bwd_chunk(act, tc, cs, hp, stats, cstats, ln_w, lnc_w, w_hh, d_ys, d_prev, d_hn, d_cn, sizes, arrived,
                      mask, need_first, dh, dc, dpre, dhp, dgam, dgcw, dgcb, keep=None, cn=None, packed=None):
    """A chunk of backward steps, in reverse; the C++ op's contract: ``dh``/``dc`` carry the state
    gradients of the rows that have arrived (a row arrives at its last step); the gains' gradients are
    added to the float64 ``dgam``, ``dgcw``, ``dgcb``."""
    _no_zoneout(keep)
    _, bwd = _kernels(triton_scan._interpreting())
    C, B, G = act.shape
    H = G // 4
    part = act.new_zeros(B, G + 2 * H)  # per-row partial sums of the gains' gradients
    for j in range(C - 1, -1, -1):
        n = sizes[j]
        if n == 0:
            continue
        if n > arrived:  # rows whose last step this is
            dh[arrived:n] = d_hn[arrived:n] + d_ys[j, arrived:n]
            dc[arrived:n] = d_cn[arrived:n]
            arrived = n
        bwd[(n,)](act[j], tc[j], cs[j], cs[j + 1], hp[j], stats[j], cstats[j], ln_w, lnc_w, dh, dc, dpre[j],
                  dhp[j], part, H, BLOCK=_block(H))
        if j > 0 or need_first:  # dh_{t-1} = (dhp W_hh) m + dy_{t-1}
            out = dh[:n]
            torch.mm(dhp[j, :n], w_hh, out=out)
            if mask is not None:
                out.mul_(mask[:n])
            if j > 0:
                out.add_(d_ys[j - 1, :n])
            elif d_prev is not None:
                out.add_(d_prev[:n])
    sums = part.to(torch.float64).sum(0)
    dgam += sums[:G]
    dgcw += sums[G:G + H]
    dgcb += sums[G + H:]


def ops() -> SimpleNamespace:
    """The two chunk operations, in the shape of ``torch.ops.rnnkit_cpp`` (what fused_lstm calls)."""
    return SimpleNamespace(ln_lstm_fwd_chunk=ln_lstm_fwd_chunk, ln_lstm_bwd_chunk=ln_lstm_bwd_chunk)
