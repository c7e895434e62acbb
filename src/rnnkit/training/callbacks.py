"""The trainer's progress record and the callback hooks (minGPT/Fabric-sized).

A callback is any object with some of these methods; missing ones are skipped::

    on_fit_start(trainer)              after setup (and resume), before the first step
    on_step_end(trainer, metrics)      after every optimizer step: step, epoch, loss, lr,
                                       grad_norm (global L2 norm before clipping), tokens, time
    on_eval_end(trainer, metrics)      after every evaluation: val_loss and other val_* scalars
    on_fit_end(trainer)                after the final evaluation and checkpoint

Set ``trainer.should_stop = True`` in a hook to end training after the current step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["TrainerState", "Callback"]


@dataclass
class TrainerState:
    """Where training stands; saved in every checkpoint and restored on resume.

    ``batch`` and ``chunk`` locate the next micro-batch inside epoch ``epoch`` (``chunk`` counts
    TBPTT chunks of that batch). ``elapsed`` is training wall-clock seconds over all sessions.
    ``best_val`` is the lowest validation loss so far; ``patience_val`` the one early stopping
    counts ``bad_evals`` from (the last that beat its own reference by more than ``min_delta``).
    """

    step: int = 0
    epoch: int = 0
    batch: int = 0
    chunk: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    best_val: float | None = None
    bad_evals: int = 0
    patience_val: float | None = None
    last_eval_step: int | None = None
    stop_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainerState":
        """Rebuild from :meth:`to_dict` output, ignoring unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Callback:
    """Optional base class with no-op hooks; subclass and override what you need."""

    def on_fit_start(self, trainer: Any) -> None:
        """Called once training is set up."""

    def on_step_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        """Called after every optimizer step."""

    def on_eval_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        """Called after every evaluation on the validation data."""

    def on_fit_end(self, trainer: Any) -> None:
        """Called when training ends (for any reason other than an exception)."""
