#!/usr/bin/env python3
"""Penn Treebank, word level (Mikolov's version: 10k vocabulary, <eos> at line ends), standard splits,
trained for a fixed wall-clock budget; reports validation and test perplexity (state carried through
the whole text) and predictive-text figures on the test set.

    RNNKIT_DATA=../shared/data python benchmarks/quality/lm_ptb.py --seconds 3600 --json

Anchors: Zaremba et al. 2014 small LSTM 114.5 test perplexity, medium 82.7 (about 10x the compute);
AWD-LSTM 56.5 (52.5 with a cache pointer), on a GPU.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

from rnnkit.bench import positive, run_script, strict_json
from rnnkit.data.registry import load_dataset
from rnnkit.data.text import LMStream
from rnnkit.data.tokenizers import WordTokenizer
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.models.predictive import predictive_metrics
from rnnkit.recipes.lm import stateful_loss
from rnnkit.training import Trainer, TrainerConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=positive(float), default=3600.0, help="training wall-clock budget")
    ap.add_argument("--json", action="store_true", help="print one JSON line at the end")
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--hidden", type=int, default=400)
    ap.add_argument("--embedding", type=int, default=400)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.3, help="locked dropout: input, between layers, output")
    ap.add_argument("--embedding-dropout", type=float, default=0.05)
    ap.add_argument("--batch", type=positive(int), default=32)
    ap.add_argument("--seq-len", type=positive(int), default=70)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--cutoffs", default="1000,4000", help="adaptive softmax cluster bounds, e.g. 2000 or 2000,5000 "
                    "(ids are ordered by frequency; tying is kept); '' for the full softmax")
    ap.add_argument("--predictive-words", type=positive(int), default=20000, help="test words scored for predictive text")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:  # before the data and the hour of training
        cutoffs = tuple(int(c) for c in args.cutoffs.split(",") if c.strip())
    except ValueError:
        raise ValueError(f"--cutoffs: expected token ids such as 1000,4000, got {args.cutoffs!r}") from None
    torch.manual_seed(args.seed)
    splits = load_dataset("ptb")
    tok = WordTokenizer(eos_token="<eos>").fit(splits["train"])
    ids = {k: torch.tensor(tok.encode(v)) for k, v in splits.items()}
    cfg = LanguageModelConfig(vocab_size=tok.vocab_size, cell=args.cell, embedding_size=args.embedding,
                              hidden_size=args.hidden, num_layers=args.layers, tie_weights=True,
                              embedding_dropout=args.embedding_dropout, input_dropout=args.dropout,
                              hidden_dropout=args.dropout, output_dropout=args.dropout,
                              softmax_cutoffs=cutoffs)
    model = LanguageModel(cfg, tokenizer=tok)
    curve = []

    class Curve:
        def on_eval_end(self, trainer, metrics):
            curve.append({"step": trainer.state.step, "seconds": round(trainer.state.elapsed, 1),
                          "val_ppl": round(math.exp(metrics["val_loss"]), 2)})

    with tempfile.TemporaryDirectory() as run_dir:
        tcfg = TrainerConfig(run_dir=run_dir, name="ptb", max_time=args.seconds, lr=args.lr, schedule="cosine",
                             warmup_steps=50, min_lr=args.lr / 20, max_grad_norm=0.5, seed=args.seed,
                             quiet=True, checkpoint=False, tensorboard=False, plots=False,
                             eval_every=max(1, int(len(LMStream(ids["train"], args.batch, args.seq_len)) / 2)))
        start = time.monotonic()
        state = Trainer(model, tcfg, callbacks=[Curve()]).fit(
            LMStream(ids["train"], args.batch, args.seq_len), LMStream(ids["val"], 10, args.seq_len))
        train_seconds = time.monotonic() - start
    val, test = (stateful_loss(model, ids[s], seq_len=256, batch_size=1) for s in ("val", "test"))
    pred = predictive_metrics(model, splits["test"], k=3, max_words=args.predictive_words)
    result = {"val_ppl": round(math.exp(val), 2), "test_ppl": round(math.exp(test), 2),
              "val_loss": round(val, 4), "test_loss": round(test, 4), "top1": round(pred.top1, 4),
              "top3": round(pred.topk, 4), "keystroke_savings": round(pred.keystroke_savings, 4),
              "predictive_words": pred.words, "train_seconds": round(train_seconds, 1), "steps": state.step,
              "epochs": round(state.tokens / ids["train"].numel(), 2) if state.tokens else None,
              "params": model.num_parameters(), "curve": curve, "config": vars(args)}
    print(f"PTB: test perplexity {result['test_ppl']}, valid {result['val_ppl']} after {train_seconds:.0f} s; "
          f"predictive text on test: top-1 {pred.top1:.3f}, top-3 {pred.topk:.3f}, keystroke savings "
          f"{pred.keystroke_savings:.3f}")
    if args.json:
        print(strict_json(result))


if __name__ == "__main__":
    run_script(main)
