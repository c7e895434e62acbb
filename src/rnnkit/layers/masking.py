"""Variable-length batches: checking ``lengths``, reversing each sequence within its own length, and
converting between ``PackedSequence`` and padded tensors with lengths."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

__all__ = ["check_lengths", "reverse_within_lengths", "unpack", "repack"]


def check_lengths(lengths, batch_size: int, seq_len: int, device) -> Tensor:
    """Return ``lengths`` as an int64 tensor on ``device`` after checking count and range."""
    if isinstance(lengths, (list, tuple)):
        lengths = torch.as_tensor(lengths, dtype=torch.long if len(lengths) == 0 else None)
    if not isinstance(lengths, Tensor):
        raise TypeError(f"lengths must be a 1-D integer tensor or list, got {type(lengths).__name__}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if lengths.dim() != 1 or lengths.numel() != batch_size:
        raise ValueError(f"lengths must have one entry per sequence: expected shape ({batch_size},), "
                         f"got {tuple(lengths.shape)}")
    if batch_size:
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 0 or hi > seq_len:
            raise ValueError(f"lengths must lie in [0, {seq_len}] (the padded sequence length), "
                             f"got values from {lo} to {hi}")
    return lengths.to(device=device, dtype=torch.long)


def reverse_within_lengths(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each batch-first sequence ``x[b, :lengths[b]]`` in place of its own steps.

    Padding stays where it is. The map is its own inverse, so it also turns the reversed outputs back.
    """
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
    lens = lengths.unsqueeze(1)
    idx = torch.where(t < lens, lens - 1 - t, t)  # (B, T)
    idx = idx.view(B, T, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


def unpack(packed: PackedSequence) -> tuple[Tensor, Tensor]:
    """A ``PackedSequence`` as a batch-first padded tensor and lengths, in the original batch order."""
    padded, lengths = pad_packed_sequence(packed, batch_first=True)
    return padded, lengths


def repack(y: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack batch-first outputs ``y`` with the batch order and sizes of the input ``like``."""
    order = like.sorted_indices
    if order is not None:
        y, lengths = y.index_select(0, order), lengths.index_select(0, order.to(lengths.device))
    data = pack_padded_sequence(y, lengths.cpu(), batch_first=True, enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)
