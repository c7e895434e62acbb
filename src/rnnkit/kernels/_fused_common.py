"""Shared plumbing of the fused CPU kernels (private): lengths as shrinking batch prefixes, the
zoneout masks, the layer-norm backward, and gathering the outputs back in the caller's batch order.

Variable lengths are handled the way packed sequences are: the batch is sorted by length (longest
first), so at step ``t`` the sequences still running are the prefix ``[:n_t]`` with
``n_t = #{b : lengths[b] > t}`` non-increasing. Each step computes only its prefix (the work is the
packed work, with no per-step masking), rows past a sequence's end stay zero in the zero-initialised
buffers (the padded outputs), and the final state of sequence ``b`` is the buffer entry at time
``lengths[b]``. Without lengths every ``n_t`` is ``B``.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["Batching", "batching", "zoneout_keep", "ln_backward", "packed", "finish", "gate_perm", "linear",
           "tanh_from_sigmoid_"]


class Batching:
    """How a batch runs: ``order`` (sorted -> original rows, or None), active rows per step ``sizes``."""

    def __init__(self, order: Tensor | None, inverse: Tensor | None, lengths: Tensor | None,
                 sizes: tuple[int, ...]) -> None:
        self.order, self.inverse, self.lengths, self.sizes = order, inverse, lengths, sizes

    @property
    def full(self) -> bool:
        """True when every step runs the whole batch (no lengths, or all equal to T)."""
        return self.order is None

    def rows(self, t: Tensor | None) -> Tensor | None:
        """``t`` (batch on dim 0) in the running (sorted) order."""
        return t if t is None or self.order is None else t.index_select(0, self.order)


def batching(lengths: Tensor | None, B: int, T: int) -> Batching:
    """Sort by decreasing length and count the running sequences at each step."""
    if lengths is None or bool((lengths == T).all()):
        return Batching(None, None, None, (B,) * T)
    lens, order = torch.sort(lengths, descending=True, stable=True)
    counts = torch.bincount(lens.cpu(), minlength=T + 1)  # sequences of each length
    alive = B - counts.cumsum(0)  # alive[t] = #{len > t}
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(B, device=order.device)
    return Batching(order, inverse, lens, tuple(alive[:T].tolist()))


def new_buffer(b: Batching, *shape: int, like: Tensor) -> Tensor:
    """A step buffer: uninitialised when every row is computed, else zeros (the padding)."""
    make = torch.empty if b.full else torch.zeros
    return make(*shape, device=like.device, dtype=like.dtype)


def zoneout_keep(p: float, T: int, parts: int, B: int, H: int, like: Tensor) -> Tensor | None:
    """Keep masks ``(T, parts, B, H)`` of zoneout, drawn in the order the reference loop draws them.

    :meth:`rnnkit.cells.base.RecurrentCell._loop` draws one ``(B, H)`` Bernoulli mask per state part
    (``h`` then ``c``) per step; drawing the same shapes in the same order from the same generator
    gives the same masks, so the fused kernels equal the reference under a fixed seed.
    """
    if p <= 0.0:
        return None
    keep = torch.empty(T, parts, B, H, device=like.device, dtype=like.dtype)
    for t in range(T):
        for k in range(parts):
            keep[t, k].bernoulli_(p)
    return keep


def ln_backward(grad: Tensor, inp: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor | None) -> Tensor:
    """Gradient w.r.t. the input of ``layer_norm`` over the last axis (weight/bias grads done in bulk)."""
    return torch.ops.aten.native_layer_norm_backward(grad, inp, inp.shape[-1:], mean, rstd, weight, None,
                                                     [True, False, False])[0]


def packed(buf: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """The running rows of a step buffer ``(T, B, ...)`` stacked as ``(sum n_t, ...)``."""
    if all(n == buf.shape[1] for n in sizes):
        return buf.reshape(-1, *buf.shape[2:])
    return torch.cat([buf[t, :n] for t, n in enumerate(sizes) if n])


def finish(b: Batching, hs: Tensor, finals: list[Tensor]):
    """Batch-first outputs and final states in the caller's order from ``(T+1, B, ·)`` buffers.

    ``hs[t+1]`` is the output at step ``t``; ``finals`` are state buffers whose entry at time
    ``lengths[b]`` is sequence ``b``'s final state.
    """
    T = hs.shape[0] - 1
    if b.full:
        return hs[1:].transpose(0, 1).contiguous(), [f[T] for f in finals]
    rows = torch.arange(hs.shape[1], device=hs.device)
    states = [f[b.lengths, rows].index_select(0, b.inverse) for f in finals]
    return hs[1:].transpose(0, 1).index_select(0, b.inverse), states


class loop_threads:
    """Context for the sequential loops: intra-op threads for their small per-step ops (experimental)."""

    def __enter__(self):
        import os
        self.saved = torch.get_num_threads()
        n = int(os.environ.get("RNNKIT_LOOP_THREADS", "0"))
        if n:
            torch.set_num_threads(n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)


@lru_cache(maxsize=1)
def _onednn() -> bool:
    """Whether oneDNN's fused linear op is there (a CPU build of torch with mkldnn)."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        op(torch.ones(1, 1), torch.ones(1, 1), None, "none", [], "")
        return torch.backends.mkldnn.is_available()
    except (AttributeError, RuntimeError):
        return False


def linear(x: Tensor, w: Tensor, other: Tensor | None = None) -> Tensor:
    """``x @ w.T (+ other)`` for the per-step GEMMs.

    On CPU in float32 this is oneDNN's matmul (the library torch.nn.LSTM's kernel uses), which on
    small-batch recurrent GEMMs is ~1.5x faster than the BLAS behind ``torch.mm`` on the machines
    measured (docs/performance.md); elsewhere it is ``addmm``. Both are exact float32 GEMMs that
    differ only in summation order.
    """
    if x.dtype == torch.float32 and x.device.type == "cpu" and _onednn():
        if other is None:
            return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, w, None, "add")
    return torch.mm(x, w.t()) if other is None else torch.addmm(other, x, w.t())


def tanh_from_sigmoid_(s: Tensor) -> Tensor:
    """Turn ``s = sigmoid(2a)`` into ``tanh(a) = 2s - 1`` in place.

    On CPU ``torch.tanh`` of a small float32 tensor costs ~8x a ``sigmoid`` (it goes through MKL's
    vector math); the kernels feed the tanh gates pre-scaled by 2 and use one sigmoid for all gates.
    The absolute error is below 2e-7 in float32.
    """
    return s.mul_(2.0).sub_(1.0)


@lru_cache(maxsize=32)
def _perm(sizes: tuple[int, ...], order: tuple[int, ...], H: int, device: str) -> Tensor:
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    idx = [torch.arange(starts[k] * H, (starts[k] + sizes[k]) * H) for k in order]
    return torch.cat(idx).to(device)


def gate_perm(n_gates: int, order: tuple[int, ...], H: int, device: torch.device) -> Tensor:
    """Row index that reorders ``n_gates`` blocks of ``H`` rows into ``order``."""
    return _perm((1,) * n_gates, order, H, str(device))
