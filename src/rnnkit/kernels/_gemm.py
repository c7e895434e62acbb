"""The GEMMs of the fused CPU kernels (private): per-step matmuls and the chunked input side.

On CPU in float32 two exact ways of computing ``x @ w.T`` for a fixed ``w`` compete, and which is
faster depends on the machine: oneDNN's matmul with the weight reordered once per call into its blocked
layout (``torch.ops.mkldnn._reorder_linear_weight``; on the AMD VM of docs/performance.md ~2x the
throughput of ``torch.mm`` for a (32, 256) @ (256, 1024) step), or ``torch.mm`` with ``w.T`` made
contiguous once (on the Xeon VM 1.3x *faster* than oneDNN for that step on one thread: 136 against
177 us). :func:`prefer_onednn` times both once per shape and thread count and the kernels use oneDNN
only where it is clearly faster per call (``_MARGIN``). ``RNNKIT_GEMM=onednn`` or ``mm`` forces one;
under ``torch.use_deterministic_algorithms(True)`` it is always ``torch.mm``, so that the rounding does
not depend on a timing. The weight-gradient products ``a^T b`` choose the same way between ``addmm_``
on transposed views and oneDNN on transposed copies. Elsewhere
(float64, other devices, a torch without oneDNN) ``torch.mm``/``addmm``. All are exact GEMMs that
differ only in summation order.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache

import torch
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_post_hook

__all__ = ["onednn_available", "prefer_onednn", "Weight", "add_outer", "InputSide", "Prepared", "prepared"]

_LN_B = torch.ops.aten.native_layer_norm_backward.default


@lru_cache(maxsize=1)
def onednn_available() -> bool:
    """Whether oneDNN's linear ops are there and work (a CPU build of torch with mkldnn)."""
    try:
        w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 2), 1)
        torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2), w, None, "none", [], "")
        return bool(torch.backends.mkldnn.is_available())
    except (AttributeError, RuntimeError):
        return False


def _onednn(t: Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and onednn_available()


def _best_time(fn, reps: int = 5, calls: int = 8) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - t)
    return best


# oneDNN must be this much faster per call to be chosen. The timing leaves out what it costs around
# the calls: a reorder of the weight per forward and backward (~0.4-2 ms at (1536, 384)), the copy of
# each result into the kernel's buffer, a second copy of the weight in cache. On the Xeon VM the two are
# within noise per call (oneDNN/mm 0.87-1.21 over repeated timings of the language model's shapes),
# so the winner changed from process to process, and forcing oneDNN made a 2 x 384 layer-norm LSTM
# language model's training step 1.27-1.29x slower than forcing torch.mm (the choice per call, 1.03-1.10x
# slower). With this margin that step took 0.92x the time it took with the per-call choice (median of
# 8 interleaved pairs, each re-timing the choice; the kernels' LayerNormLSTM row: 1.02x, noise). On the
# AMD VM oneDNN is 2.2-2.6x faster and is still chosen.
_MARGIN = 0.8


@lru_cache(maxsize=256)
def _measured(kind: str, m: int, k: int, n: int, threads: int) -> bool:
    """Whether oneDNN beat ``torch.mm`` for this product on this machine by the margin above (timed once,
    ~10-50 ms)."""
    # constant operands: the timing does not depend on the values, and the global RNG is not touched
    # (a seeded run must not depend on whether this shape was timed before)
    with torch.no_grad():
        if kind == "linear":  # (m, k) @ (n, k)^T, the weight fixed
            x, w = torch.full((m, k), 0.5), torch.full((n, k), 0.25)
            packed, wt = torch.ops.mkldnn._reorder_linear_weight(w, m), w.t().contiguous()
            one = lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")  # noqa: E731
            other = lambda: torch.mm(x, wt)  # noqa: E731
        else:  # "outer": acc (n, k) += a^T b with a (m, n), b (m, k)
            a, b, acc = torch.full((m, n), 0.5), torch.full((m, k), 0.25), torch.zeros(n, k)
            one = lambda: acc.add_(torch.ops.mkldnn._linear_pointwise(  # noqa: E731
                a.t().contiguous(), b.t().contiguous(), None, "none", [], ""))
            other = lambda: acc.addmm_(a.t(), b)  # noqa: E731
        t_one, t_other = _best_time(one), _best_time(other)
        t_one, t_other = min(t_one, _best_time(one)), min(t_other, _best_time(other))  # A B A B
    return t_one < _MARGIN * t_other


def prefer_onednn(kind: str, m: int, k: int, n: int, like: Tensor) -> bool:
    """Use oneDNN for a ``kind`` ("linear" or "outer") product of these sizes? (module doc)"""
    if not _onednn(like):
        return False
    forced = os.environ.get("RNNKIT_GEMM", "auto")
    if forced not in ("auto", "onednn", "mm"):
        raise ValueError(f"RNNKIT_GEMM: expected auto, onednn or mm, got {forced!r}")
    if forced != "auto":
        return forced == "onednn"
    if torch.are_deterministic_algorithms_enabled():
        return False  # a timing-dependent choice would make the rounding differ from run to run
    return _measured(kind, m, k, n, torch.get_num_threads())


