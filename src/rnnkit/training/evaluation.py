"""Evaluation: the weighted mean of a model's scalar outputs over a data set, across processes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.training._tree import detach_tree
from rnnkit.training.batches import batch_weight, check_batch, iterate, to_device
from rnnkit.training.distributed import all_reduce_sum, union_names

__all__ = ["model_loss", "scalar_outputs", "evaluate_model"]


def model_loss(output: Any) -> Tensor:
    """The scalar ``output.loss`` of a model call, or a ``TypeError`` saying what was expected."""
    loss = getattr(output, "loss", None)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        got = type(loss).__name__ if not isinstance(loss, Tensor) else f"a tensor of shape {tuple(loss.shape)}"
        raise TypeError(f"model output: expected a NamedTuple with a scalar .loss tensor, got {got} "
                        f"(from {type(output).__name__})")
    return loss.reshape(())


def scalar_outputs(output: Any) -> dict[str, Tensor]:
    """``loss`` plus every other 0-d/1-element tensor field of a NamedTuple output (e.g. accuracy)."""
    values = {"loss": model_loss(output)}
    fields = output._asdict() if hasattr(output, "_asdict") else {}
    for name, value in fields.items():
        if name not in ("loss", "state") and isinstance(value, Tensor) and value.numel() == 1 \
                and value.is_floating_point():
            values[name] = value.reshape(())
    return values


@torch.no_grad()
def evaluate_model(model: nn.Module, data: Any, *, device: torch.device, rank: int = 0, world_size: int = 1,
                   autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                   ) -> dict[str, float]:
    """Mean of each scalar output over ``data`` (weighted by :func:`batch_weight`), in eval mode.

    A stateful stream carries the state from batch to batch. Under ``torchrun`` every process
    evaluates its shard and the sums are added across processes. The model's mode is restored.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, Tensor] = {}
    weight, carry = 0.0, None
    stateful = bool(getattr(data, "stateful", False))
    try:
        for batch in iterate(data, 0, rank, world_size, pad=False):  # every item once, none repeated
            batch = to_device(check_batch(batch), device)
            with autocast():
                output = model(**batch, state=carry)
            carry = detach_tree(getattr(output, "state", None)) if stateful else None
            w = batch_weight(batch)
            for name, value in scalar_outputs(output).items():
                sums[name] = sums.get(name, 0.0) + value.double() * w
            weight += w
    finally:
        model.train(was_training)
    names = union_names(list(sums)) or ["loss"]  # the same list on every process, even one without batches
    packed = torch.stack([torch.tensor(float(weight), dtype=torch.float64, device=device)]
                         + [torch.as_tensor(sums.get(n, 0.0), dtype=torch.float64, device=device) for n in names])
    packed = all_reduce_sum(packed).cpu()
    if packed[0] <= 0:
        raise ValueError("evaluation data: expected at least one batch, got none")
    return {name: float(packed[i + 1] / packed[0]) for i, name in enumerate(names)}
