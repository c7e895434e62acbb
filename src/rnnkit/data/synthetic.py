"""Synthetic long-memory tasks, each with the score of its trivial baseline.

Every generator takes ``generator=`` (a ``torch.Generator``) or ``seed=`` (default 0) and
returns a :class:`SyntheticTask` ``(inputs, targets)``. A model has learned something only
when it beats the matching ``*_baseline`` number:

================  =========================  ==========================================
task              inputs / targets           trivial baseline
================  =========================  ==========================================
adding_problem    (n, T, 2) float / (n, 1)   MSE 1/6 = 0.1667 (always predict 1)
copy_memory       (n, T+2K) long / same      CE K log(S) / (T + 2K) (blanks, then guess)
selective_copy    (n, T+M) long / same       CE log(S) on the scored positions
parity            (n, T, 1) float / (n,)     CE log 2 = 0.693 (accuracy 0.5)
================  =========================  ==========================================
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

__all__ = [
    "SyntheticTask",
    "IGNORE_INDEX",
    "adding_problem",
    "adding_problem_baseline",
    "copy_memory",
    "copy_memory_baseline",
    "selective_copy",
    "selective_copy_baseline",
    "parity",
    "parity_baseline",
]

IGNORE_INDEX = -100  # the default ``ignore_index`` of torch's cross-entropy


class SyntheticTask(NamedTuple):
    """A generated data set: ``inputs[i]`` goes with ``targets[i]``."""

    inputs: torch.Tensor
    targets: torch.Tensor


def _generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None:
        if seed is not None:
            raise ValueError("pass generator= or seed=, not both")
        return generator
    return torch.Generator().manual_seed(0 if seed is None else _int("seed", seed, None))


def _int(name: str, value: object, least: int | None) -> int:
    """``value`` as an int, refusing non-integers (2.5, True, "3") and values below ``least``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if least is not None and value < least:
        raise ValueError(f"{name} must be >= {least}, got {value}")
    return int(value)


def _check(n: int, T: int, least_T: int) -> None:
    _int("n", n, 1)
    _int("T", T, least_T)


