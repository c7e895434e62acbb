r"""The MinGRU/MinLSTM recurrence :math:`h_t = a_t \odot h_{t-1} + b_t` as Triton kernels (CUDA).

Two ways through a sequence, on a grid of (batch row, block of :data:`BLOCK_H` hidden units[, chunk]):

* **sequential** (``T <`` :data:`CHUNKED_MIN_T`): one program per (row, block) keeps its block of ``h`` in
  registers and walks time in order, one load of ``a_t``, ``b_t`` and one store of ``h_t`` per step; the
  backward is the same loop run backwards on the gradients:

  .. math::

      \lambda_t = \bar y_t + a_{t+1} \lambda_{t+1}, \qquad \bar a_t = \lambda_t h_{t-1}, \qquad
      \bar b_t = \lambda_t, \qquad \bar h_0 = a_1 \lambda_1

  in a single pass that writes :math:`\bar a` and :math:`\bar b` as it goes (``h`` is saved by the forward).
* **chunked** (longer sequences): with few rows the sequential pass leaves a GPU nearly idle (B=8, H=256:
  64 programs, each bound by one load's latency per step for 4096 steps). Time is cut into chunks of
  about ``sqrt(T)`` steps (:func:`chunk_length`) and three passes run: each chunk's product of ``a`` and its
  end value from a zero start (all chunks at once), the state entering each chunk (one short walk over
  the chunks), and each chunk's steps again from that state, writing ``h``. ``a`` and ``b`` are read
  twice, ``h`` written once; the sequential work per program is about ``3 sqrt(T)`` steps. The backward
  is the same scan from the end with coefficients ``a_{t+1}``. For MinGRU the gate math is inside these
  kernels (they read the projected input ``[k | hh]``, form ``a = sigmoid(-k)``, ``b = sigmoid(k) g(hh)``,
  and the backward writes the projected input's gradient), so a training step is about 20 kernel
  launches instead of 42; MinLSTM's gates stay in torch around the generic chunked scan.

Measured on an H200 (benchmarks/gpu.py, docs/performance.md): MinGRU at B=8 T=4096 I=64 H=256, forward
and backward, 0.015x cuDNN's GRU in two runs (2.1-2.5 ms against 139-164 ms); the sequential pass
0.030-0.034x, the chunked scan with the gates in torch 0.017-0.020x. Outside the MinGRU kernels the gate math (coefficients from the
projected input) is torch, differentiated by autograd, in the real-space form of
:mod:`rnnkit.kernels.fused_min`.

float32 and float64 (accumulated in the input dtype). The scan backend
(:func:`rnnkit.kernels.dispatch.run_scan`) takes this path when :func:`wanted` says so: by default for
CUDA tensors when ``triton`` is importable. ``RNNKIT_TRITON=0`` turns it off; ``RNNKIT_TRITON=force``
takes it for any device, which on CPU tensors needs Triton's interpreter (``TRITON_INTERPRET=1``) —
that is how the tests run it without a GPU. ``triton`` is imported only when a kernel is first needed,
so the package imports without it (install it with ``pip install 'rnnkit[gpu]'``).
"""

from __future__ import annotations

import importlib.util
import math
import os
from functools import lru_cache

import torch

from rnnkit.kernels._capture import refuse_double_backward
from torch import Tensor
from torch.nn import functional as F

from rnnkit.cells.minimal import MinGRUCell, _mask_by_lengths, g

__all__ = ["available", "wanted", "linear_scan", "min_sequence", "DTYPES", "BLOCK_H"]

DTYPES = (torch.float32, torch.float64)
BLOCK_H = 32  # hidden units per program: one warp, one unit a lane (not tuned)
_TRUE = ("1", "true", "on", "yes")
# from this many steps on, the chunked kernels (three passes over chunks of ~sqrt(T) steps, B*H/BLOCK_H*T/chunk
# programs) instead of one sequential pass per (row, block): with few rows a sequential pass leaves most of a
# GPU idle and is bound by one load's latency per step
CHUNKED_MIN_T = 256
# MinGRU on the chunked path computes its gates inside the scan kernels (False: in torch, around the
# generic chunked scan; for comparison in benchmarks/gpu.py)
FUSED_MINGRU = True


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether ``triton`` can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE


