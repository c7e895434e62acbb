"""Speed benchmarks: rnnkit's layers against the real alternative, measured side by side.

Each row times a forward+backward training step of two contenders in turn (A, B, A, B, ...) and
reports the median of the per-pair ratios, which is robust to the machine's drift. ``run_speed``
returns the rows; ``benchmarks/speed.py`` and ``rnnkit bench`` print them as a table and write JSON.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

import rnnkit

__all__ = ["Row", "run_speed", "machine_description", "format_table"]


@dataclass(frozen=True)
class Row:
    name: str
    shape: str
    seconds_a: float
    seconds_b: float
    ratio: float  # time(A) / time(B): below 1 means rnnkit is faster
    target: str
    met: bool | None


def _train_step(module: torch.nn.Module, x: torch.Tensor, **kw) -> Callable[[], None]:
    def run() -> None:
        module.zero_grad(set_to_none=True)
        y, _ = module(x, **kw)
        y.sum().backward()
    return run


def _pair(a: Callable[[], None], b: Callable[[], None], repeats: int) -> tuple[float, float, float]:
    a(); b()  # warm-up
    ta, tb, ratios = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter(); a(); t1 = time.perf_counter(); b(); t2 = time.perf_counter()
        ta.append(t1 - t0); tb.append(t2 - t1); ratios.append((t1 - t0) / (t2 - t1))
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return med(ta), med(tb), med(ratios)


def run_speed(B: int = 32, T: int = 256, I: int = 64, H: int = 256, repeats: int = 7,
              quick: bool = False) -> list[Row]:
    """The speed table of the core issue: plain layers vs torch.nn, reference layer norm vs torch.nn."""
    if quick:
        B, T, I, H, repeats = 4, 32, 8, 16, 3
    torch.manual_seed(0)
    x = torch.randn(B, T, I)
    shape = f"B={B} T={T} I={I} H={H}"
    rows = []
    for kind in ("LSTM", "GRU"):
        ta, tb, r = _pair(_train_step(getattr(rnnkit, kind)(I, H, batch_first=True), x),
                          _train_step(getattr(torch.nn, kind)(I, H, batch_first=True), x), repeats)
        rows.append(Row(f"rnnkit.{kind} (auto) vs torch.nn.{kind}", shape, ta, tb, r, "<= 1.05", r <= 1.05))
    ln = rnnkit.LSTM(I, H, batch_first=True, layer_norm=True)
    ta, tb, r = _pair(_train_step(ln, x), _train_step(torch.nn.LSTM(I, H, batch_first=True), x), repeats)
    rows.append(Row("LayerNormLSTM (cell path) vs torch.nn.LSTM", shape, ta, tb, r,
                    "baseline for the kernels issue", None))
    return rows


def machine_description() -> str:
    """CPU model, core count and torch version, for the tables."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, Python {platform.python_version()}"


def format_table(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    lines = ["| row | shape | rnnkit s | alternative s | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "—" if r.met is None else ("yes" if r.met else "no")
        lines.append(f"| {r.name} | {r.shape} | {r.seconds_a:.4f} | {r.seconds_b:.4f} | {r.ratio:.2f}× | "
                     f"{r.target} | {met} |")
    return "\n".join(lines)


def to_json(rows: list[Row]) -> str:
    return json.dumps({"machine": machine_description(), "rows": [asdict(r) for r in rows]}, indent=2)