class Weight:
    """``x @ w.T`` (``+ bias``, ``+ other``) for a fixed ``w`` (out, in) used many times in one call."""

    def __init__(self, w: Tensor, rows: int, *, wt: Tensor | None = None) -> None:
        self.w = w.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.w, rows) \
            if prefer_onednn("linear", rows, self.w.shape[1], self.w.shape[0], self.w) else None
        if self.packed is not None:  # the overloads themselves: no per-call Python overload resolution
            self._plain = torch.ops.mkldnn._linear_pointwise.default
            self._add = torch.ops.mkldnn._linear_pointwise.binary
        else:  # (in, out): torch.mm's fastest operand layout (1.2-1.7x a transposed view's, Xeon VM)
            self.wt = wt.detach() if wt is not None else self.w.t().contiguous()

    @classmethod
    def transposed(cls, w: Tensor, rows: int) -> "Weight":
        """``x @ w`` for a contiguous ``w`` (in, out), e.g. a forward weight in a backward pass.

        ``Weight(w.t().contiguous(), rows)`` would transpose ``w`` twice for ``torch.mm`` (each copy
        ~0.6-1.1 ms at (1536, 384) on the Xeon VM; a 2 x 384 layer-norm LSTM language model's ~200 ms
        training step made up to ten); here ``w`` is that operand as it is, and only oneDNN's packing
        gets a transposed copy."""
        w = w.detach()
        if prefer_onednn("linear", rows, w.shape[0], w.shape[1], w):
            return cls(w.t().contiguous(), rows)
        return cls(w.t(), rows, wt=w.contiguous())

    def __call__(self, x: Tensor, bias: Tensor | None = None, other: Tensor | None = None,
                 out: Tensor | None = None) -> Tensor:
        if out is not None:  # x W^T written into out (no bias, no other): torch.mm writes it in place
            assert bias is None and other is None
            return torch.mm(x, self.wt, out=out) if self.packed is None else out.copy_(self(x))
        if self.packed is not None:
            if other is not None:
                return self._add(x, other, self.packed, bias, "add")
            return self._plain(x, self.packed, bias, "none", [], "")
        if other is not None:
            return torch.addmm(other, x, self.wt) if bias is None else torch.addmm(other, x, self.wt).add_(bias)
        return torch.mm(x, self.wt) if bias is None else torch.addmm(bias, x, self.wt)


