#!/usr/bin/env python3
"""Measure the clipping figure of docs/understanding/gradients.md.

    python docs/scripts/clipping.py        # writes docs/figures/clipping.png, prints a summary

A tanh RNN (64 units, W_hh scaled by 2 so that its Jacobians exceed 1) learns the adding problem
(T=50, batches of 32, rnnkit.data.synthetic) with plain SGD at lr 0.1, once without clipping and once
with the gradient norm clipped to 1.0 (torch.nn.utils.clip_grad_norm_). Both runs see the same
initial weights and the same batches. The pre-clip norms are also fed to rnnkit's GradientMonitor.

It also measures the margin behind GradientMonitor's explode_factor=10: the largest ratio of a step's
pre-clip norm to the median of the previous 100 (after 50 warm-up steps) in healthy runs: 64-unit
LSTM, GRU and tanh RNN on the same task with Adam (lr 1e-3, clip 1.0), 600 steps each.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from pathlib import Path

import torch

import rnnkit
from rnnkit.analysis import GradientMonitor
from rnnkit.analysis.plots import new_figure, save_figure
from rnnkit.data.synthetic import adding_problem

FIGURES = Path(__file__).resolve().parents[1] / "figures"
STEPS, T, LR, SCALE = 300, 50, 0.1, 2.0


def train(max_norm: float | None) -> tuple[list[float], list[float], list[str]]:
    """Pre-clip gradient norms, losses and GradientMonitor messages of one run."""
    torch.manual_seed(0)
    rnn, head = rnnkit.RNN(2, 64, batch_first=True), torch.nn.Linear(64, 1)
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(SCALE)
    params = [*rnn.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=LR)
    gen, monitor = torch.Generator().manual_seed(1), GradientMonitor(emit="none")
    norms, losses, messages = [], [], []
    for step in range(STEPS):
        x, y = adding_problem(32, T, generator=gen)
        loss = torch.nn.functional.mse_loss(head(rnn(x)[0][:, -1]), y)
        opt.zero_grad()
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm or math.inf))
        norms.append(norm)
        losses.append(loss.item())
        if (message := monitor.update(step, norm)) is not None:
            messages.append(message)
        opt.step()
    return norms, losses, messages


def healthy_margin(kind: str, steps: int = 600) -> float:
    """Largest norm / running-median ratio of a healthy Adam run (GradientMonitor's window and warm-up)."""
    torch.manual_seed(0)
    layer, head = getattr(rnnkit, kind)(2, 64, batch_first=True), torch.nn.Linear(64, 1)
    params = [*layer.parameters(), *head.parameters()]
    opt, gen = torch.optim.Adam(params, lr=1e-3), torch.Generator().manual_seed(0)
    history: deque[float] = deque(maxlen=100)
    worst = 0.0
    for step in range(steps):
        x, y = adding_problem(32, T, generator=gen)
        loss = torch.nn.functional.mse_loss(head(layer(x)[0][:, -1]), y)
        opt.zero_grad()
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        if step >= 50:
            worst = max(worst, norm / statistics.median(history))
        history.append(norm)
        opt.step()
    return worst


def main() -> None:
    start = time.perf_counter()
    for kind in ("LSTM", "GRU", "RNN"):
        print(f"healthy {kind}: largest pre-clip norm / running median = {healthy_margin(kind):.2f}")
    runs = {"no clipping": train(None), "clip_grad_norm_(1.0)": train(1.0)}
    fig, (left, right) = new_figure(11, 4, ncols=2)
    for name, (norms, losses, messages) in runs.items():
        left.plot(norms, label=name, lw=1)
        right.plot(losses, label=name, lw=1)
        finite = [v for v in norms if math.isfinite(v)]
        first_bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        print(f"{name}: pre-clip norm at step 0 {norms[0]:.3g}, median of the finite ones "
              f"{sorted(finite)[len(finite) // 2]:.3g}, largest finite {max(finite):.3g}; loss {losses[0]:.3g} -> "
              f"mean of the last 50 steps {sum(losses[-50:]) / 50:.3g}; first non-finite loss at step {first_bad}")
        for message in messages:
            print(f"  GradientMonitor: {message}")
    left.set(yscale="log", xlabel="SGD step", ylabel="gradient norm before clipping",
             title="pre-clip gradient norm (gaps: inf/NaN)")
    right.set(yscale="log", xlabel="SGD step", ylabel="MSE (batch)", title="training loss (adding, T=50)")
    right.axhline(1 / 6, color="0.4", ls="--", lw=1, label="baseline 1/6")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.suptitle(f"tanh RNN, W_hh x {SCALE}, SGD lr {LR}: without and with gradient clipping")
    save_figure(fig, FIGURES / "clipping.png")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
