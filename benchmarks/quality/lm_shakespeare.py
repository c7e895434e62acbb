#!/usr/bin/env python3
"""Tiny Shakespeare, character level, nanoGPT's split (first 90% train, last 10% validation), trained
for a fixed wall-clock budget on this machine. Reports the validation loss two ways:

* ``val_loss`` (stateful): the whole validation text in order with the state carried, the natural
  measure for a recurrent model;
* ``val_loss_windowed``: random 256-character windows each from a zero state, as nanoGPT evaluates.

    RNNKIT_DATA=../shared/data python benchmarks/quality/lm_shakespeare.py --seconds 97 --json

The defaults (one-layer LSTM, H=320, embedding 64, lr 5e-3 with a cosine decay over the budget,
32 streams of 32 characters; 64 until the slower day in docs/results.md) were chosen for the 97 s budget
on 2 CPU cores; docs/results.md has
the runs that chose them.

Prints one JSON line at the end (``--json``) with the losses, ``train_seconds``, ``params`` and the
configuration used.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import tempfile
import time

import torch

from rnnkit.bench import positive, run_script, strict_json
from rnnkit.data.registry import load_dataset
from rnnkit.data.tokenizers import CharTokenizer
from rnnkit.errors import ConfigError
from rnnkit.data.text import LMStream
from rnnkit.models import LanguageModel, LanguageModelConfig, LanguageModelEnsemble
from rnnkit.recipes.lm import stateful_loss
from rnnkit.training import Trainer, TrainerConfig


@torch.no_grad()
def windowed_loss(model, ids: torch.Tensor, n: int = 200, length: int = 256, seed: int = 0) -> float:
    """Mean loss over ``n`` random windows, each from a zero state (nanoGPT's estimate). ``model``
    may be a list of models or a ``LanguageModelEnsemble``, scored as an ensemble (the mean of their
    probabilities)."""
    if isinstance(model, (list, tuple)):
        model = LanguageModelEnsemble(model)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - length - 1, (n,), generator=gen)
    x = torch.stack([ids[s:s + length] for s in starts])
    y = torch.stack([ids[s + 1:s + length + 1] for s in starts])
    return sum(float(model(x[i:i + 50], y[i:i + 50]).loss) for i in range(0, n, 50)) / math.ceil(n / 50)


class _RecentLoss:
    """Mean training loss over the last ``n`` steps (to tell under- from over-fitting)."""

    def __init__(self, n: int = 200) -> None:
        self.n, self.losses = n, []

    def on_step_end(self, trainer, metrics) -> None:
        self.losses = (self.losses + [float(metrics["loss"])])[-self.n:]

    @property
    def value(self) -> float | None:
        return round(sum(self.losses) / len(self.losses), 4) if self.losses else None


class _WeightAverage:
    """An exponential moving average of the parameters, updated after every step (Polyak averaging,
    as AWD-LSTM's averaged SGD); ``swap()`` exchanges the model's weights with the average."""

    def __init__(self, decay: float) -> None:
        self.decay, self.avg = decay, None

    def on_step_end(self, trainer, metrics) -> None:
        params = [p.detach() for p in trainer.model.parameters()]
        if self.avg is None:
            self.avg = [p.clone() for p in params]
        else:
            torch._foreach_lerp_(self.avg, params, 1.0 - self.decay)

    @torch.no_grad()
    def swap(self, model) -> None:
        for p, a in zip(model.parameters(), self.avg):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=positive(float), default=97.0, help="training wall-clock budget")
    ap.add_argument("--json", action="store_true", help="print one JSON line at the end")
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--layer-norm", action="store_true")
    ap.add_argument("--hidden", type=int, default=320)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--embedding", type=int, default=64)
    ap.add_argument("--batch", type=positive(int), default=32)
    ap.add_argument("--seq-len", type=positive(int), default=32)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--dropout", type=float, default=0.0,
                    help="locked (variational) dropout on the outputs and, with --layers > 1, between layers")
    ap.add_argument("--input-dropout", type=float, default=0.0, help="locked dropout on the embeddings")
    ap.add_argument("--weight-drop", type=float, default=0.0,
                    help="DropConnect on the recurrent matrices (AWD-LSTM's weight drop), one mask per batch")
    ap.add_argument("--recurrent-dropout", type=float, default=0.0,
                    help="dropout on the recurrent state h_{t-1} before W_hh, one mask per sequence (Gal & "
                         "Ghahramani)")
    ap.add_argument("--zoneout", type=float, default=0.0,
                    help="zoneout: each unit of h and c keeps its previous value with this probability at "
                         "every step (Krueger et al.)")
    ap.add_argument("--zoneout-cell", type=float, default=None,
                    help="the LSTM's cell state c gets this zoneout rate instead, --zoneout then acting on h "
                         "only (Krueger et al.: 0.05 for h, 0.5 for c)")
    ap.add_argument("--weight-decay", type=float, default=0.0,
                    help="decoupled weight decay of the weight matrices (AdamW instead of Adam when > 0)")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="also evaluate an exponential moving average of the weights with this decay "
                         "(e.g. 0.999; reported as val_loss_ema and val_loss_windowed_ema)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default="", metavar="DIR",
                    help="save the trained model as a bundle in DIR (for rnnkit generate/complete or a later "
                         "evaluation)")
    return ap


def check_save_dir(path: str) -> None:
    """``--save`` must name a new or empty folder or an earlier bundle (checked before training, not
    after it)."""
    from rnnkit.export.bundle import _looks_like_bundle

    folder = pathlib.Path(path) if path else None
    if folder is None or not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"--save: expected a folder path, got an existing file {folder}")
    if any(folder.iterdir()) and not _looks_like_bundle(folder):
        raise ValueError(f"--save: {folder} exists and is not an rnnkit bundle; expected a new or empty folder")


def configs(args: argparse.Namespace, vocab_size: int, run_dir: str) -> tuple[LanguageModelConfig, TrainerConfig]:
    """The model and trainer configurations of a run (each validates its values: bad options fail here)."""
    if not 0.0 <= args.ema < 1.0:
        raise ValueError(f"ema must be a decay in [0, 1) (0: no averaging), got {args.ema}")
    cfg = LanguageModelConfig(vocab_size=vocab_size, cell=args.cell, embedding_size=args.embedding,
                              hidden_size=args.hidden, num_layers=args.layers, layer_norm=args.layer_norm,
                              output_dropout=args.dropout, input_dropout=args.input_dropout,
                              hidden_dropout=args.dropout if args.layers > 1 else 0.0,
                              weight_drop=args.weight_drop, recurrent_dropout=args.recurrent_dropout,
                              zoneout=args.zoneout, zoneout_cell=args.zoneout_cell)
    # cosine decay of the learning rate over the wall-clock budget, after a short warm-up
    tcfg = TrainerConfig(run_dir=run_dir, name="shakespeare", max_time=args.seconds, lr=args.lr,
                         schedule="cosine", warmup_steps=20, min_lr=args.lr / 20, max_grad_norm=1.0,
                         optimizer="adamw" if args.weight_decay > 0 else "adam",
                         weight_decay=args.weight_decay,
                         seed=args.seed, quiet=True, checkpoint=False, tensorboard=False, plots=False,
                         log_every=50)
    return cfg, tcfg


def _averaged(model, average: _WeightAverage, val_ids: torch.Tensor) -> dict:
    """Both validation losses with the averaged weights (the model keeps its own weights after)."""
    average.swap(model)
    out = {"val_loss_ema": round(stateful_loss(model, val_ids, seq_len=256, batch_size=1), 4),
           "val_loss_windowed_ema": round(windowed_loss(model, val_ids), 4)}
    average.swap(model)
    return out


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    try:  # bad option values: one line (argparse's usage + error), before any data is read
        with tempfile.TemporaryDirectory() as scratch:
            configs(args, 2, scratch)
        check_save_dir(args.save)
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    torch.manual_seed(args.seed)
    splits = load_dataset("tinyshakespeare")
    tok = CharTokenizer().fit(splits["train"])
    train_ids, val_ids = tok.encode(splits["train"]), torch.tensor(tok.encode(splits["val"]))
    with tempfile.TemporaryDirectory() as run_dir:
        cfg, tcfg = configs(args, tok.vocab_size, run_dir)
        model = LanguageModel(cfg, tokenizer=tok)
        start = time.monotonic()
        recent = _RecentLoss()
        average = _WeightAverage(args.ema) if args.ema > 0 else None
        state = Trainer(model, tcfg, callbacks=[recent] + ([average] if average else [])).fit(
            LMStream(train_ids, args.batch, args.seq_len))
        train_seconds = time.monotonic() - start
    if args.save:
        model.save(args.save, extra={"val_text": "tinyshakespeare last 10%", "config": vars(args),
                                     "data": {"dataset": "tinyshakespeare", "tokenizer": "char"}})
    t_eval = time.monotonic()
    val = stateful_loss(model, val_ids, seq_len=256, batch_size=1)
    windowed = windowed_loss(model, val_ids)
    result = {"val_loss": round(val, 4), "val_loss_windowed": round(windowed, 4),
              "train_loss_last200": recent.value,
              "train_seconds": round(train_seconds, 1), "eval_seconds": round(time.monotonic() - t_eval, 1),
              **(_averaged(model, average, val_ids) if average is not None and average.avg is not None else {}),
              "steps": state.step, "params": model.num_parameters(), "config": vars(args),
              "torch_threads": torch.get_num_threads()}
    print(f"tiny shakespeare: stateful val loss {val:.4f}, windowed {windowed:.4f} after "
          f"{train_seconds:.0f} s ({state.step} steps, {model.num_parameters():,} parameters)")
    if args.json:
        print(strict_json(result))


if __name__ == "__main__":
    run_script(main)
