#!/usr/bin/env python3
"""Measure the gate figure of docs/understanding/recurrences.md: how much of its state each recurrence
keeps per step at initialisation, next to the per-step decay of its gradient.

    python docs/scripts/gates.py        # writes docs/figures/gates.png, prints a table

Setting as docs/scripts/gradient_flow.py: seed 0, hidden 64, x ~ N(0, 1) of shape (8, 200, 8). The
"keep" factor is the coefficient of the previous state in each unit's update, read off the cells'
equations (rnnkit/cells/*.py) along the real trajectory: sigma(f) for the LSTM's cell c, z for the GRU,
1 - z for MinGRU, f' for MinLSTM, u * 1[pre-activation > 0] for IndRNN.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from rnnkit.analysis import CELLS, gradient_flow
from rnnkit.analysis.plots import new_figure, save_figure

FIGURES = Path(__file__).resolve().parents[1] / "figures"
NAMES = ("lstm", "lstm_fb1", "gru", "indrnn", "mingru", "minlstm")


def keep_factor(name: str, cell, xp_t: torch.Tensor, state) -> torch.Tensor:
    """(B, H) coefficient of the previous state in this step's update."""
    if name.startswith("lstm"):
        gates = xp_t + F.linear(state.h, cell.weight_hh, cell.bias_hh)
        return torch.sigmoid(gates.chunk(4, -1)[1])  # forget gate
    if name == "gru":
        hz = F.linear(state, cell.weight_hh, cell.bias_hh).chunk(3, -1)[1]
        return torch.sigmoid(xp_t.chunk(3, -1)[1] + hz)  # update gate z: h_t = (1 - z) n + z h
    if name == "indrnn":
        u = cell.recurrent_weight()
        return u * (xp_t + u * state > 0)
    if name == "mingru":
        return 1 - torch.sigmoid(xp_t.chunk(2, -1)[0])
    kf, ki, _ = xp_t.chunk(3, -1)  # minlstm
    return torch.sigmoid(F.softplus(-ki) - F.softplus(-kf))


def measure(name: str, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The keep factors along the trajectory (T-1, B, H), and the measured per-step gradient decay."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = CELLS[name](x.shape[-1], 64).double()
    cell = layer.cells()[0]
    state, keeps = cell.init_state(x.shape[0], dtype=torch.float64), []
    with torch.no_grad():
        xp = cell.project_input(x.double())
        for t in range(x.shape[1]):
            keeps.append(keep_factor(name, cell, xp[:, t], state))
            state = cell.recurrence(xp[:, t], state)
    flow = gradient_flow(layer, x, jacobians=False)
    decay = math.exp(math.log(flow.ratio()) / (x.shape[1] - 1))
    return torch.stack(keeps[1:]), decay  # (T-1, B, H): steps 2..T, the ones dL/ds_1 passes through


def main() -> None:
    start = time.perf_counter()
    x = torch.randn(8, 200, 8, generator=torch.Generator().manual_seed(0))
    fig, (ax,) = new_figure(7, 4)
    print("| recurrence | mean keep factor | per-unit geometric mean over time: median unit | best unit "
          "| gradient kept per step (measured) |")
    print("|---|---|---|---|---|")
    for i, name in enumerate(NAMES):
        keeps, decay = measure(name, x)
        per_unit = keeps.clamp(min=1e-300).log().mean(0).exp().flatten()  # (B * H,)
        ax.hist(per_unit.numpy(), bins=40, range=(0, 1), histtype="step", lw=1.4, color=f"C{i}",
                label=f"{name} (gradient x{decay:.3f} per step)")
        ax.axvline(decay, color=f"C{i}", ls=":", lw=1)
        print(f"| {name} | {keeps.mean():.3f} | {per_unit.median():.3f} | {per_unit.max():.3f} | {decay:.3f} |")
    ax.set(xlabel="geometric mean over steps 2..T of a unit's keep factor (dotted: measured gradient decay)",
           ylabel="units x sequences (64 x 8)", yscale="log",
           title="memory gates at initialisation, x ~ N(0, 1), T=200, hidden=64")
    ax.legend(fontsize=8)
    save_figure(fig, FIGURES / "gates.png")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
