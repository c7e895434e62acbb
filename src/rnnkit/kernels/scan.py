r"""Parallel scan of the first-order linear recurrence :math:`h_t = a_t \odot h_{t-1} + b_t`.

MinGRU and MinLSTM reduce to this recurrence with :math:`a_t \in (0, 1)` and :math:`b_t > 0` given in
log space. Unrolled, :math:`h_t = P_t h_0 + \sum_{s \le t} b_s P_t / P_s` with :math:`P_t = \prod_{r \le t}
a_r`, which is computed with a cumulative sum and a ``logcumsumexp`` in O(T) work.

Numerical stability: :math:`\log P_t` reaches ``-T * max|log a|`` (about -2e5 at T=4096 with large
inputs); adding it back to the ``logcumsumexp`` cancels two numbers of that size, which loses all
accuracy in float32 (the naive form of Feng et al. 2024 does this). Both are therefore accumulated in
float64, where the cancellation error stays below 1e-10 of the result, and ``h_0`` (which may be
negative) is carried by the stable real product ``P_t h_0`` instead of through the logarithm.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["log_space_scan"]


def log_space_scan(log_a: Tensor, log_b: Tensor, h0: Tensor | None = None) -> Tensor:
    """Return ``h`` (B, T, H) for ``h_t = exp(log_a_t) * h_{t-1} + exp(log_b_t)`` over axis 1.

    ``log_a`` and ``log_b`` are (B, T, H) and finite; ``h0`` is (B, H) of any sign (zero if None).
    """
    dtype = log_a.dtype
    cum = log_a.double().cumsum(1)  # log P_t, (B, T, H)
    h = torch.exp(cum + torch.logcumsumexp(log_b.double() - cum, 1))
    if h0 is not None:
        h = h + torch.exp(cum) * h0.double().unsqueeze(1)
    return h.to(dtype)
