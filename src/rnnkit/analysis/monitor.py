"""Warnings about exploding and vanishing gradients during training, once each, with what to try.

:class:`GradientMonitor` watches the global gradient norm measured *before* clipping, one value per
optimizer step. It is silent on a healthy run and warns at most once per kind:

* ``"nonfinite"``: the norm is NaN or infinite (an overflow: the step was ruined);
* ``"exploding"``: after ``warmup`` steps, a norm above ``explode_factor`` (default 10) times the median
  of the last ``window`` (default 100) norms. The median ignores the spikes it is looking for, and a
  factor of 10 sits above the ordinary step-to-step noise of SGD/Adam gradient norms (spikes of 2-5x the
  median are routine in healthy runs) but below the 10-1000x jumps of the "cliffs" that exploding
  recurrent gradients produce (Pascanu, Mikolov & Bengio 2013, sec. 3). The warm-up skips the first
  steps, whose norms change fast while the initial loss falls. It also fires, from the third step on
  (no warm-up), when the median itself exceeds ``explode_absolute`` (default 1000): with losses averaged over the batch
  (torch's default) healthy pre-clip norms are of order 0.1-10 whatever the model size, so a median
  in the thousands means every step is clipped a hundredfold or more (a recurrence whose Jacobians
  exceed 1: its gradient norm grows exponentially with the sequence length);
* ``"vanishing"``: ``vanish_steps`` (default 50) steps in a row below ``vanish_relative`` (default 1e-6)
  times the median norm of the warm-up steps, or below ``vanish_absolute`` (default 1e-10) at any time.
  A healthy run's gradient seldom shrinks a millionfold while it still learns; a long stretch there
  means dead or saturated units, a detached graph, or a loss that no longer depends on the parameters.

:class:`GradientMonitorCallback` adapts it to the trainer's callback protocol
(``on_step_end(trainer, metrics)`` with ``metrics["grad_norm"]``).
"""

from __future__ import annotations

import logging
import math
import statistics
import warnings
from collections import deque
from typing import Any

__all__ = ["GradientWarning", "GradientMonitor", "GradientMonitorCallback", "ADVICE"]

logger = logging.getLogger(__name__)

_BOUND = "use a gated cell (LSTM/GRU), layer_norm=True, or IndRNN's recurrent_max to bound the recurrence"

ADVICE = {
    "nonfinite": ("clip the gradient (max_grad_norm=1.0), lower the learning rate, check the data for "
                  "NaN/inf, and with AMP keep the loss scaler on (or use bf16)"),
    "exploding": f"clip the gradient norm (max_grad_norm=1.0 is a common start), lower the learning rate "
                 f"or add warm-up, or {_BOUND}",
    "vanishing": ("use a gated cell (LSTM with forget_bias=1.0, GRU, MinGRU/MinLSTM) instead of a tanh RNN, "
                  "layer_norm=True, a shorter tbptt_steps/sequence, or a larger learning rate; check that the "
                  "loss depends on the parameters (no detach) and that units are not saturated or dead (ReLU)"),
}


class GradientWarning(RuntimeWarning):
    """Category of the warnings :class:`GradientMonitor` emits with ``emit="warn"``."""


