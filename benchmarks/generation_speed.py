#!/usr/bin/env python3
"""Text generation speed (characters per second, batch 1, one token per forward call) of character
language models, measured side by side in one run, rounds interleaved:

* the layer-norm LSTM language model of the 30-minute Tiny Shakespeare rows (3 x 320, embedding 64,
  66 characters) as it runs by default: each one-token call is the C++ one-step path
  (:mod:`rnnkit.kernels.step`; since the twelfth session);
* the same model through the fused kernels at T=1 (the path before: emulated by switching the C++
  step off for its timings), with their prepared weights kept between calls, and preparing them on
  every call (before the eleventh session: emulated by dropping the kept weights before each call);
* an ensemble of two such models (``rnnkit.LanguageModelEnsemble``);
* a plain LSTM language model of the same shape, by default (the C++ step) and on torch's own kernels
  (the C++ step switched off).

The weights are random (the speed does not depend on them); nothing is read from disk.

    python benchmarks/generation_speed.py --json benchmarks/results/generation_speed_amd_s12.json
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from rnnkit.bench import machine_description, positive, run_script, write_json
from rnnkit.data.tokenizers import CharTokenizer
from rnnkit.kernels import step as one_step
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


@contextlib.contextmanager
def without_step():
    """Switch the C++ one-step path off: one-token calls run the layers' full forward (the fused kernels
    for layer norm, torch's kernels for a plain LSTM), as they did before it."""
    saved = one_step._step_module
    one_step._step_module = None
    try:
        yield
    finally:
        one_step._step_module = saved


def chars_per_second(model, n: int, step: bool = True) -> float:
    with contextlib.nullcontext() if step else without_step():
        t0 = time.perf_counter()
        model.generate("AB", n, seed=0)  # both in TEXT ("ab" fed b as <unk>)
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chars", type=int, default=300, help="characters generated per timing (default 300)")
    ap.add_argument("--rounds", type=positive(int), default=4, help="interleaved rounds (default 4)")
    ap.add_argument("--json", metavar="FILE", default="", help="write the figures to FILE")
    args = ap.parse_args()
    if args.chars < 1 or args.rounds < 1:
        ap.error(f"--chars and --rounds must be >= 1, got {args.chars} and {args.rounds}")
    every = build(True, 0)
    forget_each_call(every)
    plain = build(False, 0)
    models = {  # name: (model, whether the C++ one-step path is on)
        "layer-norm LSTM 3x320 (default: one-step C++ path)": (build(True, 0), True),
        "layer-norm LSTM 3x320, fused kernels, weights kept": (build(True, 0), False),
        "layer-norm LSTM 3x320, fused kernels, prepared every call": (every, False),
        "ensemble of two layer-norm LSTMs 3x320 (default)": (
            LanguageModelEnsemble([build(True, 0), build(True, 1)]), True),
        "plain LSTM 3x320 (default: one-step C++ path)": (plain, True),
        "plain LSTM 3x320, torch's kernels": (plain, False)}
    times: dict[str, list[float]] = {name: [] for name in models}
    for m, step in models.values():
        chars_per_second(m, 10, step)  # warm-up: the C++ build, the GEMM choice
    machine = machine_description()  # CPU, threads, torch, C++ loops and the load before the run
    for _ in range(args.rounds):
        for name, (m, step) in models.items():
            times[name].append(chars_per_second(m, args.chars, step))
    rows = {name: round(statistics.median(v), 1) for name, v in times.items()}
    names = list(rows)
    result = {"chars_per_second": rows,
              "step_over_fused_kept": round(rows[names[0]] / rows[names[1]], 2),
              "kept_over_every_call": round(rows[names[1]] / rows[names[2]], 2),
              "plain_step_over_torch": round(rows[names[4]] / rows[names[5]], 2),
              "chars": args.chars, "rounds": args.rounds, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": machine}
    for name, v in rows.items():
        print(f"{name:58s} {v:8.1f} chars/s")
    print(f"one-step C++ path: {result['step_over_fused_kept']}x the characters per second of the fused kernels "
          f"(kept weights); kept weights: {result['kept_over_every_call']}x preparing them each call; plain LSTM: "
          f"{result['plain_step_over_torch']}x torch's kernels")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    run_script(main)