def add_outer(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """``acc += a^T @ b`` for ``a`` (K, M), ``b`` (K, N): a weight gradient summed over K rows."""
    if a.shape[0] == 0:
        return
    if prefer_onednn("outer", a.shape[0], b.shape[1], a.shape[1], a):
        at, bt = a.t().contiguous(), b.t().contiguous()  # (M, K), (N, K): oneDNN's row-major operands
        acc.add_(torch.ops.mkldnn._linear_pointwise(at, bt, None, "none", [], ""))
    else:
        acc.addmm_(a.t(), b)


class InputSide:
    r"""The input side of the gates, one chunk of steps at a time: :math:`\mathrm{LN}(x W^\top; \gamma) +
    b` with a ``gain`` :math:`\gamma`, else :math:`x W^\top + b`.

    ``forward(t0, t1)`` computes a chunk just before the recurrence uses it, so it is consumed while in
    cache; ``backward(t0, t1, d)`` takes the chunk's gradient ``d`` (rows, G) and accumulates
    ``d_w``, ``d_gain``, ``d_bias`` and the chunk of ``dx``. With a gain the GEMM output (the norm's
    input) is kept in ``keep`` (T, B, G) for the backward.
    """

    def __init__(self, x: Tensor, w: Tensor, bias: Tensor | None, gain: Tensor | None, eps: float,
                 rows: int, keep: Tensor | None = None, prep: "Prepared | None" = None) -> None:
        self.x, self.bias, self.gain, self.eps, self.keep = x, bias, gain, eps, keep  # x (T, B, I)
        self.w = Weight(w, rows) if prep is None else prep.weight(w, rows)
        self.rows, self.stats, self.end = rows, {}, 0

    def forward(self, t0: int, t1: int) -> Tensor:
        self.end = max(self.end, t1)  # the chunks run: past the longest sequence none is (chunks())
        xc = self.x[t0:t1].reshape(-1, self.x.shape[-1])  # (c B, I)
        if self.gain is None:
            return self.w(xc, self.bias)  # (c B, G)
        xp = self.w(xc, out=self.keep[t0:t1].view(xc.shape[0], -1))
        xa, mean, rstd = torch.native_layer_norm(xp, self.gain.shape, self.gain, self.bias, self.eps)
        self.stats[t0] = (mean, rstd)
        return xa

    def begin_backward(self, need_dx: bool) -> None:
        w = self.w.w
        self.d_w = torch.zeros_like(w)
        self.d_bias = None if self.bias is None else torch.zeros_like(self.bias)
        self.d_gain = None if self.gain is None else torch.zeros_like(self.gain)
        self.dx = torch.empty_like(self.x) if need_dx else None
        if self.dx is not None and self.end < self.x.shape[0]:
            # steps past the longest sequence (whole chunks with no running row) get no backward(): their
            # gradient is zero, and was left as empty_like's memory (garbage, NaN, 1e38 upstream)
            self.dx[self.end:].zero_()
        self.w_t = Weight.transposed(w, self.rows) if need_dx else None

    def backward(self, t0: int, t1: int, d: Tensor) -> None:
        xc = self.x[t0:t1].reshape(-1, self.x.shape[-1])
        if self.gain is not None:
            mask = [True, True, self.bias is not None]
            xp = self.keep[t0:t1].view(xc.shape[0], -1)
            d, dg, db = _LN_B(d, xp, self.gain.shape, *self.stats[t0], self.gain, self.bias, mask)
            self.d_gain.add_(dg)
            if self.bias is not None:
                self.d_bias.add_(db)
        elif self.bias is not None:
            self.d_bias.add_(d.sum(0))
        add_outer(self.d_w, d, xc)
        if self.dx is not None:
            self.dx[t0:t1] = self.w_t(d).view(t1 - t0, *self.x.shape[1:])


class Prepared:
    """A kernel's parameters as it uses them (reordered, scaled: ``params``) and their GEMM operands
    (transposed or packed: :meth:`weight`), made once and reused while the parameters do not change.

    Preparing costs a fixed ~1-3 ms per layer and call (copies of every weight matrix; measured on the
    Xeon VM at H=320: ``index_select`` 0.17 ms and a transposed copy 0.54 ms per (1280, 320) matrix),
    which a T=1 call of text generation paid for ~0.1 ms of arithmetic. Kept, they cost about two more
    copies of the layer's weight matrices in memory.
    """

    def __init__(self, params: tuple) -> None:
        self.params, self._weights = params, {}

    def weight(self, w: Tensor, rows: int) -> Weight:
        """``Weight(w, rows)``, made on the first call for this tensor and row count."""
        key = (w.data_ptr(), tuple(w.shape), rows)
        made = self._weights.get(key)
        if made is None:
            if len(self._weights) >= 8:  # batch sizes seen so far: keep the memory bounded
                self._weights.clear()
            made = self._weights[key] = Weight(w, rows)
        return made


_OPTIMIZER_STEPS = [0]  # torch.optim steps taken in this process (any optimizer): part of the key below


def _count_step(optimizer, args, kwargs) -> None:
    if any(group.get("fused") for group in optimizer.param_groups):  # the others bump the versions
        _OPTIMIZER_STEPS[0] += 1


# torch's fused (``fused=True``) optimizers update parameters in one kernel that does not bump their
# version counters, so a version alone missed that update: the kept weights were the old ones
# (a no_grad call after ``Adam(fused=True).step()`` in evaluation mode differed by 0.59). A step of a
# fused optimizer now drops every kept copy (the counter is part of the key); the others bump versions,
# and counting them too re-prepared a frozen model at every step of another one being trained.
register_optimizer_step_post_hook(_count_step)


def prepared(cell, build) -> tuple[tuple, Prepared | None]:
    """``(build(), None)`` where a gradient may be needed, else ``(params, Prepared)`` kept on ``cell``
    from an earlier call while the cell's parameters are unchanged: the same tensors, on the same
    storage, with the same dtype, device, shape and version.

    Kept only in evaluation mode with nothing to differentiate (``torch.no_grad()`` or parameters that
    do not require a gradient): generation, scoring, serving. An optimizer step, ``load_state_dict``
    or any in-place change under ``no_grad`` bumps a version (a fused optimizer's step, which does not,
    counts: :data:`_OPTIMIZER_STEPS`); ``model.double()``, ``.to(device)`` and
    ``p.data = ...`` give a parameter new storage; a parameter replaced by another tensor is another
    object: each makes the next call prepare again. The kept entry holds the tensors and their storage,
    so no new tensor can take over their memory address meanwhile. Weights computed per call (a
    parametrization such as weight norm) are new tensors each time: prepared every call, as are
    parameters created under ``torch.inference_mode()`` (no version counter). An in-place change
    through ``p.data`` is not seen (``.data`` has a version counter of its own): after one,
    ``model.eval()`` (any change of mode) or a call that may be differentiated drops the kept copy.
    """
    tensors = list(cell.parameters())
    if cell.training or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) or \
            any(t.is_inference() for t in tensors):
        # a call that may be differentiated is usually followed by an update (perhaps through ``p.data``,
        # which no version sees): the kept copy goes, and its memory with it
        cell.__dict__.pop("_rnnkit_prepared", None)
        return build(), None
    key = [_OPTIMIZER_STEPS[0]] + [(t.data_ptr(), t.dtype, t.device, tuple(t.shape), t._version) for t in tensors]
    kept = cell.__dict__.get("_rnnkit_prepared")
    if kept is None or kept[2] != key or any(a is not b for a, b in zip(kept[0], tensors)):
        with torch.no_grad():  # detached aliases keep the storages (and so their addresses) alive
            kept = (tensors, [t.detach() for t in tensors], key, Prepared(build()))
        cell.__dict__["_rnnkit_prepared"] = kept
    return kept[3].params, kept[3]
