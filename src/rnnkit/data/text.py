"""Text data: reading files, language-model streams and windows, labelled and parallel text.

Two ways to feed a language model:

- :class:`LMStream` (``stateful = True``): the token stream is cut into ``B`` contiguous
  rows (Zaremba et al., 2014) and consecutive batches continue each row, so the recurrent
  state of batch ``k`` is the right initial state for batch ``k + 1``.
- :class:`TextWindows` (``stateful = False``): a map-style dataset of fixed windows of the
  stream, to be shuffled by the consumer; each window starts from a fresh state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from rnnkit.data._io import read_lines, read_text
from rnnkit.data.corpora import LabelledText, ParallelCorpus
from rnnkit.errors import DataError

__all__ = ["read_text", "read_lines", "LMStream", "TextWindows", "LabelledText", "ParallelCorpus"]

Batch = dict[str, torch.Tensor]


def _as_ids(ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(ids, dtype=torch.long if len(ids) == 0 else None)  # [] is no float stream
    if t.dim() != 1:
        raise ValueError(f"expected a 1-D token stream, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"token ids must be integers, got {t.dtype}")
    return t.to(torch.long)


def _check_shard(batch_size: int, rank: int, world_size: int) -> int:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by world_size {world_size}; "
            "pick a batch size that is a multiple of the number of processes"
        )
    return batch_size // world_size


class LMStream:
    """A token stream batchified into ``batch_size`` rows for stateful (TBPTT) training.

    The stream of ``N`` tokens is cut to ``B * L`` tokens (``L = N // B``, the tail is
    dropped) and viewed as ``(B, L)``: row ``b`` is the contiguous chunk
    ``ids[b*L : (b+1)*L]``. Batch ``k`` holds columns ``[k*T, k*T + T)`` as ``input_ids``
    and the same columns shifted by one as ``targets``, so row ``b`` of batch ``k + 1``
    continues row ``b`` of batch ``k`` and a recurrent state can be carried across. The last
    batch is shorter when ``L - 1`` is not a multiple of ``T`` (unless ``drop_last``).

    Distributed training: the ``B`` streams (rows here; the "columns" of Zaremba's
    time-major ``(L, B)`` layout) are split between the ranks. With ``world_size = W``
    processes, rank ``r`` gets streams ``[r*B/W, (r+1)*B/W)`` of every batch (``B`` must be
    divisible by ``W``), so every rank sees the same number of batches, each ``(B/W, T)``,
    and carries its own streams' state from batch to batch.

    Args:
        ids: the 1-D token stream.
        batch_size: ``B``, the number of parallel streams (the global batch size).
        seq_len: ``T``, time steps per batch (the TBPTT length).
        drop_last: drop the final, shorter batch.
        name: what the stream is, for error messages (e.g. the file it came from).
    """

    stateful = True

    def __init__(
        self,
        ids: Sequence[int] | torch.Tensor,
        batch_size: int,
        seq_len: int,
        *,
        drop_last: bool = False,
        name: str = "token stream",
    ):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        stream = _as_ids(ids)
        cols = stream.numel() // batch_size
        if cols < 2:
            raise DataError(
                f"{name}: {stream.numel()} tokens are too few for batch_size {batch_size} "
                f"(need at least {2 * batch_size}); use more text or a smaller batch size"
            )
        self.batch_size, self.seq_len, self.drop_last = batch_size, seq_len, drop_last
        self.data = stream[: batch_size * cols].view(batch_size, cols)  # (B, L)

    @classmethod
    def from_text(cls, text: str, tokenizer: Any, batch_size: int, seq_len: int,
                  **kwargs: Any) -> LMStream:
        """Encode ``text`` with ``tokenizer`` (anything with ``encode``) and batchify it."""
        return cls(tokenizer.encode(text), batch_size, seq_len, **kwargs)

    @property
    def num_tokens(self) -> int:
        """Tokens used per epoch (the batchified stream, ``B * L``)."""
        return self.data.numel()

    def __len__(self) -> int:
        steps = self.data.shape[1] - 1  # the last column is only ever a target
        return steps // self.seq_len if self.drop_last else math.ceil(steps / self.seq_len)

    def iter_batches(self, epoch: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Yield ``{"input_ids": (B/W, T), "targets": (B/W, T)}`` long tensors in stream order.

        ``epoch`` does not change the order (a stateful stream is never shuffled); it is
        accepted so that every rnnkit data source has the same ``iter_batches`` signature.
        """
        per_rank = _check_shard(self.batch_size, rank, world_size)
        rows = self.data[rank * per_rank : (rank + 1) * per_rank]  # (B/W, L)
        for k in range(len(self)):
            start = k * self.seq_len
            stop = min(start + self.seq_len, rows.shape[1] - 1)
            # Contiguous copies, so that callers may .view() them (e.g. flatten for the loss).
            yield {"input_ids": rows[:, start:stop].contiguous(),
                   "targets": rows[:, start + 1 : stop + 1].contiguous()}

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_batches(0)


class TextWindows(Dataset):
    """Fixed windows of a token stream, as a map-style dataset (no state carried).

    Item ``i`` is ``{"input_ids": ids[s : s+T], "targets": ids[s+1 : s+T+1]}`` with
    ``s = i * stride``; ``len()`` is the number of windows. Shuffling, batching and
    sharding between ranks are left to the consumer: rnnkit's Trainer wraps a map-style
    dataset in a seeded, epoch-dependent sampler, and a shuffling ``DataLoader`` works too
    (the default collate stacks the dicts into ``(B, T)`` tensors).

    Args:
        ids: the 1-D token stream.
        seq_len: ``T``, the window length.
        stride: step between window starts (default ``seq_len``: windows do not overlap).
    """

    stateful = False

    def __init__(self, ids: Sequence[int] | torch.Tensor, seq_len: int, *,
                 stride: int | None = None):
        stride = seq_len if stride is None else stride
        if seq_len < 1 or stride < 1:
            raise ValueError(f"seq_len and stride must be >= 1, got {seq_len}, {stride}")
        self.ids = _as_ids(ids)
        if self.ids.numel() < seq_len + 1:
            raise DataError(
                f"token stream of {self.ids.numel()} tokens is shorter than one window "
                f"({seq_len + 1} tokens); use more text or a smaller seq_len"
            )
        self.seq_len, self.stride = seq_len, stride

    def __len__(self) -> int:
        return (self.ids.numel() - self.seq_len - 1) // self.stride + 1

    def __getitem__(self, index: int) -> Batch:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"window {index} out of range for {n} windows")
        s = (index % n) * self.stride
        return {"input_ids": self.ids[s : s + self.seq_len],
                "targets": self.ids[s + 1 : s + self.seq_len + 1]}