def adding_problem(n: int, T: int, *, generator: torch.Generator | None = None,
                   seed: int | None = None) -> SyntheticTask:
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015).

    Channel 0 holds values uniform in [0, 1); channel 1 marks two of them with 1, one in
    the first half and one in the second half of the sequence. The target is the sum of
    the two marked values. Predicting the mean, 1, scores MSE 1/6 (see
    :func:`adding_problem_baseline`).

    Returns:
        inputs ``(n, T, 2)`` float32, targets ``(n, 1)`` float32.
    """
    _check(n, T, 2)
    gen = _generator(generator, seed)
    values = torch.rand(n, T, generator=gen)
    half = T // 2
    first = torch.randint(0, half, (n,), generator=gen)
    second = torch.randint(half, T, (n,), generator=gen)
    markers = torch.zeros(n, T)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    target = (values[rows, first] + values[rows, second]).unsqueeze(1)
    return SyntheticTask(torch.stack([values, markers], dim=-1), target)


def adding_problem_baseline() -> float:
    """MSE of always predicting 1: the variance of a sum of two U(0,1) values, 2/12 = 0.1667."""
    return 1.0 / 6.0


def copy_memory(n: int, T: int, n_symbols: int = 8, copy_len: int = 10, *,
                generator: torch.Generator | None = None,
                seed: int | None = None) -> SyntheticTask:
    """The copy-memory task (Arjovsky, Shah & Bengio 2016), sequences of ``T + 2 * copy_len``.

    Ids: 0 is blank, ``1..n_symbols`` are symbols, ``n_symbols + 1`` is the delimiter
    (``n_symbols + 2`` ids in all). The input is ``copy_len`` random symbols, ``T - 1``
    blanks, the delimiter, then ``copy_len`` blanks. The target is ``T + copy_len`` blanks
    followed by the ``copy_len`` symbols: after waiting ``T`` steps the model must repeat
    them.

    Returns:
        inputs and targets, both ``(n, T + 2 * copy_len)`` long.
    """
    _check(n, T, 1)
    n_symbols, copy_len = _int("n_symbols", n_symbols, 1), _int("copy_len", copy_len, 1)
    gen = _generator(generator, seed)
    symbols = torch.randint(1, n_symbols + 1, (n, copy_len), generator=gen)
    length = T + 2 * copy_len
    inputs = torch.zeros(n, length, dtype=torch.long)
    inputs[:, :copy_len] = symbols
    inputs[:, T + copy_len - 1] = n_symbols + 1
    targets = torch.zeros(n, length, dtype=torch.long)
    targets[:, T + copy_len :] = symbols
    return SyntheticTask(inputs, targets)


def copy_memory_baseline(T: int, n_symbols: int = 8, copy_len: int = 10) -> float:
    """Cross-entropy (nats per step) of the memoryless strategy.

    It predicts blank until the delimiter and then a uniform guess over the symbols:
    ``copy_len * log(n_symbols) / (T + 2 * copy_len)`` — 10 log 8 / (T + 20) in the paper.
    """
    _int("T", T, 1)
    return _int("copy_len", copy_len, 1) * math.log(_int("n_symbols", n_symbols, 1)) / (T + 2 * copy_len)


def selective_copy(n: int, T: int, n_symbols: int = 8, n_memorize: int = 16, *,
                   generator: torch.Generator | None = None,
                   seed: int | None = None) -> SyntheticTask:
    """The selective-copy task (Gu & Dao 2023), sequences of ``T + n_memorize``.

    Ids as in :func:`copy_memory`: 0 blank, ``1..n_symbols`` symbols, ``n_symbols + 1`` the
    marker asking for output. The first ``T`` inputs are blanks except ``n_memorize`` symbols
    at random distinct positions; then come ``n_memorize`` markers. The targets are the
    symbols in order of appearance at the last ``n_memorize`` positions and
    :data:`IGNORE_INDEX` (-100, ignored by ``torch.nn.functional.cross_entropy``) elsewhere.

    Returns:
        inputs and targets, both ``(n, T + n_memorize)`` long.
    """
    n_symbols, n_memorize = _int("n_symbols", n_symbols, 1), _int("n_memorize", n_memorize, 1)
    _check(n, T, n_memorize)
    gen = _generator(generator, seed)
    symbols = torch.randint(1, n_symbols + 1, (n, n_memorize), generator=gen)
    # Distinct sorted positions per row: the n_memorize smallest of T random keys.
    keys = torch.rand(n, T, generator=gen)
    positions = keys.topk(n_memorize, dim=1, largest=False).indices.sort(dim=1).values
    inputs = torch.zeros(n, T + n_memorize, dtype=torch.long)
    inputs.scatter_(1, positions, symbols)
    inputs[:, T:] = n_symbols + 1
    targets = torch.full((n, T + n_memorize), IGNORE_INDEX, dtype=torch.long)
    targets[:, T:] = symbols
    return SyntheticTask(inputs, targets)


def selective_copy_baseline(n_symbols: int = 8) -> float:
    """Cross-entropy (nats per scored step) of guessing uniformly: ``log(n_symbols)``."""
    return math.log(_int("n_symbols", n_symbols, 1))


def parity(n: int, T: int, *, generator: torch.Generator | None = None,
           seed: int | None = None) -> SyntheticTask:
    """The parity task: is the number of ones in a random bit string odd?

    Returns:
        inputs ``(n, T, 1)`` float32 bits, targets ``(n,)`` long in {0, 1} (1 = odd).
    """
    _check(n, T, 1)
    gen = _generator(generator, seed)
    bits = torch.randint(0, 2, (n, T), generator=gen)
    return SyntheticTask(bits.unsqueeze(-1).float(), bits.sum(dim=1) % 2)


def parity_baseline() -> float:
    """Cross-entropy of guessing 50/50, ``log 2`` = 0.693 nats (accuracy 0.5)."""
    return math.log(2.0)
