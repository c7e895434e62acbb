#!/usr/bin/env python3
"""Text generation speed (characters per second, batch 1, one token per forward call) of character
language models, measured side by side in one run, rounds interleaved:

* the layer-norm LSTM language model of the 30-minute Tiny Shakespeare rows (3 x 320, embedding 64,
  66 characters), with the fused kernels' prepared weights kept between calls (the default), and
  the same model preparing them on every call (what every call paid before they were kept:
  ``--no-keep`` style, emulated by dropping the kept weights before each call);
* an ensemble of two such models (``rnnkit.LanguageModelEnsemble``);
* a plain LSTM language model of the same shape, which runs on torch's own kernels, for reference.

The weights are random (the speed does not depend on them); nothing is read from disk.

    python benchmarks/generation_speed.py --json benchmarks/results/generation_speed_xeon_s11.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from rnnkit.data.tokenizers import CharTokenizer
from rnnkit.models import LanguageModel, LanguageModelConfig, LanguageModelEnsemble

TEXT = "".join(chr(c) for c in range(32, 98))  # 66 characters, as Tiny Shakespeare's vocabulary


def build(layer_norm: bool, seed: int) -> LanguageModel:
    torch.manual_seed(seed)
    tok = CharTokenizer().fit(TEXT)
    cfg = LanguageModelConfig(vocab_size=tok.vocab_size, embedding_size=64, hidden_size=320, num_layers=3,
                              layer_norm=layer_norm)
    return LanguageModel(cfg, tokenizer=tok).eval()


def _drop_kept(layer, args) -> None:
    for cell in layer._cells:
        cell.__dict__.pop("_rnnkit_prepared", None)


def forget_each_call(model) -> None:
    """Drop the kept weights before every layer call: every call prepares them again."""
    for module in model.modules():
        if hasattr(module, "_cells"):
            module.register_forward_pre_hook(_drop_kept)


def chars_per_second(model, n: int) -> float:
    t0 = time.perf_counter()
    model.generate("ab", n, seed=0)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chars", type=int, default=300, help="characters generated per timing (default 300)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    ap.add_argument("--json", metavar="FILE", default="", help="write the figures to FILE")
    args = ap.parse_args()
    if args.chars < 1 or args.rounds < 1:
        ap.error(f"--chars and --rounds must be >= 1, got {args.chars} and {args.rounds}")
    kept, every = build(True, 0), build(True, 0)
    forget_each_call(every)
    models = {"layer-norm LSTM 3x320, weights kept": kept,
              "layer-norm LSTM 3x320, prepared every call": every,
              "ensemble of two layer-norm LSTMs 3x320": LanguageModelEnsemble([build(True, 0), build(True, 1)]),
              "plain LSTM 3x320 (torch's kernels)": build(False, 0)}
    times: dict[str, list[float]] = {name: [] for name in models}
    for m in models.values():
        chars_per_second(m, 10)  # warm-up: the C++ build, the GEMM choice
    for _ in range(args.rounds):
        for name, m in models.items():
            times[name].append(chars_per_second(m, args.chars))
    rows = {name: round(statistics.median(v), 1) for name, v in times.items()}
    names = list(rows)
    result = {"chars_per_second": rows,
              "kept_over_every_call": round(rows[names[0]] / rows[names[1]], 2),
              "chars": args.chars, "rounds": args.rounds, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    for name, v in rows.items():
        print(f"{name:48s} {v:8.1f} chars/s")
    print(f"kept weights: {result['kept_over_every_call']}x the characters per second of preparing them each call")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
