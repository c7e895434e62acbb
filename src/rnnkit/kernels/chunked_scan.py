r"""Chunked parallel scan of :math:`h_t = a_t \odot h_{t-1} + b_t` in real space (float32-safe).

A sequence of ``c`` steps is cut into ``S`` sub-chunks of ``L`` steps (``c = S L``, ``L`` near
:math:`\sqrt c`). Within every sub-chunk at once, a scan from zero, :math:`\tilde h_j = a_j \tilde h_{j-1}
+ b_j`, is ``L`` elementwise ops on ``(B, S, H)`` slices, keeping only its last state
:math:`\tilde h^{(s)}_L`, and :math:`P^{(s)} = \prod_j a_j` is one reduction; then a sequential carry
over the ``S`` sub-chunks, :math:`C_s = P^{(s)} C_{s-1} + \tilde h^{(s)}_L`, and a second pass over every
sub-chunk from its true start :math:`C_{s-1}`. That is O(c) work in ``2L + 2S`` ops instead of ``c``.

Stability: every quantity is a product of the :math:`a` (never a quotient or a difference of
logarithms) or a sum of :math:`a`-weighted terms, exactly as in the sequential loop, so the rounding
is that of the loop (relative :math:`O(L\varepsilon)` in the scan, independent of ``T``). The log-space
form (:func:`rnnkit.kernels.scan.log_space_scan`) instead subtracts cumulative log-products that reach
:math:`-10^5` at T=4096, which float32 cannot do; it needs float64. Products of :math:`a_t \in [0, 1]`
only shrink (and may underflow to 0, harmlessly). The same scan run backwards in time on the
gradients is the backward of the recurrence:

.. math::

    \lambda_t = \bar y_t + a_{t+1} \lambda_{t+1}, \qquad \bar a_t = \lambda_t h_{t-1}, \qquad
    \bar b_t = \lambda_t, \qquad \bar h_0 = a_1 \lambda_1 \ \text{(first step)}.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from rnnkit.kernels._capture import refuse_double_backward
from torch import Tensor

__all__ = ["scan_chunk", "shifted", "linear_scan", "CHUNK"]

# Steps scanned per chunk by the layers' kernels (a chunk's tensors stay in cache while used). MinGRU
# training step at B=8 T=4096 H=256 on the 2-core Xeon VM, one run: 128 -> 161 ms, 256 -> 145,
# 512 -> 134, 1024 -> 137, 2048 -> 158 (torch.nn.GRU: 1592 ms).
CHUNK = 512


@lru_cache(maxsize=512)
def _split(c: int) -> int:
    """The sub-chunk length ``L``: the divisor of ``c`` closest to ``sqrt(c)`` (so ``L + 2S`` is small)."""
    root = math.sqrt(c)
    return min((d for d in range(1, c + 1) if c % d == 0), key=lambda d: abs(d - root))


def scan_chunk(a: Tensor, b: Tensor, h_in: Tensor, out: Tensor, reverse: bool = False) -> Tensor:
    """``out[:, j] = a[:, j] * out[:, j-1] + b[:, j]`` over dim 1 from ``h_in``; returns the last state.

    ``a``, ``b`` are (B, c, H) (any strides), ``out`` (B, c, H) with dim 1 viewable as (S, L) (a
    contiguous buffer or a slice of one along dim 1), ``h_in`` (B, H). With ``reverse`` the recurrence
    runs from ``j = c-1`` down to 0 (``out[:, j+1]`` on the right). Three passes: every sub-chunk's
    last state from zero and its product of ``a``; the carries into the sub-chunks, in sequence; every
    sub-chunk again from its carry, writing ``out``.
    """
    B, c, H = a.shape
    if c == 0:
        return h_in
    L = _split(c)
    S = c // L
    a4, b4, o4 = a.reshape(B, S, L, H), b.reshape(B, S, L, H), out.view(B, S, L, H)
    js = range(L - 1, -1, -1) if reverse else range(L)
    state = b4[:, :, js[0]].clone()  # (B, S, H)
    for j in js[1:]:
        torch.addcmul(b4[:, :, j], a4[:, :, j], state, out=state)
    prod = a4.prod(2)  # (B, S, H): the product of a over each sub-chunk
    carries, carry = [], h_in
    for s in (range(S - 1, -1, -1) if reverse else range(S)):
        carries.append(carry)
        carry = torch.addcmul(state[:, s], prod[:, s], carry)
    state = torch.stack(carries[::-1] if reverse else carries, 1)  # (B, S, H): each sub-chunk's start
    for j in js:
        state = torch.addcmul(b4[:, :, j], a4[:, :, j], state, out=o4[:, :, j])
    return carry


class _LinearScan(torch.autograd.Function):
    """``h = scan(a, b, h0)`` over dim 1 of (B, T, H), with the reversed scan as its backward."""

    @staticmethod
    def forward(ctx, a, b, h0):
        B, T, H = a.shape
        h = a.new_empty(B, T, H)
        carry = h0
        for t0 in range(0, T, CHUNK):
            t1 = min(T, t0 + CHUNK)
            carry = scan_chunk(a[:, t0:t1], b[:, t0:t1], carry, h[:, t0:t1])
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, d_h):
        refuse_double_backward("linear scan")
        a, h, h0 = ctx.saved_tensors
        B, T, H = a.shape
        lam = torch.empty_like(h)
        carry = torch.zeros_like(h0)
        for t1 in range(T, 0, -CHUNK):
            t0 = max(0, t1 - CHUNK)
            a_next = shifted(a, t0, t1)  # a_{t+1}, 1 past the end
            carry = scan_chunk(a_next, d_h[:, t0:t1], carry, lam[:, t0:t1], reverse=True)
        h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], 1)
        return lam * h_prev, lam, (a[:, 0] * lam[:, 0]) if T else torch.zeros_like(h0)


def shifted(a: Tensor, t0: int, t1: int) -> Tensor:
    """``a[:, t0+1 : t1+1]`` with ones past the end: the coefficients of the reversed recurrence."""
    T = a.shape[1]
    if t1 < T:
        return a[:, t0 + 1:t1 + 1]
    return torch.cat([a[:, t0 + 1:T], a.new_ones(a.shape[0], 1, a.shape[2])], 1)


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """``h`` (B, T, H) with ``h_t = a_t * h_{t-1} + b_t`` over axis 1, in real space (see module doc).

    ``a``, ``b`` are (B, T, H) with ``a`` in [0, 1] for the stability guarantee; ``h0`` (B, H) of any
    sign (zero if None). Differentiable in all three through a hand-written backward.
    """
    if a.dim() != 3 or a.shape != b.shape:
        raise ValueError(f"linear_scan expects a and b of the same shape (B, T, H), got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if h0 is None:
        h0 = a.new_zeros(a.shape[0], a.shape[2])
    return _LinearScan.apply(a, b, h0)
