r"""The MinGRU/MinLSTM recurrence :math:`h_t = a_t \odot h_{t-1} + b_t` as Triton kernels (CUDA).

Forward and backward are one ``@triton.jit`` kernel each, launched on a grid of (batch row, block of
:data:`BLOCK_H` hidden units). A program keeps its block of ``h`` in registers and walks time in
order, one load of ``a_t``, ``b_t`` and one store of ``h_t`` per step; the hidden units are
independent, so the parallelism is ``B * H / BLOCK_H`` programs and the work is the sequential loop's,
O(T H) with its rounding. That is what GPU implementations of these scans do for moderate ``H``: the
loop is bound by memory traffic (three tensors read or written once), which a parallel-prefix
formulation does not reduce. A chunked (two-level) scan would add parallelism for long ``T`` with few
rows (small ``B H``) and is not written. The backward is the same loop run backwards on the gradients:

.. math::

    \lambda_t = \bar y_t + a_{t+1} \lambda_{t+1}, \qquad \bar a_t = \lambda_t h_{t-1}, \qquad
    \bar b_t = \lambda_t, \qquad \bar h_0 = a_1 \lambda_1

in a single pass that writes :math:`\bar a` and :math:`\bar b` as it goes (``h`` is saved by the
forward). The gate math (coefficients from the projected input) stays in torch, differentiated by
autograd, in the same real-space form as :mod:`rnnkit.kernels.fused_min`.

float32 and float64 (accumulated in the input dtype). The scan backend
(:func:`rnnkit.kernels.dispatch.run_scan`) takes this path when :func:`wanted` says so: by default for
CUDA tensors when ``triton`` is importable. ``RNNKIT_TRITON=0`` turns it off; ``RNNKIT_TRITON=force``
takes it for any device, which on CPU tensors needs Triton's interpreter (``TRITON_INTERPRET=1``) —
that is how the tests run it without a GPU. ``triton`` is imported only when a kernel is first needed,
so the package imports without it (install it with ``pip install 'rnnkit[gpu]'``).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import torch

from rnnkit.kernels._capture import refuse_double_backward
from torch import Tensor
from torch.nn import functional as F

from rnnkit.cells.minimal import MinGRUCell, _mask_by_lengths, g

__all__ = ["available", "wanted", "linear_scan", "min_sequence", "DTYPES", "BLOCK_H"]

DTYPES = (torch.float32, torch.float64)
BLOCK_H = 32  # hidden units per program: one warp, one unit a lane (not tuned: no GPU measured it)
_TRUE = ("1", "true", "on", "yes")


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

    return scan_fwd, scan_bwd


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
            fwd, _ = _kernels(_interpreting())
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
            _, bwd = _kernels(_interpreting())
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
    a, b = _coefficients(cell, cell.project_input(x))  # (B, T, H) each
    h = linear_scan(a, b, h0)
    if lengths is None:
        return h, (h[:, -1] if h.shape[1] else h0)
    return _mask_by_lengths(h, lengths, h0)
