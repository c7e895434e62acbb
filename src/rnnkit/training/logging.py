"""What a run leaves behind and shows: config.toml, metrics.csv, TensorBoard, loss.png, progress bar.

Only rank 0 creates a :class:`RunLogger` with ``enabled=True``; the others get a silent one.
``metrics.csv`` is append-only: one row per logged training step and one per evaluation (its
columns start with ``val_``); on resume, rows after the checkpoint's step are dropped so that a
crashed run's extra steps do not appear twice. TensorBoard and matplotlib are optional: without
them the run goes on and says so once in the log.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import statistics
import time
from collections import deque
from pathlib import Path
from typing import Any

from rnnkit._files import write_text_atomic

__all__ = ["RunLogger", "StepMeter", "to_toml"]

log = logging.getLogger("rnnkit.training")
BASE_COLUMNS = ["step", "epoch", "time", "loss", "lr", "grad_norm", "grad_norm_max", "tokens_per_s",
                "steps_per_s"]


def _plain(value: Any) -> Any:
    """A TOML-friendly copy: no None (dropped), paths and other objects as strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value if v is not None]
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def to_toml(data: dict[str, Any]) -> str:
    """Serialise nested dicts as TOML with ``tomli_w`` (``None`` values are left out)."""
    import tomli_w

    return tomli_w.dumps(_plain(data))


