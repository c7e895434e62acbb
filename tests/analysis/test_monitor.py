"""GradientMonitor: one clear warning per kind on exploding / vanishing norms, silence on healthy runs."""

from __future__ import annotations

import logging
import math
import warnings

import pytest
import torch

import rnnkit
from rnnkit.analysis import GradientMonitor, GradientMonitorCallback, GradientWarning


def _feed(monitor: GradientMonitor, norms) -> list[str]:
    return [m for i, g in enumerate(norms) if (m := monitor.update(i, g)) is not None]


def _healthy(n: int = 3000, seed: int = 0) -> list[float]:
    """A noisy, slowly decaying norm: log-normal noise (sigma 0.5) around 3 exp(-t / 1000)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, generator=gen).mul(0.5).exp()
    return (3 * torch.exp(-torch.arange(n) / 1000.0) * noise).tolist()


def test_silent_on_healthy_sequences():
    for seed in range(3):
        assert _feed(GradientMonitor(emit="none"), _healthy(seed=seed)) == []


def test_spike_warns_once_with_advice():
    norms = _healthy(200)
    norms[120] *= 80.0
    norms[150] *= 80.0
    messages = _feed(GradientMonitor(emit="none"), norms)
    assert len(messages) == 1
    assert messages[0].startswith("exploding gradient") and "step 120" in messages[0]
    assert "max_grad_norm" in messages[0] and "learning rate" in messages[0]
    assert "clip the gradient norm" in messages[0]
    clipped = _feed(GradientMonitor(emit="none", max_grad_norm=0.5), norms)  # a user who already clips
    assert len(clipped) == 1 and "clip the gradient norm" not in clipped[0]
    assert "clipping at max_grad_norm=0.5 already bounds" in clipped[0] and "learning rate" in clipped[0]


def test_spike_during_warmup_is_ignored():
    norms = _healthy(200)
    norms[10] *= 80.0
    assert _feed(GradientMonitor(emit="none"), norms) == []


def test_non_finite_and_vanishing_each_once():
    norms = _healthy(100) + [math.nan, math.inf] + [1e-9 * 0.9 ** k for k in range(200)]
    messages = _feed(GradientMonitor(emit="none"), norms)
    kinds = [m.split(":")[0] for m in messages]
    assert kinds == ["non-finite gradient", "vanishing gradient"], messages
    assert "LSTM" in messages[1] and "forget_bias" in messages[1]


def test_all_zero_gradients_vanish_even_before_warmup():
    messages = _feed(GradientMonitor(emit="none"), [0.0] * 60)
    assert len(messages) == 1 and "vanishing" in messages[0] and "detach" in messages[0]


def _train_rnn(scale: float, steps: int = 70, T: int = 100) -> list[float]:
    """Pre-clip gradient norms of a tanh RNN with its recurrent weights scaled by ``scale``."""
    rnn, head = rnnkit.RNN(4, 32, batch_first=True), torch.nn.Linear(32, 1)
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(scale)
    params = [*rnn.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=0.01)
    norms = []
    for _ in range(steps):
        x = torch.randn(16, T, 4)
        loss = torch.nn.functional.mse_loss(head(rnn(x)[0][:, -1]), x[:, :3, 0].sum(1, keepdim=True))
        opt.zero_grad()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, 1.0)))
        opt.step()
    return norms


def test_exploding_model_warns_and_healthy_model_does_not():
    with pytest.warns(GradientWarning, match="exploding gradient"):
        messages = _feed(GradientMonitor(), _train_rnn(3.0))
    assert len(messages) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientWarning)
        assert _feed(GradientMonitor(), _train_rnn(0.5)) == []


def test_callback_reads_trainer_metrics(caplog):
    callback = GradientMonitorCallback(emit="log", warmup=5, window=20)
    with caplog.at_level(logging.WARNING, logger="rnnkit.analysis.monitor"):
        for step in range(30):
            callback.on_step_end(None, {"step": step, "loss": 1.0})  # no grad_norm: skipped
            callback.on_step_end(None, {"step": step, "grad_norm": 1.0 if step != 25 else 100.0})
    assert len(callback.messages) == 1 and "step 25" in callback.messages[0]
    assert "exploding gradient" in caplog.text


def test_bad_arguments():
    with pytest.raises(ValueError, match="emit"):
        GradientMonitor(emit="print")
    with pytest.raises(ValueError, match="window"):
        GradientMonitor(window=0)
    with pytest.raises(ValueError, match="explode_factor"):
        GradientMonitor(explode_factor=0.5)
    with pytest.raises(TypeError):
        GradientMonitorCallback(GradientMonitor(), warmup=3)


def test_absolute_rule_needs_no_warmup_and_bad_norms_are_refused():
    """A run that explodes from its first steps is named before it turns NaN (the docs' unclipped
    tanh RNN: at step 5, not at step 22's inf)."""
    norms = [16.0 * 4.0 ** k for k in range(20)]
    messages = _feed(GradientMonitor(emit="none"), norms)
    assert len(messages) == 1 and messages[0].startswith("exploding gradient") and "above 1000" in messages[0]
    assert "at step 6" in messages[0]  # medians 64, 160, 256, 640, then 1024
    with pytest.raises(ValueError, match=">= 0"):
        GradientMonitor(emit="none").update(0, -5.0)
    zeros = _feed(GradientMonitor(emit="none", vanish_relative=0, vanish_absolute=0), [0.0] * 60)
    assert len(zeros) == 1 and "stayed at 0" in zeros[0] and "below 0" not in zeros[0]
