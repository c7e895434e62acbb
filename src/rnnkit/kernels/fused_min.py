r"""MinGRU and MinLSTM (:mod:`rnnkit.cells.minimal`) as one chunked parallel scan, forward and backward.

The recurrence is linear, :math:`h_t = a_t h_{t-1} + b_t`, with coefficients from the input only:

.. math::

    \text{MinGRU: } a = 1 - z = \sigma(-k),\ b = z\,g(\tilde h); \qquad
    \text{MinLSTM: } a = f' = \sigma(d),\ b = \sigma(-d)\,g(\tilde h),\ d = \log f - \log i
        = \mathrm{sp}(-k_i) - \mathrm{sp}(-k_f)

all computed in real space (``a`` in [0, 1], ``b >= 0``). Time is cut into chunks of
:data:`~rnnkit.kernels.chunked_scan.CHUNK` steps; for each chunk: the input projection as one GEMM,
the coefficients, and :func:`~rnnkit.kernels.chunked_scan.scan_chunk` started from the previous
chunk's last state, so a chunk's tensors are used while in cache. The backward walks the chunks in
reverse: :math:`\lambda_t = \bar y_t + a_{t+1}\lambda_{t+1}` by the same scan reversed, then
:math:`\bar a = \lambda h_{t-1}`, :math:`\bar b = \lambda` through the coefficients by hand:

.. math::

    \text{MinGRU: } \bar k = z(1-z)(\bar b\,g - \bar a), \ \bar{\tilde h} = \bar b\,z\,g'; \quad
    \text{MinLSTM: } \bar d = f'(1-f')(\bar a - \bar b\,g),\ \bar k_f = \bar d\,\sigma(-k_f),\
    \bar k_i = -\bar d\,\sigma(-k_i),\ \bar{\tilde h} = \bar b\,\sigma(-d)\,g'

and the weight gradient one GEMM per chunk. The projected inputs are kept for the backward (in a
reused scratch buffer); everything else is recomputed per chunk.

On the CPU (float32/float64) each chunk's coefficients and recurrence run in C++ when
:mod:`rnnkit.kernels._cpp` can build it (``csrc/min_rnn.cpp``: one pass over the chunk forward, one
backward, each element's coefficients recomputed in registers from the projected input; the torch ops
above make 10-20 passes over memory per chunk). The GEMMs stay here; ``RNNKIT_CPP=0`` keeps the torch ops.
"""

from __future__ import annotations

import torch

from rnnkit.kernels._capture import refuse_double_backward
from torch import Tensor
from torch.nn import functional as F

from rnnkit.cells.minimal import MinGRUCell, MinLSTMCell, _mask_by_lengths
from rnnkit.kernels import _cpp
from rnnkit.kernels import _fused_common as fc
from rnnkit.kernels._gemm import Weight
from rnnkit.kernels.chunked_scan import CHUNK, scan_chunk

__all__ = ["min_sequence", "supports"]

_SIG_B = torch.ops.aten.sigmoid_backward.grad_input


def supports(cell) -> bool:
    return isinstance(cell, (MinGRUCell, MinLSTMCell))


