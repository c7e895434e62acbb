#!/usr/bin/env python3
"""Training-step time of the PTB word model with the full softmax and with adaptive softmaxes, side
by side in one run (the model of ``benchmarks/quality/lm_ptb.py``: 2-layer LSTM 400, tied, 10k words,
32 streams x 70 words, Adam). Targets are real PTB text when ``RNNKIT_DATA`` has it (the share of
head words decides the cost), else a Zipf sample.

    RNNKIT_DATA=../shared/data python benchmarks/lm_softmax_speed.py [--json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from rnnkit.bench import machine_description, positive, run_script, strict_json
from rnnkit.errors import DataError
from rnnkit.models import LanguageModel, LanguageModelConfig


def batches(n: int, B: int = 32, T: int = 70):
    try:
        from rnnkit.data.registry import load_dataset
        from rnnkit.data.tokenizers import WordTokenizer
        text = load_dataset("ptb")["train"]
        ids = torch.tensor(WordTokenizer(eos_token="<eos>").fit(text).encode(text))
        source = "PTB train"
    except DataError as exc:  # no data set: Zipf-distributed ids in frequency order, said on stderr
        print(f"PTB not loaded ({exc}); timing a Zipf sample of ids instead", file=sys.stderr)
        p = 1.0 / torch.arange(1, 10_001, dtype=torch.float64)
        ids = torch.multinomial(p / p.sum(), 400_000, replacement=True, generator=torch.Generator().manual_seed(0))
        source = "Zipf sample"
    out = [(ids[i * B * T:(i + 1) * B * T].view(B, T), ids[i * B * T + 1:(i + 1) * B * T + 1].view(B, T))
           for i in range(n)]
    return out, source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=positive(int), default=12, help="timed training steps per round")
    ap.add_argument("--rounds", type=positive(int), default=3, help="alternating rounds; the median is reported")
    ap.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = ap.parse_args()
    data, source = batches(args.steps)
    variants = {"full softmax": (), "cutoffs 2000": (2000,), "cutoffs 1000,4000": (1000, 4000)}
    models = {}
    for name, cutoffs in variants.items():
        torch.manual_seed(0)
        m = LanguageModel(LanguageModelConfig(vocab_size=10_000, embedding_size=400, hidden_size=400, num_layers=2,
                                              tie_weights=True, input_dropout=0.3, hidden_dropout=0.3,
                                              output_dropout=0.3, softmax_cutoffs=cutoffs))
        models[name] = (m, torch.optim.Adam(m.parameters(), lr=2e-3))
    times = {name: [] for name in variants}
    for _ in range(args.rounds):  # alternate, so a change in the machine's load hits all alike
        for name, (m, opt) in models.items():
            m(*data[0]).loss.backward()  # warm-up
            start = time.perf_counter()
            for x, y in data:
                opt.zero_grad()
                m(x, y).loss.backward()
                opt.step()
            times[name].append((time.perf_counter() - start) / len(data))
    base = statistics.median(times["full softmax"])
    rows = {name: {"ms_per_step": round(1000 * statistics.median(t), 1),
                   "speedup": round(base / statistics.median(t), 2)} for name, t in times.items()}
    print(f"machine: {machine_description()}; targets: {source}")
    print("| output layer | ms per training step | speed-up |")
    print("|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['ms_per_step']} | {r['speedup']}× |")
    if args.json:
        print(strict_json({"machine": machine_description(), "targets": source, "rows": rows}))


if __name__ == "__main__":
    run_script(main)
