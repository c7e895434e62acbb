"""Small pieces of trainer setup: device, determinism, gradient norm, the run record."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from rnnkit.errors import ConfigError
from rnnkit.training.distributed import DistEnv

if TYPE_CHECKING:
    from rnnkit.training.trainer import Trainer

__all__ = ["resolve_device", "set_determinism", "grad_norm", "clip_gradients", "planned_steps",
           "config_record"]


def resolve_device(name: str, env: DistEnv) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; under torchrun a bare ``"cuda"`` means ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"TrainerConfig.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"TrainerConfig.device: {name!r} requested but CUDA is not available; use 'cpu'")
        if device.index is None:
            device = torch.device("cuda", env.local_rank if env.distributed else torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def set_determinism(enabled: bool | None, device: torch.device | None,
                    restore: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn deterministic algorithms on (``enabled``), or put back the settings in ``restore``.

    Returns the settings that were in force before, for a later ``restore``.
    """
    before = {"algorithms": torch.are_deterministic_algorithms_enabled(),
              "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
              "cudnn_deterministic": torch.backends.cudnn.deterministic,
              "cudnn_benchmark": torch.backends.cudnn.benchmark}
    if restore is not None:
        torch.use_deterministic_algorithms(restore["algorithms"], warn_only=restore["warn_only"])
        torch.backends.cudnn.deterministic = restore["cudnn_deterministic"]
        torch.backends.cudnn.benchmark = restore["cudnn_benchmark"]
    elif enabled:
        if device is not None and device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reproducibility
        # warn_only: an op without a deterministic kernel warns instead of stopping the run
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return before


def grad_norm(params: Iterable[torch.nn.Parameter]) -> Tensor:
    """Global L2 norm of all gradients (as ``clip_grad_norm_`` computes it), without clipping."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.float64)
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: foreach kernels
        return torch.nn.utils.get_total_norm(grads, 2.0)
    norms = [torch.linalg.vector_norm(g, 2.0).to(grads[0].device, torch.float64) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms), 2.0)


def clip_gradients(params: list[torch.nn.Parameter], norm: Tensor, *, max_norm: float | None,
                   clip_value: float | None) -> None:
    """Clip by value (each element to ``[-clip_value, clip_value]``), then by global norm."""
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, clip_value)
    if max_norm is None:
        return
    if clip_value is None and hasattr(torch.nn.utils, "clip_grads_with_norm_"):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)  # reuse the norm just computed
    else:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def planned_steps(config: Any, train_data: Any) -> int | None:
    """The run's length in steps when known in advance: ``max_steps``, or epochs times batches.

    ``None`` when only ``max_time`` bounds the run, or with TBPTT (chunks per batch are unknown).
    """
    candidates = [config.max_steps]
    if config.max_epochs is not None and config.tbptt_steps is None and hasattr(train_data, "__len__"):
        candidates.append(math.ceil(config.max_epochs * len(train_data) / config.grad_accum_steps))
    candidates = [c for c in candidates if c]
    return min(candidates) if candidates else None


def _model_record(model: torch.nn.Module) -> dict[str, Any]:
    from rnnkit.export.bundle import registered_name

    cls = type(model)
    record: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}",
                              "registered_name": registered_name(model),
                              "parameters": sum(p.numel() for p in model.parameters())}
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        record["config"] = dataclasses.asdict(config)
    return record


def config_record(trainer: Trainer, *, resumed: bool) -> dict[str, Any]:
    """The resolved configuration written to ``config.toml``: trainer, model, runtime."""
    import rnnkit

    runtime = {"device": str(trainer.device), "world_size": trainer.env.world_size, "resumed": resumed,
               "torch": torch.__version__, "rnnkit": rnnkit.__version__, "python": platform.python_version()}
    # resume is what this session did (runtime.resumed), not a setting of the run: recorded as true, a
    # new run made from this file (--config runs/NAME/config.toml --trainer.name OTHER) resumed OTHER
    return {"trainer": {**trainer.config.to_dict(), "resume": False}, "model": _model_record(trainer.model),
            **trainer.record, "runtime": runtime}