def _mode() -> str:
    mode = os.environ.get("RNNKIT_TRITON", "1").strip().lower() or "1"
    if mode in _TRUE:
        return "auto"
    if mode in ("0", "false", "off", "no"):
        return "off"
    if mode == "force":
        return "force"
    raise ValueError(f"RNNKIT_TRITON must be 0, 1 or force, got {mode!r}")


def wanted(x: Tensor) -> bool:
    """Whether the scan backend runs ``x`` through the Triton kernels (read from ``RNNKIT_TRITON`` per call).

    Unset or ``1``: CUDA float32/float64 tensors when triton is importable, outside autocast (there the
    coefficients would be float16; the chunked scan keeps its float32 path). ``0``: never. ``force``:
    always, with a clear error where it cannot run (no triton, other dtype, CPU without the interpreter).
    """
    mode = _mode()
    if mode == "off":
        return False
    if mode == "auto":
        return x.is_cuda and x.dtype in DTYPES and not torch.is_autocast_enabled("cuda") and available()
    if not available():
        raise RuntimeError("RNNKIT_TRITON=force, but triton is not installed: pip install 'rnnkit[gpu]'")
    if x.dtype not in DTYPES:
        raise TypeError(f"RNNKIT_TRITON=force: the Triton scan takes float32 or float64, got {x.dtype}")
    if not x.is_cuda and not _interpreting():
        raise RuntimeError(f"RNNKIT_TRITON=force on a {x.device.type} tensor needs Triton's interpreter: "
                           "set TRITON_INTERPRET=1")
    return True


