#!/usr/bin/env python3
"""Dynamic evaluation of a saved Tiny Shakespeare model (Krause et al. 2018), kept apart from the
plain figures: the model takes one SGD step on each 64-character segment of the validation text
after scoring it, so it adapts to the text it has read (every character is still scored before
the model sees it).

The learning rate and the decay towards the trained weights are chosen on the first 10,240
characters of the validation text only; the figures are reported on the rest of it (and, for
reference, on the whole of it), next to the plain stateful loss on the same characters.

    RNNKIT_DATA=../shared/data python benchmarks/quality/lm_shakespeare.py --seconds 600 ... --save m10
    RNNKIT_DATA=../shared/data python benchmarks/quality/lm_dynamic_eval.py m10 --json
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from rnnkit.bench import run_script, strict_json
from rnnkit.data.registry import load_dataset
from rnnkit.errors import RnnkitError
from rnnkit.export import load
from rnnkit.models import LanguageModel, LanguageModelEnsemble
from rnnkit.recipes.lm import dynamic_loss

SEQ = 64
TUNE = 160 * SEQ  # characters of the validation text the settings are chosen on (segment-aligned)
LRS = (0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
DECAYS = (0.0, 1e-3, 1e-2)


def rest(full: float, n_full: int, part: float, n_part: int) -> float:
    """The mean loss over the characters after the first ``n_part`` (the evaluation is sequential
    and the segments aligned, so the first part's sum is the same in both runs)."""
    return (full * n_full - part * n_part) / (n_full - n_part)


def choose_and_score(model: LanguageModel | LanguageModelEnsemble, ids: torch.Tensor, tune: int = TUNE, lrs=LRS, decays=DECAYS) -> dict:
    """Pick (lr, decay) on the first ``tune`` tokens (a multiple of the segment length), then score
    the plain and the dynamic loss on the rest and on the whole of ``ids``."""
    head, n = ids[: tune + 1], ids.numel() - 1
    grid = {}
    for lr, decay in itertools.product(lrs, decays):
        if lr == 0 and decay > 0:
            continue
        grid[(lr, decay)] = dynamic_loss(model, head, seq_len=SEQ, lr=lr, decay=decay)
        print(f"lr {lr:g} decay {decay:g}: loss {grid[(lr, decay)]:.4f} on the first {tune} tokens")
    lr, decay = min(grid, key=grid.get)
    static_head = grid[(0.0, 0.0)] if (0.0, 0.0) in grid else dynamic_loss(model, head, seq_len=SEQ, lr=0.0)
    static_full = dynamic_loss(model, ids, seq_len=SEQ, lr=0.0)
    dyn_full = dynamic_loss(model, ids, seq_len=SEQ, lr=lr, decay=decay)
    return {"lr": lr, "decay": decay, "tune_chars": tune, "rest_chars": n - tune,
            "val_loss_rest": round(rest(static_full, n, static_head, tune), 4),
            "val_loss_dynamic_rest": round(rest(dyn_full, n, grid[(lr, decay)], tune), 4),
            "val_loss": round(static_full, 4), "val_loss_dynamic": round(dyn_full, 4),
            "grid": {f"{k[0]:g}/{k[1]:g}": round(v, 4) for k, v in grid.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", help="a bundle saved by lm_shakespeare.py --save (or an ensemble bundle: "
                                   "lm_ensemble.py --save, rnnkit ensemble)")
    ap.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = ap.parse_args()
    try:
        model = load(args.bundle)
    except RnnkitError as exc:  # missing, corrupt or not a bundle: one line
        ap.error(str(exc))
    if not isinstance(model, (LanguageModel, LanguageModelEnsemble)):
        ap.error(f"{args.bundle} holds a {type(model).__name__}, not a language model")
    ids = torch.tensor(model.tokenizer.encode(load_dataset("tinyshakespeare", "val")))
    t0 = time.monotonic()
    result = choose_and_score(model, ids)
    result.update(seconds=round(time.monotonic() - t0, 1), torch_threads=torch.get_num_threads(),
                  params=sum(p.numel() for p in model.parameters()), config={"bundle": str(args.bundle)})
    n = ids.numel() - 1
    print(f"chosen lr {result['lr']:g}, decay {result['decay']:g}; on the last {n - TUNE} characters: stateful "
          f"{result['val_loss_rest']:.4f}, dynamic {result['val_loss_dynamic_rest']:.4f} "
          f"(whole validation text: {result['val_loss']:.4f} -> {result['val_loss_dynamic']:.4f})")
    if args.json:
        print(strict_json(result))


if __name__ == "__main__":
    run_script(main)
