"""Shared plumbing of the fused CPU kernels (private): lengths as shrinking batch prefixes, chunks of
steps, scratch buffers reused across calls, zoneout masks, and the outputs in the caller's order.

Variable lengths are handled the way packed sequences are: the batch is sorted by length (longest
first), so at step ``t`` the sequences still running are the prefix ``[:n_t]`` with
``n_t = #{b : lengths[b] > t}`` non-increasing. Each step computes only its prefix (the packed work,
no per-step masking), rows past a sequence's end stay zero in zero-initialised buffers (the padded
outputs), and a sequence's final state is taken at its last step. Without lengths every ``n_t = B``.

Time is cut into chunks of ``chunk_size(B)`` steps: the input projection of a chunk is computed just
before the loop reaches it and the backward works chunk by chunk, so the per-chunk data (a few MB)
stays in cache and the weight-gradient GEMMs have ``K = chunk * B`` rows.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from functools import lru_cache

import torch
from torch import Tensor

from rnnkit.cells.base import zoneout_keep  # the kernels call it as fc.zoneout_keep

__all__ = ["Batching", "batching", "chunk_size", "chunks", "Scratch", "loop_threads", "zoneout_keep", "last",
           "arrive", "finish", "gate_perm", "tanh_from_sigmoid_"]


class Batching:
    """How a batch runs: ``order`` (running -> caller rows, None if unsorted), rows per step ``sizes``."""

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


def chunk_size(B: int) -> int:
    """Steps per chunk: ~512 rows, so a chunk's gates (rows x 4H) stay in cache."""
    return max(4, min(64, 512 // max(B, 1)))


def chunks(b: Batching, C: int, reverse: bool = False) -> list[tuple[int, int]]:
    """``(t0, t1)`` of the chunks that have a running row, in time order or reversed."""
    T = len(b.sizes)
    out = [(t0, min(T, t0 + C)) for t0 in range(0, T, C) if b.sizes[t0]]
    return out[::-1] if reverse else out


class Scratch:
    """Buffers kept from a kernel's forward to its backward, drawn from a pool reused across calls.

    A fresh ``(T, B, 4H)`` buffer costs a page fault per 4 KiB on its first write, ~20% of a
    layer-norm LSTM step on the machine of docs/performance.md; pooled buffers are touched once. They
    go back to the pool when this object is collected, i.e. when the autograd graph holding it is
    freed, so never while a backward may still read them, and they are never handed to the caller.
    The pool keeps at most ``MAX_PER_SHAPE`` buffers per shape and ``MAX_BYTES`` in all, dropping the
    least recently returned shapes first (so varying sequence lengths cannot grow it without bound).
    """

    _pool: OrderedDict[tuple, list[Tensor]] = OrderedDict()
    _bytes = 0
    _lock = threading.Lock()
    MAX_PER_SHAPE, MAX_BYTES = 2, 512 * 2 ** 20

    def __init__(self, b: Batching, like: Tensor) -> None:
        self.b, self.like, self.taken = b, like, []

    def take(self, *shape: int) -> Tensor:
        """A ``shape`` buffer; zeroed when some rows do not run (they are the padding)."""
        key = (shape, self.like.dtype, self.like.device)
        with Scratch._lock:
            free = Scratch._pool.get(key)
            buf = free.pop() if free else None
            if buf is not None:
                Scratch._bytes -= buf.nbytes
        if buf is None:
            with torch.inference_mode(False):  # pooled across calls: never an inference tensor (a later
                # training call could not write into it)
                buf = torch.empty(*shape, dtype=self.like.dtype, device=self.like.device)
        if not self.b.full:
            buf.zero_()
        self.taken.append(buf)
        return buf

    def __del__(self) -> None:
        with Scratch._lock:
            pool = Scratch._pool
            for buf in getattr(self, "taken", ()):  # absent on an object a compiler made without __init__
                if type(buf) is not Tensor:  # a fake tensor of a capture: nothing a real call may reuse
                    continue
                key = (tuple(buf.shape), buf.dtype, buf.device)
                free = pool.setdefault(key, [])
                pool.move_to_end(key)
                if len(free) < Scratch.MAX_PER_SHAPE and buf.nbytes <= Scratch.MAX_BYTES:
                    free.append(buf)
                    Scratch._bytes += buf.nbytes
            while Scratch._bytes > Scratch.MAX_BYTES:
                key, free = next(iter(pool.items()))
                Scratch._bytes -= sum(b.nbytes for b in free)
                del pool[key]
        self.taken = []


class loop_threads:
    """Run the sequential loops of the kernels with ``RNNKIT_LOOP_THREADS`` intra-op threads (default 0:
    torch's own setting, as ``torch.nn.LSTM`` uses).

    A step's ops are small (a (B, 4H) GEMM, ~10 pointwise ops on B x H), and every split over threads
    is a barrier. On a quiet machine the second thread still pays for itself through the GEMMs
    (measured on the 2-core Xeon VM: layer-norm LSTM 2.62x torch.nn.LSTM with 2 threads against 3.30x
    with 1, layer-norm GRU 1.37x against 1.85x); on a machine whose cores are oversubscribed a
    barrier waits for a descheduled thread many times per step (on the shared AMD VM under load, 2
    threads were 1.6x *slower* than 1). ``RNNKIT_LOOP_THREADS=1`` is the setting for such machines.
    The previous setting is restored on exit.
    """

    def __enter__(self) -> None:
        self.saved = torch.get_num_threads()
        want = int(os.environ.get("RNNKIT_LOOP_THREADS", "0"))
        if want > 0 and want != self.saved:
            torch.set_num_threads(want)

    def __exit__(self, *exc) -> None:
        if torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)


def new_buffer(b: Batching, *shape: int, like: Tensor) -> Tensor:
    """A fresh buffer: uninitialised when every row is computed, else zeros (the padding)."""
    make = torch.empty if b.full else torch.zeros
    return make(*shape, device=like.device, dtype=like.dtype)


def last(ys: Tensor, first: Tensor, b: Batching, offset: int = 0) -> Tensor:
    """Each sequence's final state: ``ys[lengths - 1 + offset]`` (``first`` where that is before 0).

    ``ys`` (T, B, H) holds the states after each step (``offset=0``) or ``(T+1, B, H)`` with the
    initial state first (``offset=1``).
    """
    if b.full:
        return (ys[-1] if ys.shape[0] > offset else first).clone()
    idx = (b.lengths - 1 + offset).clamp(min=0)
    got = ys[idx, torch.arange(ys.shape[1], device=ys.device)] if ys.shape[0] else first
    return torch.where((b.lengths > 0).unsqueeze(1), got, first)


def arrive(carry: Tensor | None, n: int, d_last: Tensor, d_out: Tensor | None = None) -> Tensor:
    """The state gradient of the ``n`` running rows at a step, walking time backwards.

    ``carry`` holds the rows that also ran the next step (their output gradient already added); the
    rows that end at this step start from the gradient of their final state ``d_last`` plus their
    output gradient ``d_out``.
    """
    m = 0 if carry is None else carry.shape[0]
    if m == n:
        return carry
    new = d_last[m:n] if d_out is None else d_last[m:n] + d_out[m:n]
    return new if carry is None else torch.cat([carry, new])


def finish(b: Batching, ys: Tensor, finals: list[Tensor]):
    """Batch-first outputs and final states in the caller's batch order from running-order ones."""
    if b.full:
        return ys.transpose(0, 1), finals
    return ys.transpose(0, 1).index_select(0, b.inverse), [f.index_select(0, b.inverse) for f in finals]


@lru_cache(maxsize=32)
def _perm(n_gates: int, order: tuple[int, ...], H: int, device: str) -> Tensor:
    with torch.inference_mode(False):  # cached across calls: never an inference tensor (training after
        # an evaluation under torch.inference_mode() would refuse to save it for backward)
        return torch.cat([torch.arange(k * H, (k + 1) * H) for k in order]).to(device)


def gate_perm(n_gates: int, order: tuple[int, ...], H: int, device: torch.device) -> Tensor:
    """Row index that reorders ``n_gates`` blocks of ``H`` rows into ``order``."""
    return _perm(n_gates, order, H, str(device))


def tanh_from_sigmoid_(s: Tensor) -> Tensor:
    """Turn ``s = sigmoid(2a)`` into ``tanh(a) = 2s - 1`` in place.

    On CPU a float32 ``torch.tanh`` costs ~8 ``sigmoid``s (it goes through MKL's vector math), so the
    kernels feed the tanh gates pre-scaled by 2 and use one sigmoid for all gates. The absolute error
    is below 2e-7 in float32.
    """
    return s.add_(s).sub_(1)