class RunLogger:
    """Writes one run's logs under ``out_dir``; every method is a no-op when ``enabled`` is False."""

    def __init__(self, out_dir: Path, *, enabled: bool = True, quiet: bool = False, tensorboard: bool = True,
                 plots: bool = True, total_steps: int | None = None, total_time: float | None = None) -> None:
        self.out_dir, self.enabled, self.plots = Path(out_dir), enabled, plots
        self.rows: list[dict[str, Any]] = []
        self.columns = list(BASE_COLUMNS)
        self._writer = None
        self._progress = None
        self._want_tb, self._quiet = tensorboard, quiet
        self._total_steps, self._total_time = total_steps, total_time

    # -- files -----------------------------------------------------------------------------------
    def start(self, config: dict[str, Any], resume_step: int | None) -> None:
        """Create the folder, write ``config.toml``, keep earlier rows on resume, open TB and the bar."""
        if not self.enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out_dir / "config.toml", to_toml(config))
        if resume_step is not None:
            self.rows = [r for r in self._read_rows() if int(float(r.get("step") or 0)) <= resume_step]
            for row in self.rows:
                self.columns += [k for k in row if k not in self.columns]
        self._rewrite_csv()
        self._open_tensorboard(resume_step)
        self._open_progress(resume_step or 0)

    def _read_rows(self) -> list[dict[str, Any]]:
        path = self.out_dir / "metrics.csv"
        if not path.is_file():
            return []
        with open(path, newline="", encoding="utf-8") as fh:
            return [{k: v for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(fh)]

    def _rewrite_csv(self) -> None:
        with open(self.out_dir / "metrics.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def row(self, values: dict[str, Any]) -> None:
        """Append a row to ``metrics.csv`` (rewriting it once when a new column appears)."""
        if not self.enabled:
            return
        self.rows.append(dict(values))
        new = [k for k in values if k not in self.columns]
        if new:
            self.columns += new
            self._rewrite_csv()
            return
        with open(self.out_dir / "metrics.csv", "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=self.columns).writerow(values)

    # -- TensorBoard ---------------------------------------------------------------------------
    def _open_tensorboard(self, resume_step: int | None) -> None:
        if not self._want_tb:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed; skipping TensorBoard events (pip install tensorboard)")
            return
        if resume_step is None:  # a new run: an earlier run's curves must not mix into its plots
            for old in self.out_dir.glob("events.out.tfevents.*"):
                old.unlink()
        # the checkpoint's own step was logged before it was written: purge only what came after it
        self._writer = SummaryWriter(log_dir=str(self.out_dir),
                                     purge_step=None if resume_step is None else resume_step + 1)

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        """Write scalars to TensorBoard (``prefix`` groups them, e.g. ``"train/"``)."""
        if self._writer is None:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(prefix + name, value, step)

    # -- progress bar --------------------------------------------------------------------------
    def _open_progress(self, step: int) -> None:
        if self._quiet:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        if not (console.is_terminal or console.is_jupyter):  # a pipe or a log file: rich would draw the
            # bar once, at the end (a notebook is no terminal to rich, but draws its live bar)
            self._progress = _PlainProgress(console, self._total_steps, self._total_time)
            self._task = None
            return
        self._progress = Progress(TextColumn("[bold]train"), BarColumn(), TaskProgressColumn(),
                                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                  console=console, transient=False)
        self._progress.start()
        # the bar counts steps when the run's length in steps is known, else seconds of max_time
        total = self._total_steps or self._total_time
        self._task = self._progress.add_task("train", total=total, completed=0, info=f"step {step}")

    def progress(self, step: int, *, elapsed: float, loss: float, steps_per_s: float, tokens_per_s: float) -> None:
        """Move the bar and show the step, loss, steps/s and tokens/s (the ETA comes from the bar)."""
        if self._progress is None:
            return
        of = f"/{self._total_steps}" if self._total_steps else ""
        info = f"step {step}{of}  loss {loss:.4f}  {steps_per_s:.2f} steps/s  {tokens_per_s:,.0f} tok/s"
        done = step if self._total_steps else min(elapsed, self._total_time or elapsed)
        self._progress.update(self._task, completed=done, info=info)

    # -- plot ----------------------------------------------------------------------------------
    def plot(self) -> None:
        """Redraw ``loss.png``: training loss and validation loss against steps."""
        if not (self.enabled and self.plots):
            return
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            log.info("matplotlib is not installed; skipping loss.png (pip install matplotlib)")
            self.plots = False
            return
        fig = Figure(figsize=(6, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for key, label in (("loss", "train"), ("val_loss", "validation")):
            points = [(float(r["step"]), float(r[key])) for r in self.rows if r.get(key) not in (None, "")]
            if points:
                ax.plot(*zip(*points), label=label, marker="o" if key == "val_loss" else None)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        tmp = self.out_dir / ".loss.png.tmp"
        fig.savefig(tmp, format="png")
        os.replace(tmp, self.out_dir / "loss.png")

    def close(self) -> None:
        """Stop the bar and flush TensorBoard."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _PlainProgress:
    """The bar's stand-in when stderr is not a terminal: one plain line every ``every`` seconds and a
    last one at the end, so that ``rnnkit train ... 2>&1 | tee log`` shows a long run as it goes."""

    every = 30.0

    def __init__(self, console, total_steps: int | None, total_time: float | None) -> None:
        self._console, self._total_steps, self._total_time = console, total_steps, total_time
        self._last = time.monotonic()
        self._line: str | None = None

    def update(self, task, *, completed: float, info: str) -> None:
        total = self._total_steps or self._total_time
        share = f"{100 * completed / total:3.0f}%  " if total else ""
        self._line = f"train {share}{info}"
        if time.monotonic() - self._last >= self.every:
            self._print()

    def _print(self) -> None:
        self._console.print(self._line, highlight=False, markup=False, soft_wrap=True)
        self._last = time.monotonic()
        self._line = None

    def stop(self) -> None:
        if self._line is not None:
            self._print()


class StepMeter:
    """Sums between two logged rows (loss, gradient norms, tokens) and the recent throughput."""

    def __init__(self) -> None:
        self._micro_losses: list[Any] = []
        self._micro_tokens = 0
        self._last = time.monotonic()
        self._recent: deque[tuple[float, int]] = deque(maxlen=20)  # (seconds, tokens) of the last steps
        self.reset()

    def reset(self) -> None:
        """Start a new logging window."""
        self.loss_sum, self.count, self.tokens, self.norms = 0.0, 0, 0, []
        self._start = time.monotonic()

    def add_micro(self, loss: Any, tokens: int) -> None:
        """Record one micro-batch's (detached) loss tensor and token count."""
        self._micro_losses.append(loss)
        self._micro_tokens += tokens

    def end_step(self, norm: float) -> tuple[float, int]:
        """Close a step; returns its mean micro-batch loss and its tokens."""
        import torch

        loss = float(torch.stack(self._micro_losses).double().mean())
        tokens, now = self._micro_tokens, time.monotonic()
        self._micro_losses, self._micro_tokens = [], 0
        self.loss_sum, self.count, self.tokens = self.loss_sum + loss, self.count + 1, self.tokens + tokens
        self.norms.append(norm)
        elapsed, self._last = max(now - self._last, 1e-9), now
        # the median of the last 20 steps: the step after an evaluation or a checkpoint (and the first,
        # with the set-up) counts that time too; the bar showed such a step's rate (0.9 steps/s in a run
        # at 200 steps/s), and a moving average kept it for dozens of steps
        self._recent.append((elapsed, tokens))
        return loss, tokens

    def rates(self) -> dict[str, float]:
        """Steps/s and tokens/s, the median over the last 20 steps (this process); worked out here,
        when the bar asks, not at every step."""
        if not self._recent:
            return {"steps_per_s": 0.0, "tokens_per_s": 0.0}
        seconds = statistics.median(e for e, _ in self._recent)
        tokens = statistics.median(t for _, t in self._recent)
        return {"steps_per_s": 1.0 / seconds, "tokens_per_s": tokens / seconds}

    def summary(self) -> dict[str, float]:
        """The window's sums and means (``loss_sum``/``count`` for a cross-process mean), then reset."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        row = {"loss_sum": self.loss_sum, "count": self.count,
               "grad_norm": sum(self.norms) / max(len(self.norms), 1),
               "grad_norm_max": max(self.norms, default=float("nan")),
               "tokens_per_s": self.tokens / elapsed, "steps_per_s": self.count / elapsed}
        self.reset()
        return row