class GradientMonitor:
    """Watch pre-clip gradient norms; ``update(step, grad_norm)`` returns a warning message or ``None``.

    ``emit`` chooses where a message also goes: ``"warn"`` (``warnings.warn`` with
    :class:`GradientWarning`), ``"log"`` (this module's logger at WARNING) or ``"none"``.
    ``max_grad_norm`` is the clipping in force, if any (the trainer passes its own), so the advice for an
    exploding norm does not tell a user who already clips to start clipping.
    """

    def __init__(self, *, window: int = 100, warmup: int = 50, explode_factor: float = 10.0,
                 explode_absolute: float | None = 1e3, vanish_relative: float = 1e-6,
                 vanish_absolute: float = 1e-10, vanish_steps: int = 50, emit: str = "warn",
                 max_grad_norm: float | None = None) -> None:
        if emit not in ("warn", "log", "none"):
            raise ValueError(f"GradientMonitor: emit must be 'warn', 'log' or 'none', got {emit!r}")
        for key, value in (("window", window), ("warmup", warmup), ("vanish_steps", vanish_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GradientMonitor: {key} must be an int >= 1, got {value!r}")
        if not explode_factor > 1 or (explode_absolute is not None and not explode_absolute > 0):
            raise ValueError(f"GradientMonitor: explode_factor must be > 1 and explode_absolute > 0 or None, "
                             f"got {explode_factor!r} and {explode_absolute!r}")
        if not (vanish_relative >= 0 and vanish_absolute >= 0):
            raise ValueError("GradientMonitor: vanish_relative and vanish_absolute must be >= 0, got "
                             f"{vanish_relative!r} and {vanish_absolute!r}")
        self.window, self.warmup, self.explode_factor = window, warmup, float(explode_factor)
        self.explode_absolute = None if explode_absolute is None else float(explode_absolute)
        self.vanish_relative, self.vanish_absolute = float(vanish_relative), float(vanish_absolute)
        self.vanish_steps, self.emit = vanish_steps, emit
        self.max_grad_norm = max_grad_norm  # the clipping in force, if any: the advice then says so
        self.reset()

    def reset(self) -> None:
        """Forget the history and the warnings already given."""
        self.history: deque[float] = deque(maxlen=self.window)
        self.reference: float | None = None  # median norm of the warm-up steps
        self.seen = 0
        self.low_run = 0
        self.warned: dict[str, str] = {}

    def update(self, step: int, grad_norm: Any) -> str | None:
        """Record the pre-clip norm of ``step``; return the warning message if one fires now."""
        g = float(grad_norm)
        if g < 0:
            raise ValueError(f"GradientMonitor.update: a gradient norm is >= 0, got {g!r} at step {step}")
        self.seen += 1
        if not math.isfinite(g):
            return self._fire("nonfinite", step, f"gradient norm is {g} at step {step}")
        message = self._check_explosion(step, g) if self.seen > self.warmup and self.history else None
        self.history.append(g)
        if message is None and self.explode_absolute is not None and len(self.history) >= 3:
            # the run that explodes from its first steps: no warm-up for the absolute rule
            median = statistics.median(self.history)
            if median > self.explode_absolute:
                message = self._fire("exploding", step, f"the median gradient norm of the last "
                                     f"{len(self.history)} steps is {median:.3g} (above "
                                     f"{self.explode_absolute:g}) at step {step}")
        if self.reference is None and self.seen >= self.warmup:
            self.reference = statistics.median(self.history)
        floor = max(self.vanish_absolute, self.vanish_relative * (self.reference or 0.0))
        self.low_run = self.low_run + 1 if g < floor or g == 0.0 else 0
        if self.low_run >= self.vanish_steps:
            start = f" (warm-up median {self.reference:.3g})" if self.reference else ""
            level = f"below {floor:.3g}{start}" if floor > 0 else "at 0 (no gradient reaches the parameters)"
            message = self._fire("vanishing", step, f"gradient norm has stayed {level} for "
                                 f"{self.low_run} steps (now {g:.3g} at step {step})") or message
        return message

    def _check_explosion(self, step: int, g: float) -> str | None:
        median = statistics.median(self.history)
        if median > 0 and g > self.explode_factor * median:
            return self._fire("exploding", step, f"gradient norm {g:.3g} at step {step} is {g / median:.0f}x "
                              f"the median {median:.3g} of the last {len(self.history)} steps")
        return None

    def _fire(self, kind: str, step: int, what: str) -> str | None:
        if kind in self.warned:
            return None
        title = {"nonfinite": "non-finite gradient", "exploding": "exploding gradient",
                 "vanishing": "vanishing gradient"}[kind]
        advice = ADVICE[kind]
        if kind == "exploding" and self.max_grad_norm:
            advice = (f"clipping at max_grad_norm={self.max_grad_norm:g} already bounds this step's update; if "
                      f"spikes recur or the loss jumps, lower the learning rate or add warm-up, or {_BOUND}")
        message = f"{title}: {what}. Try: {advice}. (Warned once.)"
        self.warned[kind] = message
        if self.emit == "warn":
            warnings.warn(message, GradientWarning, stacklevel=3)
        elif self.emit == "log":
            logger.warning(message)
        return message


class GradientMonitorCallback:
    """Trainer callback: feeds ``metrics["grad_norm"]`` of every step to a :class:`GradientMonitor`.

    Extra keyword arguments build the monitor (``emit="log"`` suits a trainer that logs). Steps whose
    metrics lack ``grad_norm`` are skipped. ``messages`` keeps the warnings given.
    """

    def __init__(self, monitor: GradientMonitor | None = None, **kwargs: Any) -> None:
        if monitor is not None and kwargs:
            raise TypeError("GradientMonitorCallback: give a monitor or its keyword arguments, not both")
        self.monitor = monitor if monitor is not None else GradientMonitor(**kwargs)
        self.messages: list[str] = []

    def on_step_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        """Read ``metrics["grad_norm"]`` (and ``metrics["step"]`` if present) after an optimizer step."""
        g = metrics.get("grad_norm")
        if g is None:
            return
        step = metrics.get("step", self.monitor.seen)
        message = self.monitor.update(int(step), g)
        if message is not None:
            self.messages.append(message)
