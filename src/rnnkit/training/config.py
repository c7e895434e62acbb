"""The trainer's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnkit.errors import ConfigError

__all__ = ["TrainerConfig"]

_CHOICES = {
    "optimizer": ("adam", "adamw"),
    "schedule": ("constant", "cosine", "plateau"),
    "amp": ("off", "bf16", "fp16"),
}


@dataclass(frozen=True)
class TrainerConfig:
    """Everything :class:`rnnkit.training.Trainer` needs to know about a run.

    Training stops at whichever of ``max_steps``, ``max_epochs`` and ``max_time`` (wall-clock
    seconds, summed over resumed sessions) comes first; at least one must be set to call ``fit``.
    A *step* is one optimizer update. ``batch_size`` is per process (under ``torchrun`` the global
    batch is ``batch_size * world_size``) and only applies to map-style datasets. With
    ``tbptt_steps = k`` every batch is cut along time (axis 1) into chunks of ``k`` and each chunk
    is one micro-batch; ``grad_accum_steps`` micro-batches make one step, so
    ``grad_accum_steps = chunks per batch`` gives one update per batch, 1 gives one per chunk.
    ``eval_every``/``checkpoint_every``/``log_every`` count steps; ``None`` evaluates only at the
    end and checkpoints only at the end (``checkpoint=False`` never writes one).
    """

    run_dir: str = "runs"
    name: str = "run"
    max_steps: int | None = None
    max_epochs: int | None = None
    max_time: float | None = None
    batch_size: int = 32
    drop_last: bool = False
    num_workers: int = 0
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr: float = 0.0
    schedule_steps: int | None = None
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    max_grad_norm: float | None = None
    grad_clip_value: float | None = None
    grad_accum_steps: int = 1
    amp: str = "off"
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    seed: int = 0
    deterministic: bool = False
    tbptt_steps: int | None = None
    log_every: int = 10
    eval_every: int | None = None
    checkpoint_every: int | None = None
    checkpoint: bool = True
    save_best: bool = False
    resume: bool = False
    device: str = "auto"
    quiet: bool = False
    tensorboard: bool = True
    plots: bool = True
    grad_warnings: bool = True

    def __post_init__(self) -> None:
        for field, choices in _CHOICES.items():
            value = getattr(self, field)
            if value not in choices:
                raise ConfigError(f"TrainerConfig.{field}: expected one of {choices}, got {value!r}")
        if isinstance(self.betas, list):  # from TOML/JSON
            object.__setattr__(self, "betas", tuple(self.betas))
        self._check_positive()
        self._check_combinations()

    def _check_positive(self) -> None:
        positive_int = ("batch_size", "grad_accum_steps", "log_every", "max_steps", "max_epochs",
                        "tbptt_steps", "eval_every", "checkpoint_every", "schedule_steps",
                        "early_stopping_patience", "plateau_patience")
        for field in positive_int:
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"TrainerConfig.{field}: expected a positive integer, got {value!r}")
        for field in ("warmup_steps", "num_workers"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"TrainerConfig.{field}: expected an integer >= 0, got {value!r}")
        for field in ("lr", "weight_decay", "min_lr", "max_time", "max_grad_norm", "grad_clip_value",
                      "early_stopping_min_delta", "eps"):
            value = getattr(self, field)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"TrainerConfig.{field}: expected a finite number >= 0, got {value!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"TrainerConfig.betas: expected two numbers in [0, 1), got {self.betas!r}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise ConfigError(f"TrainerConfig.plateau_factor: expected a number in (0, 1), got {self.plateau_factor!r}")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"TrainerConfig.name: expected a folder name without '/', got {self.name!r}")

    def _check_combinations(self) -> None:
        if self.schedule == "plateau" and self.warmup_steps:
            raise ConfigError(f"TrainerConfig: schedule='plateau' has no warmup; expected warmup_steps=0, "
                              f"got {self.warmup_steps}")
        needs_eval = {"early_stopping_patience": self.early_stopping_patience is not None,
                      "schedule='plateau'": self.schedule == "plateau", "save_best": self.save_best}
        for what, used in needs_eval.items():
            if used and self.eval_every is None:
                raise ConfigError(f"TrainerConfig: {what} needs eval_every (steps between evaluations), got None")

    @property
    def out_dir(self) -> Path:
        """The run's folder, ``run_dir/name``."""
        return Path(self.run_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a plain dict (tuples become lists), ready for TOML or JSON."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainerConfig":
        """Build a config from a dict (e.g. a TOML table); unknown keys raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise TypeError(f"TrainerConfig.from_dict: expected a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"TrainerConfig: unknown option(s) {unknown}; expected some of {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainerConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)
