"""Trainer behaviour: stopping, clipping, TBPTT carry, accumulation, schedules, logs, errors."""

from __future__ import annotations

import copy
import csv
import math
import time

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest
import torch
from tiny_models import (ConstValModel, DictDataset, PairState, TinyLM, TinyRegressor, TokenStream,
                         lm_data, reg_data)

from rnnkit.errors import ConfigError
from rnnkit.training import Callback, DatasetBatches, Trainer, TrainerConfig, load_checkpoint
from rnnkit.training.batches import split_time
from rnnkit.training.schedules import lr_factor


class Recorder(Callback):
    def __init__(self):
        self.steps, self.evals, self.started, self.ended = [], [], 0, 0

    def on_fit_start(self, trainer):
        self.started += 1

    def on_step_end(self, trainer, metrics):
        self.steps.append(dict(metrics))

    def on_eval_end(self, trainer, metrics):
        self.evals.append(dict(metrics))

    def on_fit_end(self, trainer):
        self.ended += 1


class GradSpy(Callback):
    """Wraps optimizer.step to see the gradients the update actually uses (after clipping)."""

    def __init__(self):
        self.grads = []

    def on_fit_start(self, trainer):
        step = trainer.optimizer.step

        def spy(*args, **kwargs):
            self.grads.append([p.grad.clone() for p in trainer.model.parameters()])
            return step(*args, **kwargs)

        trainer.optimizer.step = spy


def _global_norm(grads):
    return torch.linalg.vector_norm(torch.cat([g.reshape(-1).double() for g in grads])).item()


def test_max_steps_and_run_files(make_config, tmp_path):
    rec = Recorder()
    cfg = make_config(max_steps=5, eval_every=2, log_every=2, tensorboard=True, plots=True, quiet=False)
    state = Trainer(TinyLM(), cfg, callbacks=[rec]).fit(lm_data(), lm_data(seed=1))
    assert (state.step, state.stop_reason) == (5, "max_steps")
    assert [m["step"] for m in rec.steps] == [1, 2, 3, 4, 5]
    assert [m["step"] for m in rec.evals] == [2, 4, 5] and rec.started == rec.ended == 1
    run = cfg.out_dir
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"step", "epoch", "time", "loss", "lr", "grad_norm", "val_loss"} <= set(rows[0])
    assert [r["step"] for r in rows if r["loss"]] == ["2", "4", "5"]
    assert [r["step"] for r in rows if r["val_loss"]] == ["2", "4", "5"]
    resolved = tomllib.loads((run / "config.toml").read_text())
    assert resolved["trainer"]["max_steps"] == 5 and resolved["runtime"]["device"] == "cpu"
    assert (run / "loss.png").stat().st_size > 1000
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "last" / "manifest.json").is_file()


def test_max_epochs_counts_batches(make_config):
    state = Trainer(TinyLM(), make_config(max_epochs=2, checkpoint=False)).fit(lm_data(n=16))
    assert (state.step, state.epoch, state.stop_reason) == (8, 2, "max_epochs")


def test_max_time_stops_early(make_config):
    class Slow(Callback):
        def on_step_end(self, trainer, metrics):
            time.sleep(0.05)

    state = Trainer(TinyLM(), make_config(max_steps=10_000, max_time=0.2, checkpoint=False),
                    callbacks=[Slow()]).fit(lm_data())
    assert state.stop_reason == "max_time" and 1 <= state.step <= 5  # 0.2 s at >= 0.05 s a step


def test_callback_can_stop(make_config):
    class Stop(Callback):
        def on_step_end(self, trainer, metrics):
            trainer.should_stop = metrics["step"] == 3

    state = Trainer(TinyLM(), make_config(max_steps=50, checkpoint=False), callbacks=[Stop()]).fit(lm_data())
    assert (state.step, state.stop_reason) == (3, "callback")


def test_preclip_norm_logged_and_norm_clipped(make_config):
    model, data = TinyLM(), lm_data()
    cfg = make_config(max_steps=1, max_grad_norm=1e-3, checkpoint=False)
    reference = copy.deepcopy(model)
    first = next(DatasetBatches(data, cfg.batch_size, seed=cfg.seed).iter_batches(0))
    reference(**first).loss.backward()
    true_norm = _global_norm([p.grad for p in reference.parameters()])
    rec, spy = Recorder(), GradSpy()
    Trainer(model, cfg, callbacks=[rec, spy]).fit(data)
    assert rec.steps[0]["grad_norm"] == pytest.approx(true_norm, rel=1e-6)
    assert true_norm > 1e-2
    assert _global_norm(spy.grads[0]) == pytest.approx(1e-3, rel=1e-4)


