"""Shared parameter helpers for the cells (private)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["uniform_param", "torch_init_bound"]


def torch_init_bound(hidden_size: int) -> float:
    """The bound of torch.nn's recurrent initialisation, U(-1/sqrt(H), 1/sqrt(H))."""
    return 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0


def uniform_param(*shape: int, bound: float, device=None, dtype=None) -> nn.Parameter:
    """A parameter drawn from U(-bound, bound), as torch.nn initialises its recurrent layers."""
    w = torch.empty(*shape, device=device, dtype=dtype)
    nn.init.uniform_(w, -bound, bound)
    return nn.Parameter(w)


def check_sizes(name: str, input_size: int, hidden_size: int) -> None:
    """Refuse sizes that are not positive integers, naming the cell."""
    for what, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name}: {what} must be a positive int, got {v!r}")
