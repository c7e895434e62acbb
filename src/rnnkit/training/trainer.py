"""The Trainer: fit a model on batches with TBPTT, clipping, accumulation, AMP, DDP and resume.

Phases (``trainer.phase``): ``"setup"`` -> ``"train"`` <-> ``"eval"`` -> ``"finish"`` -> ``"idle"``.
One *micro-step* runs forward/backward on one micro-batch (a batch, or one TBPTT chunk of it);
every ``grad_accum_steps`` micro-steps make one optimizer *step*. The recurrent state returned by
the model is detached and fed to the next chunk, and to the next batch of a stateful stream
(``data.stateful``); it is reset at each epoch start (and each batch otherwise).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnkit.errors import ConfigError
from rnnkit.training import resume as _resume
from rnnkit.training._rng import capture_rng, restore_rng, seed_everything
from rnnkit.training._tree import detach_tree
from rnnkit.training.batches import as_batches, check_batch, count_tokens, iterate, split_time, to_device
from rnnkit.training.callbacks import TrainerState
from rnnkit.training.config import TrainerConfig
from rnnkit.training.distributed import DistEnv, all_reduce_sum, detect_env, init_process_group, is_initialized
from rnnkit.training.evaluation import evaluate_model, model_loss
from rnnkit.training.logging import RunLogger, StepMeter
from rnnkit.training.schedules import build_optimizer, build_scheduler
from rnnkit.training.setup import (clip_gradients, config_record, grad_norm, planned_steps, resolve_device,
                                   set_determinism)

__all__ = ["Trainer"]

log = logging.getLogger("rnnkit.training")
_REASONS = ("", "max_steps", "max_epochs", "max_time", "early_stopping", "callback")


class Trainer:
    """Train ``model`` (``forward(**batch, state=None)`` returning ``.loss`` and ``.state``).

    Args:
        model: the module to train; it stays the caller's object (never wrapped in place).
        config: a :class:`TrainerConfig` (defaults when None).
        callbacks: objects with any of ``on_fit_start``, ``on_step_end``, ``on_eval_end``,
            ``on_fit_end`` (see :mod:`rnnkit.training.callbacks`).
    """

    def __init__(self, model: nn.Module, config: TrainerConfig | None = None, *,
                 callbacks: Sequence[Any] = (), record: Mapping[str, Any] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Trainer: expected an nn.Module, got {type(model).__name__}")
        config = TrainerConfig() if config is None else config
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"Trainer: expected a TrainerConfig, got {type(config).__name__}")
        self.model, self.config, self.callbacks = model, config, list(callbacks)
        # more tables for config.toml, e.g. the [data] a recipe read: written when the run starts (a
        # killed run's config.toml can start it again) and kept with checkpoints, which a resumed run
        # must match (another seq_len would read another stream at the saved position)
        self.record = dict(record or {})
        if config.grad_warnings:  # warn once when the pre-clip gradient norm explodes or vanishes
            from rnnkit.analysis.monitor import GradientMonitorCallback
            self.gradient_monitor = GradientMonitorCallback(emit="log", max_grad_norm=config.max_grad_norm)
            self.callbacks.insert(0, self.gradient_monitor)
        self.state, self.env, self.phase, self.should_stop = TrainerState(), DistEnv(), "idle", False
        self.device: torch.device | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.scaler: Any = None
        self.logger = RunLogger(config.out_dir, enabled=False, quiet=True)
        self._carry: Any = None
        self._point = _resume.ResumePoint()

    @property
    def out_dir(self) -> Path:
        """The run folder ``run_dir/name``."""
        return self.config.out_dir

    @property
    def checkpoint_dir(self) -> Path:
        """``run_dir/name/checkpoints`` (holding ``last/`` and ``best/``)."""
        return self.config.out_dir / "checkpoints"

    # -- public API --------------------------------------------------------------------------------
    def fit(self, train: Any, val: Any = None) -> TrainerState:
        """Train until ``max_steps``, ``max_epochs``, ``max_time``, early stopping or a callback says stop."""
        cfg = self.config
        if cfg.max_steps is None and cfg.max_epochs is None and cfg.max_time is None:
            raise ConfigError("TrainerConfig: expected at least one of max_steps, max_epochs, max_time; got none")
        if val is None and cfg.eval_every is not None and (cfg.early_stopping_patience or cfg.save_best
                                                            or cfg.schedule == "plateau"):
            raise ConfigError("early stopping, save_best and schedule='plateau' need validation data: fit(train, val)")
        self._restore: dict[str, Any] = {"group": False, "determinism": None}
        try:
            self._setup(train, val)
            self._call("on_fit_start")
            self.phase, self._t0, self._elapsed0 = "train", time.monotonic(), self.state.elapsed
            self._window = StepMeter()
            while self._stop_reason() is None:
                self._train_epoch()
            self._finish()
        finally:
            self._teardown()
        return self.state

    def evaluate(self, data: Any) -> dict[str, float]:
        """Mean loss (and other scalar outputs) of the model over ``data``, in eval mode, no grad."""
        if self.device is None:
            self.device = resolve_device(self.config.device, self.env)
            self.model.to(self.device)
        env = self.env if is_initialized() else DistEnv()
        data = self._as_batches(data, shuffle=False)
        return evaluate_model(self.model, data, device=self.device, rank=env.rank,
                              world_size=env.world_size, autocast=self._autocast)

    def save_checkpoint(self, name: str = "last") -> Path:
        """Write ``checkpoints/<name>`` now (every process must call it under torchrun)."""
        self._saved_step = self.state.step
        return _resume.write_checkpoint(self, name)

    # -- setup / teardown ----------------------------------------------------------------------
    def _as_batches(self, data: Any, *, shuffle: bool) -> Any:
        cfg = self.config
        return as_batches(data, batch_size=cfg.batch_size, shuffle=shuffle, seed=cfg.seed,
                          drop_last=cfg.drop_last and shuffle, world_size=self.env.world_size,
                          num_workers=cfg.num_workers)

    def _setup(self, train: Any, val: Any) -> None:
        cfg = self.config
        self.phase, self.env = "setup", detect_env()
        self.device = resolve_device(cfg.device, self.env)
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"amp='fp16' needs a CUDA device, got {self.device}; use amp='bf16' on CPU")
        self._restore["group"] = init_process_group(self.env, self.device)
        self._restore["determinism"] = set_determinism(cfg.deterministic, self.device)
        self.train_data = self._as_batches(train, shuffle=True)
        self.val_data = self._as_batches(val, shuffle=False) if val is not None else None
        self.model.to(self.device).train()
        self.optimizer = build_optimizer(self.model, cfg)
        planned = planned_steps(cfg, self.train_data)
        self.scheduler = build_scheduler(self.optimizer, cfg, cfg.schedule_steps or planned,
                                         elapsed=self._elapsed)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
        self.state, self._carry, self._point = TrainerState(), None, _resume.ResumePoint()
        self._pending, self._saved_step, self._stop_flag, self._rng_at_point = 0, -1, "", None
        self.should_stop = False
        data = _resume.resume_from(self) if cfg.resume else _resume.replace_earlier_run(self)
        self._net = self.model
        if self.env.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.logger = RunLogger(cfg.out_dir, enabled=self.env.is_main, quiet=cfg.quiet or not self.env.is_main,
                                tensorboard=cfg.tensorboard, plots=cfg.plots, total_steps=planned,
                                total_time=cfg.max_time)
        self.logger.start(config_record(self, resumed=data is not None), self.state.step if data else None)
        if data is not None:
            _resume.restore_generators(self, data)  # last: nothing above may draw from them
        else:
            seed_everything(cfg.seed + self.env.rank)
        if cfg.grad_accum_steps > 1:  # the start is a resume point too (a stop before the first step)
            self._rng_at_point = capture_rng()

    def _teardown(self) -> None:
        self.logger.close()
        if self._restore["determinism"] is not None:
            set_determinism(None, self.device, restore=self._restore["determinism"])
        if self._restore["group"]:
            torch.distributed.destroy_process_group()
        self.phase = "idle"

    # -- the loop ------------------------------------------------------------------------------
    def _train_epoch(self) -> None:
        st, cfg = self.state, self.config
        stateful = bool(getattr(self.train_data, "stateful", False))
        index, first_chunk, seen = st.batch, st.chunk, 0
        for batch in iterate(self.train_data, st.epoch, self.env.rank, self.env.world_size, start=st.batch):
            chunks = split_time(to_device(check_batch(batch), self.device), cfg.tbptt_steps)
            for c in range(first_chunk, len(chunks)):
                self._micro_step(chunks[c])
                last, seen = c == len(chunks) - 1, seen + 1
                if last and not stateful:
                    self._carry = None
                st.batch, st.chunk = (index + 1, 0) if last else (index, c + 1)
                if self._pending == cfg.grad_accum_steps:
                    self._optimizer_step()
                    if self._stop_reason() is not None:
                        return
            first_chunk, index = 0, index + 1
        if seen == 0 and st.batch == 0:
            raise ValueError(f"training data: epoch {st.epoch} yielded no batches")
        st.epoch, st.batch, st.chunk, self._carry = st.epoch + 1, 0, 0, None
        if self._pending == 0:
            self._point = _resume.ResumePoint(st.epoch, 0, 0, None)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _micro_step(self, chunk: dict[str, torch.Tensor]) -> None:
        self._pending += 1
        sync = self._pending == self.config.grad_accum_steps or not self.env.distributed
        with contextlib.nullcontext() if sync else self._net.no_sync():
            with self._autocast():
                output = self._net(**chunk, state=self._carry)
            loss = model_loss(output)
            scaled = loss / self.config.grad_accum_steps  # the step's gradient is the micro-batches' mean
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        self._carry = detach_tree(getattr(output, "state", None))
        self._window.add_micro(loss.detach(), count_tokens(chunk))

    def _optimizer_step(self) -> None:
        cfg, params = self.config, [p for p in self.model.parameters() if p.grad is not None]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = grad_norm(params)  # before any clipping: what callbacks and logs see
        clip_gradients(params, norm, max_norm=cfg.max_grad_norm, clip_value=cfg.grad_clip_value)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self._last_lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        if isinstance(self.scheduler, torch.optim.lr_scheduler.LambdaLR):
            self.scheduler.step()
        self._pending = 0
        self.state.step += 1
        self._after_step(float(norm), lr)

    def _after_step(self, norm: float, lr: float) -> None:
        st, cfg = self.state, self.config
        loss, tokens = self._window.end_step(norm)
        st.tokens += tokens * self.env.world_size
        st.elapsed = self._elapsed0 + time.monotonic() - self._t0
        self._point = _resume.ResumePoint(st.epoch, st.batch, st.chunk, self._carry)
        metrics = {"step": st.step, "epoch": st.epoch, "loss": loss, "lr": lr, "grad_norm": norm,
                   "tokens": tokens, "time": st.elapsed}
        self.logger.scalars(st.step, {"loss": loss, "lr": lr, "grad_norm": norm}, prefix="train/")
        self.logger.progress(st.step, elapsed=st.elapsed, loss=loss, **self._window.rates())
        if st.step % cfg.log_every == 0:
            self._log_window(lr)
        self._call("on_step_end", metrics)
        if self.val_data is not None and cfg.eval_every and st.step % cfg.eval_every == 0:
            self._validate()
        if cfg.checkpoint and cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
            self.save_checkpoint()
        # micro-batches after this point are dropped only when the last epoch ends mid-step (the other
        # stops come at step ends): only then is the RNG state kept (capture_rng costs ~200 us)
        if cfg.grad_accum_steps > 1 and cfg.max_epochs is not None and st.epoch + 1 >= cfg.max_epochs:
            self._rng_at_point = capture_rng()

    def _log_window(self, lr: float) -> None:
        st, row = self.state, self._window.summary()
        totals = all_reduce_sum(torch.tensor([row.pop("loss_sum"), row.pop("count"), row["tokens_per_s"]],
                                             dtype=torch.float64))
        row["loss"] = float(totals[0] / max(float(totals[1]), 1.0))
        row["tokens_per_s"] = float(totals[2])
        row["lr"] = lr
        self.logger.row({"step": st.step, "epoch": st.epoch, "time": round(st.elapsed, 3), **row})

    def _validate(self, final: bool = False) -> dict[str, float]:
        st, cfg = self.state, self.config
        self.phase = "eval"
        metrics = {f"val_{k}": v for k, v in self.evaluate(self.val_data).items()}
        self.phase, val, prev = "train", metrics["val_loss"], st.best_val
        st.last_eval_step = st.step
        improved = math.isfinite(val) and (prev is None or val < prev)
        st.best_val = val if improved else prev
        if not final:
            # patience counts from the last loss that beat its reference by more than min_delta (as
            # Keras and Lightning do): gains each below min_delta but adding up to more reset it too
            ref = st.patience_val if st.patience_val is not None else prev
            enough = math.isfinite(val) and (ref is None or val < ref - cfg.early_stopping_min_delta)
            st.patience_val = val if enough else ref
            st.bad_evals = 0 if enough else st.bad_evals + 1
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(val)
            if cfg.early_stopping_patience is not None and st.bad_evals >= cfg.early_stopping_patience:
                self._stop_flag = "early_stopping"
        if improved and cfg.save_best and cfg.checkpoint:  # the final evaluation too
            _resume.write_checkpoint(self, "best")
        self.logger.row({"step": st.step, "epoch": st.epoch, "time": round(st.elapsed, 3), **metrics})
        self.logger.scalars(st.step, metrics, prefix="val/")
        self.logger.plot()
        log.info("step %d: val_loss %.4f", st.step, val)
        self._call("on_eval_end", {"step": st.step, "epoch": st.epoch, **metrics})
        return metrics

    def _stop_reason(self) -> str | None:
        st, cfg = self.state, self.config
        local = [self._stop_flag, "callback" if self.should_stop else "",
                 "max_steps" if cfg.max_steps is not None and st.step >= cfg.max_steps else "",
                 "max_epochs" if cfg.max_epochs is not None and st.epoch >= cfg.max_epochs else "",
                 "max_time" if cfg.max_time is not None and self._elapsed() >= cfg.max_time else ""]
        codes = torch.zeros(len(_REASONS), dtype=torch.float64)
        for reason in filter(None, local):
            codes[_REASONS.index(reason)] = 1.0
        if self.env.distributed:  # every process must stop at the same step
            codes = all_reduce_sum(codes)
        hits = [r for r, c in zip(_REASONS, codes.tolist()) if r and c > 0]
        return hits[0] if hits else None

    def _elapsed(self) -> float:
        if not hasattr(self, "_t0"):  # before fit's clock starts (the scheduler's first call)
            return self.state.elapsed
        return self._elapsed0 + time.monotonic() - self._t0

    def _finish(self) -> None:
        st = self.state
        st.stop_reason = self._stop_reason()
        self.phase = "finish"
        if self._pending:
            log.info("dropping %d accumulated micro-batches that did not complete a step", self._pending)
            self.optimizer.zero_grad(set_to_none=True)
            self._pending = 0
            if self._rng_at_point is not None:  # the checkpoint resumes where the last step ended:
                restore_rng(self._rng_at_point)  # its random draws too (dropout of the dropped micro-batches)
        st.elapsed = self._elapsed()
        if self._window.count:  # the rate the window's last step used, not the scheduler's next one
            self._log_window(getattr(self, "_last_lr", self.optimizer.param_groups[0]["lr"]))
        evaluated = self.val_data is not None and st.last_eval_step != st.step
        if evaluated:
            self._validate(final=True)
        # a checkpoint written at this very step before the final evaluation lacks its result
        if self.config.checkpoint and (self._saved_step != st.step or evaluated):
            self.save_checkpoint()
        self.logger.plot()
        log.info("training stopped (%s) at step %d, epoch %d", st.stop_reason, st.step, st.epoch)
        self._call("on_fit_end")

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self, *args)
