"""The trainer's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
import math
import os
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


_ABOVE_ZERO = ("lr", "max_grad_norm", "grad_clip_value", "max_time")  # 0 refused too


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
    """Parent folder of the runs; this run writes everything under ``run_dir/name``."""
    name: str = "run"
    """The run's folder inside ``run_dir`` (no ``/``), holding its config, metrics, plots and checkpoints."""
    max_steps: int | None = None
    """Stop after this many optimizer steps in total, resumed sessions included; None means no step limit."""
    max_epochs: int | None = None
    """Stop after this many passes over the training data; None means no epoch limit."""
    max_time: float | None = None
    """Wall-clock seconds of training (summed over resumed sessions) before stopping; None means no limit."""
    batch_size: int = 32
    """Items per batch per process, for map-style datasets only (``iter_batches`` sources make their own)."""
    drop_last: bool = False
    """Drop the last, incomplete training batch of each epoch of a map-style dataset (validation keeps it)."""
    num_workers: int = 0
    """DataLoader worker processes for map-style datasets; 0 loads batches in the main process."""
    optimizer: str = "adam"
    """Optimizer: ``adam`` or ``adamw`` (Adam with decoupled weight decay)."""
    lr: float = 1e-3
    """Peak learning rate, reached after warmup; ``cosine`` and ``plateau`` lower it from there."""
    weight_decay: float = 0.0
    """Decay of weight matrices only (not biases or gains): L2 with ``adam``, decoupled with ``adamw``."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's decay rates, each in [0, 1), of the running means of the gradient and of its square."""
    eps: float = 1e-8
    """Adam's epsilon, added to the denominator of the update for numerical stability."""
    schedule: str = "constant"
    """Learning-rate schedule: ``constant``, ``cosine`` (decay to ``min_lr``) or ``plateau`` (on val loss)."""
    warmup_steps: int = 0
    """Optimizer steps of linear warmup up to ``lr`` at the start; must be 0 with ``plateau``."""
    min_lr: float = 0.0
    """Learning rate that ``cosine`` ends at and ``plateau`` never goes below; at most ``lr``."""
    schedule_steps: int | None = None
    """Steps of the ``cosine`` decay, warmup included, then held at ``min_lr``; None fits the run's length."""
    plateau_factor: float = 0.5
    """Factor in (0, 1) by which ``plateau`` multiplies the learning rate when the val loss stalls."""
    plateau_patience: int = 2
    """Evaluations without a val-loss improvement that ``plateau`` tolerates before lowering the rate."""
    max_grad_norm: float | None = None
    """Clip the global L2 norm of the gradients to this before each step; None means no norm clipping."""
    grad_clip_value: float | None = None
    """Clip every gradient element to [-value, value], before norm clipping; None means no value clipping."""
    grad_accum_steps: int = 1
    """Micro-batches (batches, or TBPTT chunks) whose mean gradient makes one optimizer step."""
    amp: str = "off"
    """Mixed precision: ``off``, ``bf16`` (bfloat16 autocast) or ``fp16`` (with loss scaling, CUDA only)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations in a row without enough val-loss improvement; None turns it off."""
    early_stopping_min_delta: float = 0.0
    """How far the val loss must fall below the last one that reset early stopping's patience to reset it."""
    seed: int = 0
    """Random seed: Python, NumPy and torch get ``seed + rank``, and map-style datasets shuffle by it."""
    deterministic: bool = False
    """Use deterministic torch and cuDNN kernels (warning where none exists): reproducible but slower."""
    tbptt_steps: int | None = None
    """Truncated BPTT: cut each batch along time into chunks this long, state carried; None keeps it whole."""
    log_every: int = 10
    """Optimizer steps between metrics.csv rows (mean loss, gradient norm and throughput over those steps)."""
    eval_every: int | None = None
    """Optimizer steps between evaluations on the validation data; None evaluates only at the end."""
    checkpoint_every: int | None = None
    """Optimizer steps between writes of ``checkpoints/last``; None writes it only at the end."""
    checkpoint: bool = True
    """Write checkpoints (``last``, and ``best`` with save_best); False writes none, so nothing to resume."""
    save_best: bool = False
    """Also keep ``checkpoints/best``, rewritten when a periodic evaluation reaches a new best val loss."""
    resume: bool = False
    """Continue from the run's ``checkpoints/last`` if there is one; False starts afresh and replaces it."""
    device: str = "auto"
    """Device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    quiet: bool = False
    """Hide the progress bar (metrics.csv, TensorBoard and the log are still written)."""
    tensorboard: bool = True
    """Write TensorBoard event files into the run folder (skipped if tensorboard is not installed)."""
    plots: bool = True
    """Redraw ``loss.png`` (training and validation loss by step) at each evaluation and at the end."""
    grad_warnings: bool = True
    """Log a warning, once per kind, when the pre-clip gradient norm explodes, vanishes or is not finite."""

    def __post_init__(self) -> None:
        self._check_types()
        for field, choices in _CHOICES.items():
            value = getattr(self, field)
            if value not in choices:
                raise ConfigError(f"TrainerConfig.{field}: expected one of {choices}, got {value!r}")
        if isinstance(self.betas, list):  # from TOML/JSON
            object.__setattr__(self, "betas", tuple(self.betas))
        self._check_positive()
        self._check_combinations()

    def _check_types(self) -> None:
        """Booleans, strings and the seed by type: from TOML, ``checkpoint = "false"`` was truthy (a
        checkpoint written anyway), ``max_time = true`` one second, ``seed = "1"`` a crash mid-setup."""
        if isinstance(self.run_dir, os.PathLike):  # a Path is what a user naturally passes
            object.__setattr__(self, "run_dir", os.fspath(self.run_dir))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                raise ConfigError(f"TrainerConfig.{f.name}: expected true or false, got {value!r}")
            if f.type == "str" and not isinstance(value, str):
                raise ConfigError(f"TrainerConfig.{f.name}: expected a string, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 32:
            raise ConfigError(f"TrainerConfig.seed: expected an integer in [0, 2**32), got {self.seed!r}")
        if not isinstance(self.betas, (tuple, list)) or any(isinstance(b, bool) or not isinstance(b, (int, float))
                                                               for b in self.betas):
            raise ConfigError(f"TrainerConfig.betas: expected two numbers in [0, 1), got {self.betas!r}")

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
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                bound = "> 0" if field in _ABOVE_ZERO else ">= 0"
                raise ConfigError(f"TrainerConfig.{field}: expected a finite number {bound}, got {value!r}")
        for field in _ABOVE_ZERO:
            if getattr(self, field) == 0:  # a zero learning rate or clip leaves the weights where they are;
                # a zero time budget trained nothing and wrote an untrained bundle
                hint = {"max_grad_norm": " (None: no clipping)", "grad_clip_value": " (None: no clipping)",
                        "max_time": " (seconds of training; None: no time limit)"}.get(field, "")
                raise ConfigError(f"TrainerConfig.{field}: expected a number > 0{hint}, got 0")
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
        if self.min_lr > self.lr:
            raise ConfigError(f"TrainerConfig: min_lr={self.min_lr} is above lr={self.lr}; the schedules lower "
                              "the rate towards min_lr")
        if self.schedule_steps is not None and self.schedule != "cosine":
            raise ConfigError(f"TrainerConfig: schedule_steps is the length of the cosine schedule; "
                              f"schedule={self.schedule!r} has none")
        if self.save_best and not self.checkpoint:
            raise ConfigError("TrainerConfig: save_best writes checkpoints/best; it needs checkpoint=True")
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
