"""Tiny models and data sets that follow the trainer's contracts (shared by tests and scripts)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset


class LMOut(NamedTuple):
    loss: Tensor
    state: Any
    logits: Tensor


class PairState(NamedTuple):
    h: Tensor
    c: Tensor


class RegOut(NamedTuple):
    loss: Tensor
    state: PairState
    mae: Tensor


class TinyLM(nn.Module):
    """Embedding -> GRU -> dropout -> Linear; mean cross-entropy over all tokens."""

    def __init__(self, vocab: int = 11, hidden: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab)
        self.inputs_seen: list[Tensor | None] = []

    def forward(self, input_ids: Tensor, targets: Tensor, state: Tensor | None = None) -> LMOut:
        self.inputs_seen.append(state)
        y, state = self.rnn(self.embed(input_ids), state)
        logits = self.head(self.drop(y))
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return LMOut(loss, state, logits)


class TinyRegressor(nn.Module):
    """LSTM over (B, T, F) -> Linear; MSE against y (B, T, 1); state is a NamedTuple (h, c)."""

    def __init__(self, features: int = 3, hidden: int = 6, dropout: float = 0.0) -> None:
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)
        self.states_seen: list[PairState | None] = []

    def forward(self, x: Tensor, y: Tensor, state: PairState | None = None) -> RegOut:
        self.states_seen.append(state)
        out, (h, c) = self.rnn(x, None if state is None else tuple(state))
        pred = self.head(self.drop(out))
        return RegOut(nn.functional.mse_loss(pred, y), PairState(h, c), (pred - y).abs().mean())


class ConstValModel(nn.Module):
    """Training loss (w - 3)^2; in eval mode a constant 1.0, so validation never improves."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))

    def forward(self, x: Tensor, state: Any = None) -> LMOut:
        loss = ((self.w - 3.0) ** 2).mean() + 0.0 * x.sum()
        if not self.training:
            loss = loss.detach() * 0.0 + 1.0
        return LMOut(loss, None, x)


class DictDataset(Dataset):
    """Map-style data set over a dict of tensors sharing their first dimension."""

    def __init__(self, **tensors: Tensor) -> None:
        self.tensors = tensors
        self.n = next(iter(tensors.values())).shape[0]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


class TokenStream:
    """A contiguous token stream in ``rows`` parallel rows, cut into (rows/world, T) batches (Zaremba)."""

    stateful = True

    def __init__(self, tokens: Tensor, rows: int, steps: int) -> None:
        usable = (tokens.numel() - 1) // rows * rows
        self.inputs = tokens[:usable].reshape(rows, -1)
        self.targets = tokens[1 : usable + 1].reshape(rows, -1)
        self.steps = steps

    def __len__(self) -> int:
        return self.inputs.shape[1] // self.steps

    def iter_batches(self, epoch: int, rank: int = 0, world_size: int = 1):
        rows = slice(rank, None, world_size)
        for b in range(len(self)):
            cols = slice(b * self.steps, (b + 1) * self.steps)
            yield {"input_ids": self.inputs[rows, cols], "targets": self.targets[rows, cols]}


def lm_data(n: int = 16, t: int = 12, vocab: int = 11, seed: int = 0) -> DictDataset:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, t + 1), generator=g)
    return DictDataset(input_ids=ids[:, :-1], targets=ids[:, 1:])


def reg_data(n: int = 8, t: int = 10, features: int = 3, seed: int = 0, dtype=torch.float32) -> DictDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, features, generator=g, dtype=dtype)
    y = x.sum(-1, keepdim=True).cumsum(1) * 0.1
    return DictDataset(x=x, y=y)
