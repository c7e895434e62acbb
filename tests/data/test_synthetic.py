"""Tests of rnnkit.data.synthetic: layouts, seeding, and baselines checked by Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit.data import (
    IGNORE_INDEX,
    adding_problem,
    adding_problem_baseline,
    copy_memory,
    copy_memory_baseline,
    parity,
    parity_baseline,
    selective_copy,
    selective_copy_baseline,
)


def _marginal_cross_entropy(targets: torch.Tensor, n_classes: int) -> float:
    """Mean cross-entropy of the best memoryless predictor: per-position target frequencies.

    Scored positions are those whose target is not IGNORE_INDEX.
    """
    mask = targets != IGNORE_INDEX  # (n, L)
    safe = targets.clamp(min=0)
    counts = F.one_hot(safe, n_classes).mul(mask.unsqueeze(-1)).sum(0).double()  # (L, C)
    probs = counts / counts.sum(-1, keepdim=True).clamp(min=1)
    picked = probs[torch.arange(targets.shape[1]).expand_as(targets), safe]  # (n, L)
    nll = -torch.log(picked.clamp(min=1e-300))
    return float(nll[mask].mean())


def test_adding_problem_layout_and_baseline():
    T = 30
    task = adding_problem(20000, T, seed=1)
    assert task.inputs.shape == (20000, T, 2) and task.targets.shape == (20000, 1)
    values, markers = task.inputs[..., 0], task.inputs[..., 1]
    assert torch.equal(markers.sum(1), torch.full((20000,), 2.0))
    assert torch.equal(markers[:, : T // 2].sum(1), torch.ones(20000))  # one in each half
    torch.testing.assert_close(task.targets[:, 0], (values * markers).sum(1))
    mse = float(((task.targets - 1.0) ** 2).mean())
    assert adding_problem_baseline() == pytest.approx(0.1667, abs=1e-4)
    assert mse == pytest.approx(adding_problem_baseline(), abs=0.005)


def test_seeding_is_explicit_and_reproducible():
    a = adding_problem(5, 10, seed=3)
    b = adding_problem(5, 10, generator=torch.Generator().manual_seed(3))
    c = adding_problem(5, 10, seed=4)
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)
    assert torch.equal(parity(4, 8).inputs, parity(4, 8, seed=0).inputs)  # default seed 0
    with pytest.raises(ValueError, match="not both"):
        parity(2, 3, seed=1, generator=torch.Generator())


def test_copy_memory_layout_and_memoryless_baseline():
    T, S, K = 50, 8, 10
    task = copy_memory(4000, T, n_symbols=S, copy_len=K, seed=2)
    x, y = task.inputs, task.targets
    assert x.shape == y.shape == (4000, T + 2 * K) and x.dtype == torch.long
    symbols = x[:, :K]
    assert symbols.min() >= 1 and symbols.max() <= S
    assert (x[:, K : T + K - 1] == 0).all() and (x[:, T + K - 1] == S + 1).all()
    assert (x[:, T + K :] == 0).all()
    assert (y[:, : T + K] == 0).all() and torch.equal(y[:, T + K :], symbols)
    baseline = copy_memory_baseline(T, S, K)
    assert baseline == pytest.approx(10 * math.log(8) / (T + 20))
    assert _marginal_cross_entropy(y, S + 2) == pytest.approx(baseline, rel=0.01)


def test_selective_copy_layout_and_baseline():
    T, S, M = 40, 8, 6
    task = selective_copy(4000, T, n_symbols=S, n_memorize=M, seed=5)
    x, y = task.inputs, task.targets
    assert x.shape == y.shape == (4000, T + M)
    head = x[:, :T]
    assert torch.equal((head > 0).sum(1), torch.full((4000,), M))  # M symbols, distinct places
    assert (x[:, T:] == S + 1).all() and (y[:, :T] == IGNORE_INDEX).all()
    in_order = head[head > 0].view(4000, M)  # symbols in order of appearance
    assert torch.equal(y[:, T:], in_order)
    assert _marginal_cross_entropy(y, S + 2) == pytest.approx(selective_copy_baseline(S), rel=0.01)
    loss = F.cross_entropy(torch.zeros(4000 * (T + M), S + 2), y.view(-1))  # ignores -100
    assert float(loss) == pytest.approx(math.log(S + 2))


def test_parity_targets_and_baseline():
    task = parity(20000, 12, seed=7)
    assert task.inputs.shape == (20000, 12, 1) and task.targets.dtype == torch.long
    ones = task.inputs.squeeze(-1).sum(1).long()
    assert torch.equal(task.targets, ones % 2)
    majority = max(task.targets.float().mean(), 1 - task.targets.float().mean())
    assert float(majority) == pytest.approx(0.5, abs=0.01)
    assert _marginal_cross_entropy(task.targets.unsqueeze(1), 2) == pytest.approx(
        parity_baseline(), abs=0.001)


def test_bad_sizes_and_seeds_are_refused_naming_the_argument():
    from rnnkit.data.synthetic import copy_memory, copy_memory_baseline, selective_copy_baseline
    for kwargs, error, pattern in (({"n": 2.5}, TypeError, "n must be an integer, got 2.5"),
                                   ({"T": True}, TypeError, "T must be an integer, got True"),
                                   ({"seed": "a"}, TypeError, "seed must be an integer, got 'a'"),
                                   ({"n": 0}, ValueError, "n must be >= 1, got 0")):
        with pytest.raises(error, match=pattern):
            adding_problem(**{"n": 2, "T": 10, **kwargs})
    with pytest.raises(ValueError, match="n_symbols must be >= 1, got 0"):
        copy_memory(2, 10, n_symbols=0)
    with pytest.raises(ValueError, match="copy_len must be >= 1, got 0"):
        copy_memory_baseline(10, copy_len=0)  # was ZeroDivisionError with T=0
    with pytest.raises(ValueError, match="T must be >= 1, got 0"):
        copy_memory_baseline(0)
    with pytest.raises(ValueError, match="n_symbols must be >= 1, got 0"):
        selective_copy_baseline(0)
    assert adding_problem(2, np.int64(10), seed=np.int64(3)).inputs.shape == (2, 10, 2)