def test_value_clipping(make_config):
    rec, spy = Recorder(), GradSpy()
    Trainer(TinyLM(), make_config(max_steps=2, grad_clip_value=1e-4, checkpoint=False),
            callbacks=[rec, spy]).fit(lm_data())
    assert all(g.abs().max() <= 1e-4 for step in spy.grads for g in step)
    assert all(m["grad_norm"] > 1e-3 for m in rec.steps)  # logged before clipping


def test_tbptt_matches_manual_loop_and_detaches(make_config):
    model, data = TinyRegressor(), reg_data(n=4, t=10)
    manual = copy.deepcopy(model)
    Trainer(model, make_config(max_epochs=2, tbptt_steps=4, checkpoint=False)).fit(data)

    opt = torch.optim.Adam(manual.parameters(), lr=1e-3)
    for epoch in range(2):
        batch = next(DatasetBatches(data, 4, seed=0).iter_batches(epoch))
        state = None
        for chunk in split_time(batch, 4):
            out = manual(**chunk, state=state)
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            state = PairState(out.state.h.detach(), out.state.c.detach())

    assert [s is None for s in model.states_seen] == [True, False, False] * 2
    for ours, theirs in zip(model.states_seen, manual.states_seen):
        if ours is not None:
            assert isinstance(ours, PairState) and not ours.h.requires_grad and ours.h.grad_fn is None
            assert torch.allclose(ours.h, theirs.h, atol=1e-7) and torch.allclose(ours.c, theirs.c, atol=1e-7)
    for a, b in zip(model.parameters(), manual.parameters()):
        assert torch.allclose(a, b, atol=1e-7, rtol=0)


def test_stateful_stream_carries_state_between_batches(make_config):
    model = TinyLM()
    stream = TokenStream(torch.arange(200) % 11, rows=4, steps=10)  # 4 batches per epoch
    Trainer(model, make_config(max_epochs=2, checkpoint=False)).fit(stream)
    seen = model.inputs_seen
    assert [s is None for s in seen] == [True, False, False, False] * 2
    assert all(not s.requires_grad for s in seen if s is not None)


def test_accumulation_equals_full_batch_float64(make_config):
    data = reg_data(n=8, t=6, dtype=torch.float64)
    full, half = TinyRegressor().double(), None
    half = copy.deepcopy(full)
    Trainer(full, make_config(name="full", max_steps=3, batch_size=8, checkpoint=False)).fit(data)
    Trainer(half, make_config(name="half", max_steps=3, batch_size=4, grad_accum_steps=2,
                              checkpoint=False)).fit(data)
    for a, b in zip(full.parameters(), half.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert any(not torch.equal(a, b) for a, b in zip(full.parameters(), TinyRegressor().double().parameters()))


def test_early_stopping(make_config):
    data = DictDataset(x=torch.zeros(8, 1))
    rec = Recorder()
    cfg = make_config(max_steps=50, eval_every=1, early_stopping_patience=2, save_best=True)
    state = Trainer(ConstValModel(), cfg, callbacks=[rec]).fit(data, data)
    assert (state.step, state.stop_reason, state.bad_evals) == (3, "early_stopping", 2)
    assert [e["val_loss"] for e in rec.evals] == [1.0, 1.0, 1.0]
    best = load_checkpoint(cfg.out_dir / "checkpoints" / "best").trainer_state
    last = load_checkpoint(cfg.out_dir / "checkpoints" / "last").trainer_state
    assert (best["step"], best["best_val"], last["step"]) == (1, 1.0, 3)


class ScriptedVal(ConstValModel):
    """ConstValModel whose validation loss is the next of ``values`` at each evaluation."""

    def __init__(self, values):
        super().__init__()
        self.values, self.at = list(values), 0

    def forward(self, x, state=None):
        out = super().forward(x, state)
        return out._replace(loss=out.loss * 0.0 + self.values[self.at]) if not self.training else out


class NextValue(Callback):
    def on_eval_end(self, trainer, metrics):
        trainer.model.at += 1


def test_early_stopping_patience_counts_from_the_last_big_enough_gain(make_config):
    """Gains of 0.05 per evaluation with min_delta 0.08: every second one adds up to more than
    min_delta, so patience 2 never runs out (comparing each with the best so far stopped at step 3)."""
    data = DictDataset(x=torch.zeros(8, 1))
    values = [1.0 - 0.05 * i for i in range(12)]
    cfg = make_config(max_steps=10, eval_every=1, early_stopping_patience=2, early_stopping_min_delta=0.08,
                      checkpoint=False)
    state = Trainer(ScriptedVal(values), cfg, callbacks=[NextValue()]).fit(data, data)
    assert (state.step, state.stop_reason) == (10, "max_steps")
    flat = [1.0, 0.95, 0.93, 0.91, 0.9, 0.9]  # two evaluations without reaching 1.0 - 0.08
    state = Trainer(ScriptedVal(flat), cfg.replace(name="flat"), callbacks=[NextValue()]).fit(data, data)
    assert (state.step, state.stop_reason) == (3, "early_stopping")


def test_final_evaluation_can_be_the_best_checkpoint(make_config):
    data = DictDataset(x=torch.zeros(8, 1))
    cfg = make_config(max_steps=3, eval_every=2, save_best=True)
    Trainer(ScriptedVal([1.0, 0.5]), cfg, callbacks=[NextValue()]).fit(data, data)
    best = load_checkpoint(cfg.out_dir / "checkpoints" / "best").trainer_state
    assert (best["step"], best["best_val"]) == (3, 0.5)


def test_plateau_schedule_stops_at_min_lr(make_config):
    data = DictDataset(x=torch.zeros(8, 1))
    rec = Recorder()
    cfg = make_config(max_steps=8, eval_every=1, schedule="plateau", plateau_patience=1, lr=0.1, min_lr=0.03,
                      checkpoint=False)
    Trainer(ConstValModel(), cfg, callbacks=[rec]).fit(data, data)
    assert [m["lr"] for m in rec.steps] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.03, 0.03, 0.03])