def _g(hh: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(g(hh), sigmoid(hh))`` with ``g = max(hh + 1/2, sigmoid(hh))``.

    That maximum is Feng et al.'s ``g`` (``hh + 1/2`` for ``hh >= 0``, ``sigmoid(hh)`` below): the two
    branches meet at 0 and ``sigmoid(x) - x - 1/2`` decreases, so the right one is always the larger.
    """
    sig = torch.sigmoid(hh)
    return torch.maximum(hh + 0.5, sig, out=out), sig


def _times_g_prime(grad: Tensor, positive: Tensor, sig: Tensor, out: Tensor) -> Tensor:
    """``grad * g'(hh)`` into ``out``: ``grad`` where ``hh >= 0`` (``positive`` is 1.0 there, else 0.0),
    ``grad sigmoid'(hh)`` below (the right derivative at 0, as autograd takes it through the reference's
    ``where``). As ``lerp(grad sigmoid', grad, positive)``, exact at weights 0 and 1, instead of
    ``torch.where``, which costs ~8x a multiplication on the CPU (2.15 against 0.26 ms for 1M floats)."""
    _SIG_B(grad, sig, grad_input=out)
    return torch.lerp(out, grad, positive, out=out)


class _MinGRU:
    """MinGRU's coefficients; keeps ``z``, ``g`` and the sign of ``hh`` for the backward."""

    n_gates = 2

    def __init__(self, sc, B: int, T: int, H: int) -> None:
        self.z, self.g, self.pos = sc.take(B, T, H), sc.take(B, T, H), sc.take(B, T, H)  # pos: 1.0 where hh >= 0

    def forward(self, xp: Tensor, t0: int, t1: int) -> tuple[Tensor, Tensor]:
        k, hh = xp.chunk(2, -1)
        z = torch.sigmoid(k, out=self.z[:, t0:t1])
        torch.ge(hh, 0, out=self.pos[:, t0:t1])
        g = _g(hh, out=self.g[:, t0:t1])[0]
        return torch.sub(1, z), z * g  # 1 - z as the reference's lerp forms it

    def a(self, t0: int, t1: int) -> Tensor:
        return torch.sub(1, self.z[:, t0:t1])

    def grads(self, t0: int, t1: int, lam: Tensor, h_prev: Tensor, out: Tensor) -> Tensor:
        """``dk = z(1-z)(db g - da)``, ``dhh = db z g'`` with ``db = lam``, ``da = lam h_prev``."""
        H = lam.shape[-1]
        z, g, dk = self.z[:, t0:t1], self.g[:, t0:t1], out[..., :H]
        _SIG_B(torch.sub(g, h_prev, out=dk).mul_(lam), z, grad_input=dk)
        return _times_g_prime(z * lam, self.pos[:, t0:t1], g, out[..., H:])  # g = sigmoid(hh) below 0


class _MinLSTM:
    """MinLSTM's coefficients; keeps the projected input and recomputes the rest in the backward."""

    n_gates = 3

    def __init__(self, sc, B: int, T: int, H: int) -> None:
        self.xp = sc.take(B, T, 3 * H)

    def forward(self, xp: Tensor, t0: int, t1: int) -> tuple[Tensor, Tensor]:
        self.xp[:, t0:t1] = xp
        kf, ki, hh = xp.chunk(3, -1)
        d = F.softplus(-ki).sub_(F.softplus(-kf))  # log f - log i
        return torch.sigmoid(d), torch.sigmoid(d.neg_()).mul_(_g(hh)[0])

    def a(self, t0: int, t1: int) -> Tensor:
        kf, ki, _ = self.xp[:, t0:t1].chunk(3, -1)
        return torch.sigmoid(F.softplus(-ki).sub_(F.softplus(-kf)))

    def grads(self, t0: int, t1: int, lam: Tensor, h_prev: Tensor, out: Tensor) -> Tensor:
        """``dd = f'(1-f')(da - db g)``, ``dkf = dd sigmoid(-kf)``, ``dki = -dd sigmoid(-ki)``, ``dhh``."""
        H = lam.shape[-1]
        kf, ki, hh = self.xp[:, t0:t1].chunk(3, -1)
        d = F.softplus(-ki).sub_(F.softplus(-kf))
        g, sig = _g(hh)
        dd = _SIG_B(g.mul_(lam).neg_().addcmul_(lam, h_prev), torch.sigmoid(d), grad_input=torch.empty_like(d))
        torch.mul(dd, torch.sigmoid(-kf), out=out[..., :H])
        torch.mul(dd.neg_(), torch.sigmoid(-ki), out=out[..., H:2 * H])
        return _times_g_prime(torch.sigmoid(d.neg_()).mul_(lam), torch.ge(hh, 0, out=torch.empty_like(hh)), sig,
                              out[..., 2 * H:])


class _MinFn(torch.autograd.Function):
    """``(x, w, bias, h0, kind) -> ys``: batch-first ``x`` (B, T, I), ``h0`` (B, H), ``ys`` (B, T, H)."""

    @staticmethod
    def forward(ctx, x, w, bias, h0, kind):
        B, T, I = x.shape
        H = h0.shape[1]
        sc = fc.Scratch(fc.batching(None, B, T), x)
        ctx.cpp = _cpp.ops_for(x)
        if ctx.cpp is not None:
            ctx.op = "min_gru" if kind is _MinGRU else "min_lstm"
            return _forward_cpp(ctx, sc, x, w, bias, h0)
        coef, ws = kind(sc, B, T, H), Weight(w, B * CHUNK)
        ys, carry = x.new_empty(B, T, H), h0
        for t0 in range(0, T, CHUNK):
            t1 = min(T, t0 + CHUNK)
            xp = ws(x[:, t0:t1].reshape(-1, I), bias).view(B, t1 - t0, -1)  # (B, c, G): one GEMM
            a, b = coef.forward(xp, t0, t1)
            carry = scan_chunk(a, b, carry, ys[:, t0:t1])
        ctx.coef, ctx.scratch, ctx.has_bias = coef, sc, bias is not None
        ctx.save_for_backward(x, w, ys, h0)
        return ys

    @staticmethod
    def backward(ctx, d_ys):
        refuse_double_backward("MinGRU/MinLSTM scan")
        x, w, ys, h0 = ctx.saved_tensors
        B, T, I = x.shape
        d_w, d_bias = torch.zeros_like(w), x.new_zeros(w.shape[0]) if ctx.has_bias else None
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        if ctx.cpp is not None:
            return _backward_cpp(ctx, d_ys, x, w, ys, h0, d_w, d_bias, dx)
        w_t = Weight.transposed(w, B * CHUNK) if dx is not None else None
        lam_buf, carry = ys.new_empty(B, CHUNK, ys.shape[2]), torch.zeros_like(h0)
        a_after = ys.new_ones(B, 1, ys.shape[2])  # a of the step after the chunk (1 past the end)
        dxp_buf = x.new_empty(B * min(T, CHUNK) * w.shape[0])  # one buffer for every chunk: no page faults
        for t0 in reversed(range(0, T, CHUNK)):
            t1, c = min(T, t0 + CHUNK), min(T, t0 + CHUNK) - t0
            a, lam = ctx.coef.a(t0, t1), lam_buf[:, :c]
            carry = scan_chunk(torch.cat([a[:, 1:], a_after], 1), d_ys[:, t0:t1], carry, lam, reverse=True)
            a_after = a[:, :1]
            h_prev = ys[:, t0 - 1:t1 - 1] if t0 else torch.cat([h0.unsqueeze(1), ys[:, :t1 - 1]], 1)
            dxp = dxp_buf[:B * c * w.shape[0]].view(B, c, w.shape[0])
            ctx.coef.grads(t0, t1, lam, h_prev, dxp)
            dxp, xc = dxp.view(B * c, -1), x[:, t0:t1].reshape(-1, I)
            d_w.addmm_(dxp.t(), xc)  # (G, I), K = B c rows: BLAS takes the transpose as it is
            if d_bias is not None:
                d_bias.add_(dxp.sum(0))
            if dx is not None:
                dx[:, t0:t1] = w_t(dxp).view(B, c, I)
        dh0 = a_after[:, 0] * carry if ctx.needs_input_grad[3] else None  # a_1 lambda_1
        return dx, d_w, d_bias, dh0, None


def _chunks(xps: Tensor, B: int, T: int, G: int):
    """``(t0, t1, view)`` per chunk of a flat buffer holding every chunk's (B, c, G) block contiguously."""
    for t0 in range(0, T, CHUNK):
        t1 = min(T, t0 + CHUNK)
        yield t0, t1, xps[B * t0 * G:B * t1 * G].view(B, t1 - t0, G)


def _forward_cpp(ctx, sc, x: Tensor, w: Tensor, bias: Tensor | None, h0: Tensor) -> Tensor:
    """The layer with ``csrc/min_rnn.cpp`` doing each chunk's recurrence in one call: per chunk the input
    projection (one GEMM, written where the backward finds it; the bias is added in the C++ pass) and one
    pass over it."""
    B, T, I = x.shape
    G = w.shape[0]
    xps = sc.take(B * T * G)  # chunk-major, so that each chunk's GEMM writes a contiguous block
    ys, wt, run = x.new_empty(B, T, h0.shape[1]), w.t(), getattr(ctx.cpp, ctx.op + "_fwd")
    ctx.has_bias = bias is not None
    bias = bias if bias is not None else w.new_zeros(G)
    h_in = h0 if h0.stride(-1) == 1 else h0.contiguous()
    xbuf = _ChunkInput(x)
    for t0, t1, xp in _chunks(xps, B, T, G):
        torch.mm(xbuf(t0, t1), wt, out=xp.view(-1, G))
        run(xp, bias, h_in, ys[:, t0:t1])
        h_in = ys[:, t1 - 1]
    ctx.xps, ctx.scratch, ctx.bias = xps, sc, bias
    ctx.save_for_backward(x, w, ys, h0)
    return ys


class _ChunkInput:
    """``x[:, t0:t1]`` as a (B c, I) matrix: a view where one chunk spans the sequence, else a copy into
    one buffer reused by every chunk (a fresh tensor per chunk costs its page faults each time)."""

    def __init__(self, x: Tensor) -> None:
        B, T, I = x.shape
        self.x = x
        self.buf = x.new_empty(B * CHUNK * I) if T > CHUNK or not x.is_contiguous() else None

    def __call__(self, t0: int, t1: int) -> Tensor:
        B, _, I = self.x.shape
        if self.buf is None:
            return self.x.view(-1, I)
        out = self.buf[:B * (t1 - t0) * I]
        out.view(B, t1 - t0, I).copy_(self.x[:, t0:t1])
        return out.view(-1, I)


def _backward_cpp(ctx, d_ys, x, w, ys, h0, d_w, d_bias, dx):
    """The reverse of :func:`_forward_cpp`: per chunk one C++ pass (lambda and the projection's
    gradient), then the weight gradient as one GEMM and the input's as another."""
    B, T, I = x.shape
    G = w.shape[0]
    if d_ys.stride(-1) != 1:  # e.g. the expanded ones of y.sum(): into a pooled buffer (no page faults)
        d_ys = ctx.scratch.take(*d_ys.shape).copy_(d_ys)
    h0 = h0 if h0.stride(-1) == 1 else h0.contiguous()
    lam, a_next = h0.new_zeros(h0.shape), h0.new_ones(h0.shape)
    dxp_buf = x.new_empty(B * min(T, CHUNK) * G)
    dx_buf = x.new_empty(B * min(T, CHUNK) * I) if dx is not None else None
    xbuf, run = _ChunkInput(x), getattr(ctx.cpp, ctx.op + "_bwd")
    for t0, t1, xp in reversed(list(_chunks(ctx.xps, B, T, G))):
        c = t1 - t0
        dxp = dxp_buf[:B * c * G].view(B, c, G)
        run(xp, ctx.bias, ys[:, t0:t1], ys[:, t0 - 1] if t0 else h0, d_ys[:, t0:t1], lam, a_next, dxp)
        dxp = dxp.view(B * c, G)
        d_w.addmm_(dxp.t(), xbuf(t0, t1))
        if d_bias is not None:
            d_bias.add_(dxp.sum(0))
        if dx is not None:
            dx[:, t0:t1] = torch.mm(dxp, w, out=dx_buf[:B * c * I].view(B * c, I)).view(B, c, I)
    dh0 = a_next * lam if ctx.needs_input_grad[3] else None  # a_1 lambda_1
    return dx, d_w, d_bias, dh0, None


def min_sequence(cell, x: Tensor, state: Tensor | None = None, lengths: Tensor | None = None):
    """The scan equivalent of ``cell.forward(x, state, lengths=...)`` for MinGRU/MinLSTM cells."""
    if x.shape[0] == 0:  # an empty batch: the cell's loop (the C++ chunk pass divided by zero: SIGFPE)
        return cell.forward(x, state, lengths=lengths)
    h0 = cell._default_state(x, state)
    kind = _MinGRU if isinstance(cell, MinGRUCell) else _MinLSTM
    h = _MinFn.apply(x, cell.weight_ih, cell.bias_ih, h0, kind)
    if lengths is None:
        return h, (h[:, -1] if h.shape[1] else h0)
    return _mask_by_lengths(h, lengths, h0)