@lru_cache(maxsize=2)
def _kernels(interpret: bool):
    """``(forward, backward)`` kernels, built on first use; ``triton.jit`` reads ``TRITON_INTERPRET`` when
    it decorates, so the cache is keyed on it."""
    import triton
    import triton.language as tl

    @triton.jit
    def scan_fwd(a_ptr, b_ptr, h0_ptr, h_ptr, T, H, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < H
        h = tl.load(h0_ptr + row * H + cols, mask=mask, other=0.0)
        off = row * T * H + cols  # int64: (B, T, H) contiguous
        for _ in range(T):
            a = tl.load(a_ptr + off, mask=mask, other=0.0)
            b = tl.load(b_ptr + off, mask=mask, other=0.0)
            h = a * h + b
            tl.store(h_ptr + off, h, mask=mask)
            off += H

    @triton.jit
    def scan_bwd(a_ptr, h_ptr, h0_ptr, gy_ptr, da_ptr, db_ptr, dh0_ptr, T, H, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < H
        h0 = tl.load(h0_ptr + row * H + cols, mask=mask, other=0.0)
        lam = tl.full([BLOCK], 0.0, dtype=h0.dtype)  # builtins only: tl.zeros is itself a jit function
        a_next = lam + 1.0  # a_{t+1}, one past the end
        off = row * T * H + (T - 1) * H + cols
        for _ in range(T - 1):  # t = T-1 down to 1; h_{t-1} is in h
            lam = tl.load(gy_ptr + off, mask=mask, other=0.0) + a_next * lam
            a_next = tl.load(a_ptr + off, mask=mask, other=0.0)
            h_prev = tl.load(h_ptr + off - H, mask=mask, other=0.0)
            tl.store(db_ptr + off, lam, mask=mask)
            tl.store(da_ptr + off, lam * h_prev, mask=mask)
            off -= H
        lam = tl.load(gy_ptr + off, mask=mask, other=0.0) + a_next * lam  # t = 0: h_{-1} is h0
        a0 = tl.load(a_ptr + off, mask=mask, other=0.0)
        tl.store(db_ptr + off, lam, mask=mask)
        tl.store(da_ptr + off, lam * h0, mask=mask)
        tl.store(dh0_ptr + row * H + cols, a0 * lam, mask=mask)

    @triton.jit
    def chunk_summary(a_ptr, b_ptr, p_ptr, e_ptr, T, H, NC, CHUNK, BLOCK: tl.constexpr, REVERSE: tl.constexpr):
        # chunk c of (row, column block): P = prod a_t, E = the chunk's end value from a zero start
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        c = tl.program_id(2).to(tl.int64)
        mask = cols < H
        e = tl.full([BLOCK], 0.0, dtype=a_ptr.dtype.element_ty)
        p = e + 1.0
        for i in range(CHUNK):
            if REVERSE:
                t = c * CHUNK + (CHUNK - 1 - i)
            else:
                t = c * CHUNK + i
            m = cols < tl.where(t < T, H, 0)  # the block's columns, none past the end
            off = row * T * H + t * H + cols
            a = tl.load(a_ptr + off, mask=m, other=1.0)
            e = a * e + tl.load(b_ptr + off, mask=m, other=0.0)
            p = p * a
        tl.store(p_ptr + (row * NC + c) * H + cols, p, mask=mask)
        tl.store(e_ptr + (row * NC + c) * H + cols, e, mask=mask)

    @triton.jit
    def chunk_carry(p_ptr, e_ptr, h0_ptr, carry_ptr, H, NC, BLOCK: tl.constexpr, REVERSE: tl.constexpr):
        # the state entering each chunk, chunk by chunk: carry_{c+1} = P_c carry_c + E_c
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < H
        h = tl.load(h0_ptr + row * H + cols, mask=mask, other=0.0)
        for i in range(NC):
            if REVERSE:
                c = NC - 1 - i
            else:
                c = i
            off = (row * NC + c) * H + cols
            tl.store(carry_ptr + off, h, mask=mask)
            h = tl.load(p_ptr + off, mask=mask, other=0.0) * h + tl.load(e_ptr + off, mask=mask, other=0.0)

    @triton.jit
    def chunk_apply(a_ptr, b_ptr, carry_ptr, h_ptr, T, H, NC, CHUNK, BLOCK: tl.constexpr, REVERSE: tl.constexpr):
        # the chunk's steps again, from the state that enters it, writing h_t
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        c = tl.program_id(2).to(tl.int64)
        mask = cols < H
        h = tl.load(carry_ptr + (row * NC + c) * H + cols, mask=mask, other=0.0)
        for i in range(CHUNK):
            if REVERSE:
                t = c * CHUNK + (CHUNK - 1 - i)
            else:
                t = c * CHUNK + i
            m = cols < tl.where(t < T, H, 0)  # the block's columns, none past the end
            off = row * T * H + t * H + cols
            h = tl.load(a_ptr + off, mask=m, other=1.0) * h + tl.load(b_ptr + off, mask=m, other=0.0)
            tl.store(h_ptr + off, h, mask=m)

    # (sigmoid written out: tl.sigmoid is a jit function of triton's standard library, which the interpreter
    # runs only if TRITON_INTERPRET was set before triton was first imported)
    # MinGRU with its gate math inside the chunked passes: from the projected input xp = [k | hh] (B, T, 2H),
    # z = sigmoid(k), a = 1 - z = sigmoid(-k), b = z g(hh), g(u) = u + 1/2 (u >= 0) or sigmoid(u). The
    # coefficients never reach memory, and the backward writes d xp directly.
    @triton.jit
    def gru_summary(xp_ptr, p_ptr, e_ptr, T, H, NC, CHUNK, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        c = tl.program_id(2).to(tl.int64)
        mask = cols < H
        e = tl.full([BLOCK], 0.0, dtype=xp_ptr.dtype.element_ty)
        p = e + 1.0
        for i in range(CHUNK):
            t = c * CHUNK + i
            m = cols < tl.where(t < T, H, 0)
            off = row * T * 2 * H + t * 2 * H + cols
            k = tl.load(xp_ptr + off, mask=m, other=0.0)
            u = tl.load(xp_ptr + off + H, mask=m, other=0.0)
            gu = tl.where(u >= 0, u + 0.5, (1.0 / (1.0 + tl.exp(-u))))
            a = tl.where(m, (1.0 / (1.0 + tl.exp(k))), 1.0)
            e = a * e + tl.where(m, (1.0 / (1.0 + tl.exp(-k))) * gu, 0.0)
            p = p * a
        tl.store(p_ptr + (row * NC + c) * H + cols, p, mask=mask)
        tl.store(e_ptr + (row * NC + c) * H + cols, e, mask=mask)

    @triton.jit
    def gru_apply(xp_ptr, carry_ptr, h_ptr, T, H, NC, CHUNK, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        c = tl.program_id(2).to(tl.int64)
        mask = cols < H
        h = tl.load(carry_ptr + (row * NC + c) * H + cols, mask=mask, other=0.0)
        for i in range(CHUNK):
            t = c * CHUNK + i
            m = cols < tl.where(t < T, H, 0)
            off = row * T * 2 * H + t * 2 * H + cols
            k = tl.load(xp_ptr + off, mask=m, other=0.0)
            u = tl.load(xp_ptr + off + H, mask=m, other=0.0)
            gu = tl.where(u >= 0, u + 0.5, (1.0 / (1.0 + tl.exp(-u))))
            h = (1.0 / (1.0 + tl.exp(k))) * h + (1.0 / (1.0 + tl.exp(-k))) * gu
            tl.store(h_ptr + row * T * H + t * H + cols, h, mask=m)

    @triton.jit
    def gru_back_summary(xp_ptr, gy_ptr, p_ptr, e_ptr, T, H, NC, CHUNK, BLOCK: tl.constexpr):
        # lambda_t = dy_t + a_{t+1} lambda_{t+1}, from the end: the chunk's product of a_{t+1} and end value
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        c = tl.program_id(2).to(tl.int64)
        mask = cols < H
        e = tl.full([BLOCK], 0.0, dtype=xp_ptr.dtype.element_ty)
        p = e + 1.0
        for i in range(CHUNK):
            t = c * CHUNK + (CHUNK - 1 - i)
            m = cols < tl.where(t < T, H, 0)
            mn = cols < tl.where(t + 1 < T, H, 0)
            kn = tl.load(xp_ptr + row * T * 2 * H + (t + 1) * 2 * H + cols, mask=mn, other=0.0)
            a = tl.where(mn, (1.0 / (1.0 + tl.exp(kn))), 1.0)
            e = a * e + tl.load(gy_ptr + row * T * H + t * H + cols, mask=m, other=0.0)
            p = p * a
        tl.store(p_ptr + (row * NC + c) * H + cols, p, mask=mask)
        tl.store(e_ptr + (row * NC + c) * H + cols, e, mask=mask)

    @triton.jit
    def gru_back_apply(xp_ptr, gy_ptr, h_ptr, h0_ptr, carry_ptr, dxp_ptr, dh0_ptr, T, H, NC, CHUNK,
                       BLOCK: tl.constexpr):
        # lambda_t again from the state entering the chunk (from the right), then d k_t, d hh_t and d h0
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        c = tl.program_id(2).to(tl.int64)
        mask = cols < H
        lam = tl.load(carry_ptr + (row * NC + c) * H + cols, mask=mask, other=0.0)
        a = lam * 0.0
        for i in range(CHUNK):
            t = c * CHUNK + (CHUNK - 1 - i)
            m = cols < tl.where(t < T, H, 0)
            mn = cols < tl.where(t + 1 < T, H, 0)
            kn = tl.load(xp_ptr + row * T * 2 * H + (t + 1) * 2 * H + cols, mask=mn, other=0.0)
            lam = tl.where(mn, (1.0 / (1.0 + tl.exp(kn))), 1.0) * lam + tl.load(gy_ptr + row * T * H + t * H + cols,
                                                                       mask=m, other=0.0)
            off = row * T * 2 * H + t * 2 * H + cols
            k = tl.load(xp_ptr + off, mask=m, other=0.0)
            u = tl.load(xp_ptr + off + H, mask=m, other=0.0)
            mp = cols < tl.where((t >= 1) & (t < T), H, 0)
            m0 = cols < tl.where(t == 0, H, 0)
            h_prev = tl.load(h_ptr + row * T * H + (t - 1) * H + cols, mask=mp, other=0.0) \
                + tl.load(h0_ptr + row * H + cols, mask=m0, other=0.0)
            z = (1.0 / (1.0 + tl.exp(-k)))
            a = (1.0 / (1.0 + tl.exp(k)))
            su = (1.0 / (1.0 + tl.exp(-u)))
            gu = tl.where(u >= 0, u + 0.5, su)
            dgu = tl.where(u >= 0, 1.0, su * (1.0 - su))
            tl.store(dxp_ptr + off, lam * (gu - h_prev) * z * a, mask=m)  # d k: dz = lambda (g(hh) - h_{t-1})
            tl.store(dxp_ptr + off + H, lam * z * dgu, mask=m)
        m0 = cols < tl.where(c == 0, H, 0)  # the chunk that ends at t = 0: lambda_0 and a_0 are at hand
        tl.store(dh0_ptr + row * H + cols, a * lam, mask=m0)

    return (scan_fwd, scan_bwd, chunk_summary, chunk_carry, chunk_apply, gru_summary, gru_apply, gru_back_summary,
            gru_back_apply)


def chunk_length(T: int) -> int:
    """Steps per chunk of the chunked kernels: about sqrt(T) (a power of two, at least 16), so that the
    sequential work per program, about ``3 sqrt(T)`` steps over the three passes, is smallest."""
    return max(16, 1 << round(math.log2(max(T, 1)) / 2))


def _chunked(a: Tensor, b: Tensor, h0: Tensor, reverse: bool = False) -> Tensor:
    """``h_t = a_t h_{t-1} + b_t`` (``reverse``: ``h_t = a_t h_{t+1} + b_t``, from the end) by the three
    chunked passes: per-chunk products and end values, the states entering the chunks, the chunks' steps."""
    B, T, H = a.shape
    h = torch.empty_like(a)
    if not h.numel():
        return h
    C, NC, P, E, carry, grid, nb = _chunks(a, B, T, H)
    summary, carry_k, apply = _kernels(_interpreting())[2:5]
    summary[grid](a, b, P, E, T, H, NC, C, BLOCK=BLOCK_H, REVERSE=reverse, num_warps=1)
    carry_k[(B, nb)](P, E, h0, carry, H, NC, BLOCK=BLOCK_H, REVERSE=reverse, num_warps=1)
    apply[grid](a, b, carry, h, T, H, NC, C, BLOCK=BLOCK_H, REVERSE=reverse, num_warps=1)
    return h


def _chunks(like: Tensor, B: int, T: int, H: int):
    """The chunked passes' layout for (B, T, H): chunk length ``C``, chunk count ``NC``, the per-chunk
    buffers ``P``, ``E``, ``carry`` (B, NC, H) and the grids ((B, blocks, NC) and the block count)."""
    C = chunk_length(T)
    NC = (T + C - 1) // C
    nb = (H + BLOCK_H - 1) // BLOCK_H
    P, E, carry = (like.new_empty(B, NC, H) for _ in range(3))
    return C, NC, P, E, carry, (B, nb, NC), nb


class _ChunkedTritonScan(torch.autograd.Function):
    """``h = scan(a, b, h0)`` by the chunked kernels; the backward is the same scan run from the end,
    ``lambda_t = dy_t + a_{t+1} lambda_{t+1}``, then ``da_t = lambda_t h_{t-1}``, ``db_t = lambda_t``,
    ``dh0 = a_0 lambda_0`` (torch ops)."""

    @staticmethod
    def forward(ctx, a, b, h0):
        a, b, h0 = a.contiguous(), b.contiguous(), h0.contiguous()
        h = _chunked(a, b, h0)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, d_h):
        refuse_double_backward("Triton scan")
        a, h, h0 = ctx.saved_tensors
        if not a.numel():
            return torch.zeros_like(a), torch.zeros_like(a), torch.zeros_like(h0)
        a_next = torch.cat([a[:, 1:], a.new_zeros(a.shape[0], 1, a.shape[2])], 1)
        lam = _chunked(a_next, d_h.contiguous(), torch.zeros_like(h0), reverse=True)
        h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], 1)
        return lam * h_prev, lam, a[:, 0] * lam[:, 0]


class _FusedMinGRU(torch.autograd.Function):
    """``h`` (B, T, H) of a MinGRU from its projected input ``xp`` (B, T, 2H) and ``h0`` (B, H): the gate math
    and the chunked scan in the same kernels, forward and backward (three launches each way, against about
    twenty for the gate math in torch around :class:`_ChunkedTritonScan`)."""

    @staticmethod
    def forward(ctx, xp, h0):
        xp, h0 = xp.contiguous(), h0.contiguous()
        B, T, H2 = xp.shape
        H = H2 // 2
        h = xp.new_empty(B, T, H)
        if h.numel():
            C, NC, P, E, carry, grid, nb = _chunks(xp, B, T, H)
            k = _kernels(_interpreting())
            k[5][grid](xp, P, E, T, H, NC, C, BLOCK=BLOCK_H, num_warps=1)
            k[3][(B, nb)](P, E, h0, carry, H, NC, BLOCK=BLOCK_H, REVERSE=False, num_warps=1)
            k[6][grid](xp, carry, h, T, H, NC, C, BLOCK=BLOCK_H, num_warps=1)
        ctx.save_for_backward(xp, h, h0)
        return h

    @staticmethod
    def backward(ctx, d_h):
        refuse_double_backward("Triton scan")
        xp, h, h0 = ctx.saved_tensors
        B, T, H = h.shape
        dxp = torch.zeros_like(xp)
        dh0 = torch.zeros_like(h0)
        if h.numel():
            d_h = d_h.contiguous()
            C, NC, P, E, carry, grid, nb = _chunks(xp, B, T, H)
            k = _kernels(_interpreting())
            k[7][grid](xp, d_h, P, E, T, H, NC, C, BLOCK=BLOCK_H, num_warps=1)
            k[3][(B, nb)](P, E, torch.zeros_like(h0), carry, H, NC, BLOCK=BLOCK_H, REVERSE=True, num_warps=1)
            k[8][grid](xp, d_h, h, h0, carry, dxp, dh0, T, H, NC, C, BLOCK=BLOCK_H, num_warps=1)
        return dxp, dh0


def _grid(B: int, H: int) -> tuple[int, int]:
    return B, (H + BLOCK_H - 1) // BLOCK_H


class _TritonScan(torch.autograd.Function):
    """``h = scan(a, b, h0)`` over dim 1 of (B, T, H); both directions in Triton."""

    @staticmethod
    def forward(ctx, a, b, h0):
        a, b, h0 = a.contiguous(), b.contiguous(), h0.contiguous()
        B, T, H = a.shape
        h = torch.empty(B, T, H, dtype=a.dtype, device=a.device)
        if h.numel():
            fwd = _kernels(_interpreting())[0]
            fwd[_grid(B, H)](a, b, h0, h, T, H, BLOCK=BLOCK_H, num_warps=1)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, d_h):
        refuse_double_backward("Triton scan")
        a, h, h0 = ctx.saved_tensors
        B, T, H = a.shape
        da, db = torch.empty_like(a), torch.empty_like(a)  # a is contiguous, so are they
        dh0 = torch.zeros_like(h0)  # stays zero for T = 0
        if a.numel():
            bwd = _kernels(_interpreting())[1]
            bwd[_grid(B, H)](a, h, h0, d_h.contiguous(), da, db, dh0, T, H, BLOCK=BLOCK_H, num_warps=1)
        return da, db, dh0


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """``h`` (B, T, H) with ``h_t = a_t * h_{t-1} + b_t`` by the Triton kernels (CUDA, or the interpreter).

    Same contract as :func:`rnnkit.kernels.chunked_scan.linear_scan`: ``a``, ``b`` (B, T, H), ``h0`` (B, H)
    or None for zeros; differentiable in all three.
    """
    if a.dim() != 3 or a.shape != b.shape:
        raise ValueError(f"linear_scan expects a and b of the same shape (B, T, H), got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if a.dtype not in DTYPES or b.dtype != a.dtype:
        raise TypeError(f"the Triton scan takes float32 or float64 a and b of one dtype, got {a.dtype} "
                        f"and {b.dtype}")
    if h0 is None:
        h0 = a.new_zeros(a.shape[0], a.shape[2])
    if h0.shape != (a.shape[0], a.shape[2]):
        raise ValueError(f"linear_scan expects h0 of shape {(a.shape[0], a.shape[2])}, got {tuple(h0.shape)}")
    if a.shape[1] >= CHUNKED_MIN_T:
        return _ChunkedTritonScan.apply(a, b, h0.to(a.dtype))
    return _TritonScan.apply(a, b, h0.to(a.dtype))


def _coefficients(cell, xp: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, b)`` in real space, as :mod:`rnnkit.kernels.fused_min` forms them (autograd differentiates)."""
    if isinstance(cell, MinGRUCell):
        k, hh = xp.chunk(2, -1)
        z = torch.sigmoid(k)
        return torch.sub(1, z), z * g(hh)
    kf, ki, hh = xp.chunk(3, -1)
    d = F.softplus(-ki) - F.softplus(-kf)  # log f - log i
    return torch.sigmoid(d), torch.sigmoid(-d) * g(hh)


def min_sequence(cell, x: Tensor, state: Tensor | None = None, lengths: Tensor | None = None):
    """:func:`rnnkit.kernels.fused_min.min_sequence` with the recurrence run by the Triton kernels."""
    h0 = cell._default_state(x, state)
    xp = cell.project_input(x)
    if FUSED_MINGRU and isinstance(cell, MinGRUCell) and x.shape[1] >= CHUNKED_MIN_T:
        h = _FusedMinGRU.apply(xp, h0.to(xp.dtype))
    else:
        a, b = _coefficients(cell, xp)  # (B, T, H) each
        h = linear_scan(a, b, h0)
    if lengths is None:
        return h, (h[:, -1] if h.shape[1] else h0)
    return _mask_by_lengths(h, lengths, h0)