def test_plateau_schedule_follows_torch(make_config):
    data = DictDataset(x=torch.zeros(8, 1))
    rec = Recorder()
    cfg = make_config(max_steps=8, eval_every=1, schedule="plateau", plateau_patience=1, lr=0.1, checkpoint=False)
    Trainer(ConstValModel(), cfg, callbacks=[rec]).fit(data, data)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    expected = [0.1]
    for _ in range(7):
        sched.step(1.0)
        expected.append(opt.param_groups[0]["lr"])
    assert [m["lr"] for m in rec.steps] == pytest.approx(expected)
    assert expected[-1] < 0.1


def test_cosine_with_warmup(make_config):
    rec = Recorder()
    cfg = make_config(max_steps=6, schedule="cosine", warmup_steps=2, lr=1e-2, min_lr=1e-3, checkpoint=False)
    Trainer(TinyLM(), cfg, callbacks=[rec]).fit(lm_data())
    got = [m["lr"] for m in rec.steps]
    cos = [1e-3 + 9e-3 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert got == pytest.approx([5e-3, 1e-2, *cos])
    assert lr_factor(TrainerConfig(schedule="constant"), None)(100) == 1.0


def test_constant_schedule_and_adamw(make_config):
    rec = Recorder()
    Trainer(TinyLM(), make_config(max_steps=3, optimizer="adamw", weight_decay=0.1, checkpoint=False),
            callbacks=[rec]).fit(lm_data())
    assert [m["lr"] for m in rec.steps] == [1e-3] * 3


def test_bf16_autocast_on_cpu(make_config):
    import rnnkit
    model = TinyRegressor()
    model.rnn = rnnkit.LSTM(3, 6, batch_first=True)  # torch.nn.LSTM fails under bf16 autocast on AVX2 CPUs
    state = Trainer(model, make_config(max_steps=2, amp="bf16", checkpoint=False)).fit(reg_data())
    assert state.step == 2


def test_evaluate_averages_scalar_outputs(make_config):
    model, data = TinyRegressor(), reg_data(n=6)
    metrics = Trainer(model, make_config()).evaluate(data)
    with torch.no_grad():
        out = model(x=data.tensors["x"], y=data.tensors["y"])
    assert set(metrics) == {"loss", "mae"} and model.training  # mode restored
    assert metrics["loss"] == pytest.approx(out.loss.item(), rel=1e-5)
    assert metrics["mae"] == pytest.approx(out.mae.item(), rel=1e-5)


def test_bad_model_output_is_a_clear_type_error(make_config):
    class Bad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, state=None):
            return (self.w * x).sum(), None

    with pytest.raises(TypeError, match="expected a NamedTuple with a scalar .loss"):
        Trainer(Bad(), make_config(max_steps=1)).fit(DictDataset(x=torch.ones(4, 2)))


