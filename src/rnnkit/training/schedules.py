"""Optimizers and learning-rate schedules built from a :class:`TrainerConfig`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from rnnkit.errors import ConfigError
from rnnkit.training.config import TrainerConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(model: nn.Module, config: TrainerConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters.

    Weight decay applies to matrices (``ndim >= 2``) only; biases and gains are not decayed.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__}: expected trainable parameters, got none")
    matrices = [p for p in params if p.ndim >= 2]
    vectors = [p for p in params if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": config.weight_decay},
              {"params": vectors, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=config.lr, betas=config.betas, eps=config.eps)


def lr_factor(config: TrainerConfig, total_steps: int | None,
              elapsed: Callable[[], float] | None = None) -> Callable[[int], float]:
    """The multiplier of the base learning rate at update ``t`` (0-based) for constant/cosine.

    Linear warmup over ``warmup_steps`` (update ``t`` uses ``(t + 1) / warmup_steps``); then
    constant, or a half cosine from 1 down to ``min_lr / lr`` at ``total_steps``. A run bounded
    only by ``max_time`` decays over its wall-clock budget instead (``elapsed()`` seconds of
    ``max_time``): the right schedule for fixed-budget comparisons, though not bit-reproducible.
    """
    warmup = config.warmup_steps
    floor = config.min_lr / config.lr if config.lr > 0 else 0.0
    by_time = config.schedule == "cosine" and total_steps is None and config.max_time and elapsed is not None
    if config.schedule == "cosine" and total_steps is None and not by_time:
        epochs = "" if config.tbptt_steps is not None else "max_epochs, "  # with TBPTT chunks per epoch are unknown
        raise ConfigError(f"schedule='cosine' needs the run's length: set max_steps, schedule_steps, {epochs}"
                          "or max_time" + (" (max_epochs does not plan it under tbptt_steps: chunks per "
                                           "batch are unknown in advance)" if not epochs else ""))

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        if config.schedule != "cosine":
            return 1.0
        if by_time:
            progress = min(1.0, max(0.0, elapsed()) / config.max_time)
        else:
            progress = min(1.0, (t - warmup) / max(1, total_steps - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainerConfig, total_steps: int | None,
                    elapsed: Callable[[], float] | None = None) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-step ``LambdaLR`` (constant/cosine), or ``ReduceLROnPlateau`` stepped on validation loss.

    ``LambdaLR`` keeps no closure in its ``state_dict``: the schedule always comes from the config.
    """
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience,
            min_lr=config.min_lr)
    if config.schedule == "constant" and not config.warmup_steps:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps, elapsed))
