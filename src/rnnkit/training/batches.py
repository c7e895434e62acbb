"""Data for the trainer: the ``iter_batches`` protocol, map-style datasets, and time chunks.

The trainer reads every data source through one protocol::

    data.iter_batches(epoch, rank=0, world_size=1) -> Iterator[dict[str, Tensor]]
    len(data)                                      # batches per epoch for one rank
    data.stateful                                  # optional: carry the state across batches

A map-style :class:`torch.utils.data.Dataset` of dicts of tensors is wrapped in
:class:`DatasetBatches`, whose order depends only on ``(seed, epoch)`` (a
:class:`~torch.utils.data.DistributedSampler` with ``num_replicas = world_size``), so a run can
resume in the middle of an epoch and ``N`` processes see the same global batches as one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["DatasetBatches", "as_batches", "iterate", "split_time", "check_batch",
           "count_tokens", "batch_weight"]

Batch = dict[str, Tensor]


class DatasetBatches:
    """Batches of a map-style dataset in a seeded, epoch-dependent order.

    Args:
        dataset: items are dicts of tensors of equal shapes (stacked by ``collate_fn``).
        batch_size: items per batch, per process.
        shuffle: a new permutation every epoch (``seed + epoch``); ``False`` keeps dataset order.
        world_size: the number of processes, used by ``len()`` only.
    """

    stateful = False

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, world_size: int = 1, num_workers: int = 0,
                 collate_fn: Callable[[list[Any]], Batch] | None = None) -> None:
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DatasetBatches: expected a map-style Dataset, got {type(dataset).__name__}")
        if batch_size < 1:
            raise ValueError(f"DatasetBatches: expected batch_size >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.drop_last, self.world_size, self.num_workers = drop_last, world_size, num_workers
        self.collate_fn = collate_fn

    def _batches(self, epoch: int, rank: int, world_size: int, pad: bool = True) -> list[list[int]]:
        # pad: the sampler repeats items so every rank gets as many (training needs equal step counts);
        # evaluation must not count an item twice, so it takes the same order and shards it unpadded
        sampler = DistributedSampler(self.dataset, num_replicas=world_size if pad else 1,
                                     rank=rank if pad else 0, shuffle=self.shuffle, seed=self.seed)
        sampler.set_epoch(epoch)
        order = list(sampler) if pad else list(sampler)[rank::world_size]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __len__(self) -> int:
        per_rank = math.ceil(len(self.dataset) / self.world_size)
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def iter_batches(self, epoch: int, rank: int = 0, world_size: int = 1, start: int = 0,
                     pad: bool = True) -> Iterator[Batch]:
        """Yield the batches of ``epoch`` for ``rank``, skipping the first ``start`` without loading them.

        ``pad=False`` (evaluation) shards without repeating items, so ranks may get unequal counts.
        """
        batches = self._batches(epoch, rank, world_size, pad)[start:]
        if not batches:
            return iter(())
        # an own generator: creating the loader must not draw from the global torch RNG (exact resume)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                            collate_fn=self.collate_fn, generator=generator)
        return iter(loader)


def as_batches(data: Any, *, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False,
               world_size: int = 1, num_workers: int = 0) -> Any:
    """Return ``data`` if it follows the ``iter_batches`` protocol, else wrap a map-style dataset."""
    if hasattr(data, "iter_batches"):
        return data
    if isinstance(data, (Dataset, list, tuple)) and hasattr(data, "__len__"):
        return DatasetBatches(data, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                              world_size=world_size, num_workers=num_workers)
    raise TypeError("training data: expected an object with iter_batches(epoch, rank, world_size) or a "
                    f"map-style torch.utils.data.Dataset of dicts of tensors, got {type(data).__name__}")


def iterate(data: Any, epoch: int, rank: int, world_size: int, start: int = 0,
            pad: bool = True) -> Iterator[Batch]:
    """The batches of one epoch for one rank, from batch ``start`` on (for mid-epoch resume).

    ``pad=False`` is for evaluation: a map-style dataset's items are each seen exactly once over all
    ranks (training pads the shards to equal length by repeating items).
    """
    if isinstance(data, DatasetBatches):
        return data.iter_batches(epoch, rank, world_size, start=start, pad=pad)
    batches = data.iter_batches(epoch, rank=rank, world_size=world_size)
    return itertools.islice(batches, start, None) if start else iter(batches)


def check_batch(batch: Any) -> Batch:
    """Raise ``TypeError`` unless ``batch`` is a non-empty dict of tensors."""
    if not isinstance(batch, dict) or not batch:
        raise TypeError(f"batch: expected a non-empty dict of tensors, got {type(batch).__name__}")
    for name, value in batch.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"batch[{name!r}]: expected a Tensor, got {type(value).__name__}")
    return batch


def split_time(batch: Batch, steps: int | None) -> list[Batch]:
    """Cut axis 1 of every tensor with ``ndim >= 2`` into chunks of ``steps`` (the last may be shorter).

    Tensors with fewer dimensions (per-sequence labels, lengths) are passed unchanged to every chunk.
    """
    lengths = {name: t.shape[1] for name, t in batch.items() if t.ndim >= 2}
    if steps is None or not lengths:
        return [batch]
    if len(set(lengths.values())) > 1:
        raise ValueError(f"tbptt_steps: tensors with ndim >= 2 must share their time axis (axis 1), "
                         f"got lengths {lengths}")
    total = next(iter(lengths.values()))
    return [{name: t[:, start : start + steps] if t.ndim >= 2 else t for name, t in batch.items()}
            for start in range(0, total, steps)]


def count_tokens(batch: Batch) -> int:
    """Tokens (time steps times sequences) in a batch, for throughput: ``input_ids`` or ``B*T``."""
    if "input_ids" in batch:
        return batch["input_ids"].numel()
    first = next(iter(batch.values()))
    return first.shape[0] * first.shape[1] if first.ndim >= 2 else first.shape[0]


def batch_weight(batch: Batch) -> int:
    """How much a batch's mean loss weighs in an average over batches: its targets' size, else ``B``."""
    for name in ("targets", "labels", "target", "y"):
        if name in batch:
            return max(batch[name].numel(), 1)
    first = next(iter(batch.values()))
    return max(first.shape[0] if first.ndim else 1, 1)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor of ``batch`` to ``device`` (dtypes unchanged)."""
    return {name: t.to(device, non_blocking=True) for name, t in batch.items()}