def test_bad_data_and_config(make_config):
    with pytest.raises(TypeError, match="iter_batches"):
        Trainer(TinyLM(), make_config(max_steps=1)).fit(object())
    with pytest.raises(ConfigError, match="max_steps, max_epochs, max_time"):
        Trainer(TinyLM(), make_config()).fit(lm_data())
    with pytest.raises(ConfigError, match="max_epochs does not plan it under tbptt_steps"):
        Trainer(TinyLM(), make_config(max_epochs=1, schedule="cosine", tbptt_steps=4)).fit(
            TokenStream(torch.arange(163) % 11, rows=4, steps=8))
    with pytest.raises(ConfigError, match="fp16"):
        Trainer(TinyLM(), make_config(max_steps=1, amp="fp16")).fit(lm_data())
    with pytest.raises(ConfigError, match="optimizer"):
        TrainerConfig(optimizer="sgd")
    with pytest.raises(ConfigError, match="lr"):
        TrainerConfig(lr=-1.0)
    with pytest.raises(ConfigError, match="eval_every"):
        TrainerConfig(early_stopping_patience=3)
    for bad, match in [(dict(lr=0.0), r"lr: expected a number > 0, got 0"),
                       (dict(max_grad_norm=0.0), r"max_grad_norm: expected a number > 0 \(None: no clipping\)"),
                       (dict(grad_clip_value=0), "grad_clip_value: expected a number > 0"),
                       (dict(max_time=0), r"max_time: expected a number > 0 \(seconds of training"),
                       (dict(lr=-1.0), r"lr: expected a finite number > 0, got -1"),  # said >= 0
                       (dict(lr=1e-3, min_lr=1e-2), "min_lr=0.01 is above lr=0.001"),
                       (dict(schedule_steps=10), "schedule='constant' has none"),
                       (dict(save_best=True, eval_every=5, checkpoint=False), "save_best .* needs checkpoint=True")]:
        with pytest.raises(ConfigError, match=match):
            TrainerConfig(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        TrainerConfig.from_dict({"max_step": 3})
    with pytest.raises(ValueError, match="time axis"):
        split_time({"a": torch.zeros(2, 5), "b": torch.zeros(2, 6)}, 2)
    assert TrainerConfig.from_dict(TrainerConfig(betas=(0.8, 0.9)).to_dict()).betas == (0.8, 0.9)


def test_cosine_over_a_wall_clock_budget():
    cfg = TrainerConfig(schedule="cosine", max_time=100.0, lr=1.0, min_lr=0.0)
    clock = {"t": 0.0}
    factor = lr_factor(cfg, None, elapsed=lambda: clock["t"])
    assert factor(0) == pytest.approx(1.0)
    clock["t"] = 50.0
    assert factor(7) == pytest.approx(0.5)
    clock["t"] = 150.0
    assert factor(9) == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="max_time"):
        lr_factor(TrainerConfig(schedule="cosine"), None)


