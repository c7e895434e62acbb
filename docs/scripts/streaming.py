#!/usr/bin/env python3
"""Measure the streaming figure of docs/understanding/transformers.md: the time and memory to produce
one more token, at growing context lengths, for a recurrence and for a Transformer with a KV cache.

    python docs/scripts/streaming.py      # writes docs/figures/streaming.png, prints a table

Contenders, batch 1, eval mode, no_grad (parameters: LSTM 0.53M, Transformer 1.05M; both printed):
* ``rnnkit.LSTM(256, 256, num_layers=1)``: ``step`` per token; its state is (h, c), 2 x 256 numbers
  whatever the context length.
* a 2-layer pre-norm Transformer decoder (d_model 256, 4 heads, feed-forward 512) written here with a
  preallocated key/value cache, the standard way to generate with one: the new token's key and value are
  written in place and it attends to every cached key (``scaled_dot_product_attention``), so a step
  costs O(t * d) and the cache holds 2 * layers * t * d numbers.
The median of 200 steps is taken after filling the cache (or running the recurrence) to context t.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import rnnkit
from rnnkit.bench import machine_description

FIGURES = Path(__file__).resolve().parents[1] / "figures"
D, HEADS, LAYERS, FF = 256, 4, 2, 512
CONTEXTS = (16, 64, 256, 1024, 4096, 16384)


class CachedLayer(nn.Module):
    """One pre-norm decoder layer that appends this token's key and value to a cache."""

    def __init__(self) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.out = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.ff = nn.Sequential(nn.Linear(D, FF), nn.GELU(), nn.Linear(FF, D))

    def forward(self, x: torch.Tensor, cache: dict) -> torch.Tensor:  # x: (1, 1, D)
        q, k, v = self.qkv(self.n1(x)).view(1, 1, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        t = cache["len"]  # the cache is preallocated: write this token's key and value in place
        cache["k"][:, :, t:t + 1] = k
        cache["v"][:, :, t:t + 1] = v
        cache["len"] = t + 1
        a = F.scaled_dot_product_attention(q, cache["k"][:, :, :t + 1], cache["v"][:, :, :t + 1])
        x = x + self.out(a.transpose(1, 2).reshape(1, 1, D))
        return x + self.ff(self.n2(x))


def fill_cache(layers, t: int) -> list[dict]:
    """Caches holding t random keys and values, with room for one more token."""
    return [{"k": torch.randn(1, HEADS, t + 1, D // HEADS), "v": torch.randn(1, HEADS, t + 1, D // HEADS),
             "len": t} for _ in layers]


def time_transformer(layers, t: int, steps: int = 200) -> tuple[float, int]:
    times = []
    for _ in range(steps):
        caches = fill_cache(layers, t)  # reset to context t so every step sees the same length
        x = torch.randn(1, 1, D)
        start = time.perf_counter()
        for layer, cache in zip(layers, caches):
            x = layer(x, cache)
        times.append(time.perf_counter() - start)
    cache_numbers = sum(c["k"].numel() + c["v"].numel() for c in caches)
    return statistics.median(times), cache_numbers


def time_lstm(lstm, t: int, steps: int = 200) -> tuple[float, int]:
    state = lstm.init_state(1)
    x = torch.randn(1, D)
    for _ in range(min(t, 64)):  # the state has the same size after any number of steps
        _, state = lstm.step(x, state)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        _, state = lstm.step(x, state)
        times.append(time.perf_counter() - start)
    return statistics.median(times), sum(s.numel() for s in state)


@torch.no_grad()
def main() -> int:
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(D, D).eval()
    layers = nn.ModuleList(CachedLayer() for _ in range(LAYERS)).eval()
    params = (sum(p.numel() for p in lstm.parameters()), sum(p.numel() for p in layers.parameters()))
    rows = []
    for t in CONTEXTS:
        (tl, nl), (tt, nt) = time_lstm(lstm, t), time_transformer(layers, t)
        rows.append((t, tl, nl, tt, nt))
    print(f"machine: {machine_description()}; parameters: LSTM {params[0]:,}, Transformer {params[1]:,}\n")
    print("| context t | LSTM step (us) | LSTM state (numbers) | Transformer step, KV cache (us) "
          "| KV cache (numbers) |")
    print("|---|---|---|---|---|")
    for t, tl, nl, tt, nt in rows:
        print(f"| {t} | {tl * 1e6:.0f} | {nl:,} | {tt * 1e6:.0f} | {nt:,} |")
    from rnnkit.analysis.plots import new_figure, save_figure
    fig, axes = new_figure(10, 3.6, ncols=2)
    ts = [r[0] for r in rows]
    axes[0].plot(ts, [r[1] * 1e6 for r in rows], "o-", label="rnnkit.LSTM.step")
    axes[0].plot(ts, [r[3] * 1e6 for r in rows], "s-", label="Transformer, KV cache")
    axes[0].set(xscale="log", yscale="log", xlabel="context length t", ylabel="time per token (us)")
    axes[1].plot(ts, [r[2] for r in rows], "o-", label="LSTM state")
    axes[1].plot(ts, [r[4] for r in rows], "s-", label="KV cache")
    axes[1].set(xscale="log", yscale="log", xlabel="context length t", ylabel="numbers kept per sequence")
    for ax in axes:
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    save_figure(fig, FIGURES / "streaming.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
