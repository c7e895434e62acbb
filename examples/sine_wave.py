#!/usr/bin/env python3
"""Fit an rnnkit LSTM to predict the next value of noisy sine waves, printing the error as it falls.

    python examples/sine_wave.py [--steps 300]
"""

from __future__ import annotations

import argparse
import math

import torch

import rnnkit


def batch(n: int, T: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sine waves of random frequency and phase; the target is the next value."""
    freq = torch.rand(n, 1, generator=gen) * 0.2 + 0.05
    phase = torch.rand(n, 1, generator=gen) * 2 * math.pi
    t = torch.arange(T + 1).float()
    wave = torch.sin(freq * t + phase) + 0.05 * torch.randn(n, T + 1, generator=gen)
    return wave[:, :-1, None], wave[:, 1:, None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    lstm = rnnkit.LSTM(1, 32, batch_first=True)
    head = torch.nn.Linear(32, 1)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-2)
    x_val, y_val = batch(256, 100, gen)
    for step in range(args.steps + 1):
        x, y = batch(64, 100, gen)
        loss = torch.nn.functional.mse_loss(head(lstm(x)[0]), y)
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 50 == 0:
            with torch.no_grad():
                val = torch.nn.functional.mse_loss(head(lstm(x_val)[0]), y_val).item()
            print(f"step {step:4d}  validation MSE {val:.4f}  (predicting the last value: "
                  f"{torch.nn.functional.mse_loss(x_val, y_val).item():.4f})")


if __name__ == "__main__":
    main()