def test_gradient_warnings_fire_once_on_explosion_and_stay_silent_when_healthy(make_config, caplog):
    import logging

    torch.manual_seed(0)
    healthy = torch.nn.Linear(3, 1)

    class Wrap(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.lin, self.scale = healthy, scale

        def forward(self, x, y, state=None):
            from collections import namedtuple
            out = namedtuple("Out", "loss state")
            return out(((self.lin(x) - y) ** 2).mean() * self.scale(), None)

    x, y = torch.randn(64, 3), torch.randn(64, 1)
    data = [{"x": x[i:i + 8], "y": y[i:i + 8]} for i in range(0, 64, 8)]
    calls = {"n": 0}

    def exploding():
        calls["n"] += 1
        return 1.0 if calls["n"] < 120 else 1e6  # the loss scale jumps: the gradient norm explodes

    with caplog.at_level(logging.WARNING):
        t = Trainer(Wrap(lambda: 1.0), make_config(max_steps=150, lr=1e-3, checkpoint=False))
        t.fit(_Listed(data))
        assert t.gradient_monitor.messages == []
        t = Trainer(Wrap(exploding), make_config(max_steps=150, lr=1e-9, checkpoint=False))
        t.fit(_Listed(data))
    assert len(t.gradient_monitor.messages) == 1 and "explod" in t.gradient_monitor.messages[0].lower()


class _Listed:
    """The same batches every epoch (iter_batches protocol)."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def iter_batches(self, epoch, rank=0, world_size=1):
        return iter(self.batches)


def test_the_final_evaluation_is_in_the_final_checkpoint_and_the_last_row_has_the_rate_used(make_config):
    """A checkpoint written at the last step before the final evaluation kept a stale best_val (and a
    resume evaluated again); the last, partial log window showed the scheduler's next rate."""
    cfg = make_config(max_steps=20, checkpoint_every=10, eval_every=15, log_every=3, schedule="cosine",
                      min_lr=1e-4)
    rec = Recorder()
    state = Trainer(TinyLM(), cfg, callbacks=[rec]).fit(lm_data(), lm_data(seed=1))
    saved = load_checkpoint(cfg.out_dir / "checkpoints" / "last").trainer_state
    assert saved["last_eval_step"] == 20 and saved["best_val"] == state.best_val
    with open(cfg.out_dir / "metrics.csv", newline="") as fh:
        last = [r for r in csv.DictReader(fh) if r["loss"]][-1]
    assert last["step"] == "20" and float(last["lr"]) == pytest.approx(rec.steps[-1]["lr"], rel=1e-9)
    assert rec.steps[-1]["lr"] > cfg.min_lr  # the rate step 20 used, not the one after the schedule's end


@pytest.mark.parametrize("field, value, match", [
    ("checkpoint", "false", "expected true or false"), ("tensorboard", "no", "expected true or false"),
    ("max_time", True, "finite number"), ("name", 5, "expected a string"), ("seed", "1", "seed"),
    ("seed", 1.5, "seed"), ("betas", [0.9, "x"], "betas")])
def test_config_values_of_the_wrong_type_are_refused(field, value, match):
    """From TOML, checkpoint = "false" was truthy and wrote checkpoints; seed = "1" crashed mid-setup."""
    with pytest.raises(ConfigError, match=match):
        TrainerConfig(**{field: value})


def test_a_new_run_drops_old_event_files_and_a_resume_keeps_the_checkpoint_step(make_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_config(max_steps=4, checkpoint_every=2, tensorboard=True)
    Trainer(TinyLM(), cfg).fit(lm_data())
    Trainer(TinyLM(), cfg.replace(max_steps=3)).fit(lm_data())  # a new run in the same folder
    assert len(list(cfg.out_dir.glob("events.out.tfevents.*"))) == 1
    Trainer(TinyLM(), cfg.replace(max_steps=5, resume=True)).fit(lm_data())  # from run 2's step 3
    acc = EventAccumulator(str(cfg.out_dir))
    acc.Reload()
    steps = sorted(e.step for e in acc.Scalars("train/loss"))
    assert steps == [1, 2, 3, 4, 5], steps  # purge_step was the checkpoint's step: its own point was lost


def test_progress_goes_to_a_pipe_as_plain_lines(make_config, capfd, monkeypatch):
    """With stderr not a terminal, rich drew the bar once, at the end: a run piped to a log file
    showed nothing for its whole length. Now a plain line every ``every`` seconds and one at the end."""
    from rnnkit.training import logging as run_logging

    monkeypatch.setattr(run_logging._PlainProgress, "every", 0.0)
    Trainer(TinyLM(), make_config(max_steps=4, log_every=1, quiet=False, checkpoint=False)).fit(lm_data())
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("train ")]
    assert [ln.split("step ")[1].split()[0] for ln in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert lines[-1].startswith("train 100%") and "\x1b" not in "".join(lines)


def test_throughput_on_the_bar_is_not_one_slow_step(monkeypatch):
    """The bar showed the last step's rate: the step after an evaluation (which counts its time) made a
    200 steps/s run read 0.9 steps/s at its end (and a moving average kept such a step for dozens)."""
    from rnnkit.training import logging as run_logging

    clock = iter([0.0, 0.0] + [0.005 * k for k in range(1, 41)] + [1.2])
    monkeypatch.setattr(run_logging.time, "monotonic", lambda: next(clock))
    meter = run_logging.StepMeter()  # reads the clock at start and in reset
    for _ in range(40):
        meter.add_micro(torch.tensor(1.0), 100)
        meter.end_step(1.0)
    assert meter.rates()["steps_per_s"] == pytest.approx(200)
    meter.add_micro(torch.tensor(1.0), 100)
    meter.end_step(1.0)  # one step of 1 s (an evaluation before it): the median of 20 steps ignores it
    assert meter.rates() == pytest.approx({"steps_per_s": 200, "tokens_per_s": 20_000})
