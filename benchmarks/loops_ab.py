#!/usr/bin/env python3
"""The fused LSTM kernel's step loops in C++ against its Python step loops (``RNNKIT_CPP=0``) and
against ``torch.nn.LSTM``, side by side in one process: training steps (forward + backward) of the
layers that run them, in interleaved rounds, medians of the per-round times and ratios. The script
sets ``RNNKIT_CPP`` itself for each column; with it at 0, zoneout's masks are drawn by ``bernoulli_``
instead of the C++ generator too, so the zoneout rows compare masks and loops together.

    python benchmarks/loops_ab.py [--json OUT] [--rounds 8] [--batch 32 --steps 256 --input 64 --hidden 256]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import rnnkit
from rnnkit.bench import _train_step, machine_description, positive, run_script, write_json

LAYERS = {
    "LSTM(peephole=True)": dict(peephole=True),
    "LSTM(zoneout=0.1)": dict(zoneout=0.1),
    "LSTM(recurrent_dropout=0.25)": dict(recurrent_dropout=0.25),
    "LSTM(layer_norm=True)": dict(layer_norm=True),
    "LSTM(layer_norm=True, zoneout=0.1)": dict(layer_norm=True, zoneout=0.1),
}


def _timed(step, mode: str | None) -> float:
    if mode is not None:
        os.environ["RNNKIT_CPP"] = mode
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def measure(B: int, T: int, I: int, H: int, rounds: int, layers=LAYERS) -> list[dict]:
    """One row per layer: median ms of the C++ loops, the Python loops and torch.nn.LSTM, and the
    medians of the per-round ratios."""
    saved = os.environ.get("RNNKIT_CPP")
    torch.manual_seed(0)
    x = torch.randn(B, T, I)
    ref = _train_step(torch.nn.LSTM(I, H, batch_first=True), x)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    rows = []
    try:
        for name, kw in layers.items():
            step = _train_step(rnnkit.LSTM(I, H, batch_first=True, **kw).train(), x)
            _timed(step, "auto"), _timed(step, "0"), _timed(ref, None)  # warm-up (and the C++ build)
            cpp, py, nn = [], [], []
            for _ in range(rounds):
                cpp.append(_timed(step, "auto"))
                py.append(_timed(step, "0"))
                nn.append(_timed(ref, None))
            rows.append({"layer": name, "cpp_ms": round(med(cpp) * 1e3, 2), "python_ms": round(med(py) * 1e3, 2),
                         "torch_nn_lstm_ms": round(med(nn) * 1e3, 2),
                         "cpp_over_python": round(med([c / p for c, p in zip(cpp, py)]), 3),
                         "cpp_over_torch": round(med([c / n for c, n in zip(cpp, nn)]), 3),
                         "python_over_torch": round(med([p / n for p, n in zip(py, nn)]), 3)})
    finally:
        if saved is None:
            os.environ.pop("RNNKIT_CPP", None)
        else:
            os.environ["RNNKIT_CPP"] = saved
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="", metavar="OUT", help="also write the rows and the machine to OUT")
    ap.add_argument("--rounds", type=positive(int), default=8)
    ap.add_argument("--batch", type=positive(int), default=32)
    ap.add_argument("--steps", type=positive(int), default=256)
    ap.add_argument("--input", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    args = ap.parse_args()
    if min(args.rounds, args.batch, args.steps, args.input, args.hidden) < 1:
        ap.error("--rounds, --batch, --steps, --input and --hidden must be positive integers")
    rows = measure(args.batch, args.steps, args.input, args.hidden, args.rounds)
    saved = os.environ.get("RNNKIT_CPP")
    os.environ["RNNKIT_CPP"] = "auto"  # the C++ column's setting (a user's RNNKIT_CPP=0 said "off")
    try:
        machine = machine_description()
    finally:
        if saved is None:
            os.environ.pop("RNNKIT_CPP", None)
        else:
            os.environ["RNNKIT_CPP"] = saved
    print(machine)
    print(f"{'layer':38} {'C++ ms':>8} {'Python ms':>10} {'nn.LSTM ms':>11} {'C++/Py':>7} {'C++/nn':>7} {'Py/nn':>6}")
    for r in rows:
        print(f"{r['layer']:38} {r['cpp_ms']:8.1f} {r['python_ms']:10.1f} {r['torch_nn_lstm_ms']:11.1f} "
              f"{r['cpp_over_python']:7.2f} {r['cpp_over_torch']:7.2f} {r['python_over_torch']:6.2f}")
    if args.json:
        write_json(args.json, {"machine": machine, "shape": vars(args), "rows": rows})


if __name__ == "__main__":
    run_script(main)
