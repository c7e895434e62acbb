#!/usr/bin/env python3
"""Tiny Shakespeare with an *ensemble* of character-level models trained side by side in one
wall-clock budget on the same cores: ``--members N`` runs N copies of ``lm_shakespeare.py``
at once (seeds ``seed .. seed+N-1``), each on its share of the cores (``OMP_NUM_THREADS``), then
scores the ensemble, each character's probability the mean of the members' probabilities (each
member carries its own state: a ``rnnkit.LanguageModelEnsemble``).

Why: on 2 cores one model's small recurrent GEMMs (batch 32) do not keep both cores busy; two
one-thread trainings together make about 1.2x the steps of one two-thread training (measured: ~4,600 each
against ~7,500, docs/results.md), and averaging
two models' probabilities removes part of what each over-fits. The training wall time is the
budget, as for one model: the members train at the same time, not one after the other.

    RNNKIT_DATA=../shared/data python benchmarks/quality/lm_ensemble.py --members 2 --seconds 1800 --json \\
        --layer-norm --layers 3 --hidden 320 --lr 4e-3 --dropout 0.3 --input-dropout 0.1 \\
        --weight-decay 0.05 --seq-len 64

Every option this script does not know goes to ``lm_shakespeare.py`` (see its ``--help``).
``--bundles A B ...`` scores bundles saved earlier (``lm_shakespeare.py --save``) instead of training.
``--save DIR`` keeps the members and writes the ensemble as one bundle, ``DIR/ensemble``.

Prints one JSON line at the end (``--json``): the ensemble's ``val_loss`` (stateful) and
``val_loss_windowed``, ``train_seconds`` (the longest member's), ``params`` (all members), each
member's own figures and the configuration.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import torch

from rnnkit.bench import run_script, strict_json
from rnnkit.errors import RnnkitError

HERE = pathlib.Path(__file__).resolve().parent


def _shakespeare_script():
    """``lm_shakespeare.py`` as a module (its parser, checks and windowed loss)."""
    spec = importlib.util.spec_from_file_location("lm_shakespeare_script", HERE / "lm_shakespeare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--members", type=int, default=2, help="models trained at the same time (default 2)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads per member (default: torch's thread count here - the cores, or OMP_NUM_THREADS - "
                         "divided among the members, at least 1)")
    ap.add_argument("--bundles", nargs="+", metavar="BUNDLE", default=None,
                    help="score these saved language models as an ensemble instead of training")
    ap.add_argument("--save", default="", metavar="DIR",
                    help="keep the members as bundles DIR/member0, DIR/member1, ... and the ensemble as one bundle "
                         "DIR/ensemble (rnnkit evaluate / generate / complete take it); with --bundles, DIR/ensemble only")
    ap.add_argument("--seed", type=int, default=0, help="the first member's seed; member i takes seed + i")
    ap.add_argument("--json", action="store_true", help="print one JSON line at the end")
    return ap


def member_commands(args: argparse.Namespace, rest: list[str], save_root: pathlib.Path) -> list[list[str]]:
    """One ``lm_shakespeare.py`` command per member (its own seed and bundle folder)."""
    return [[sys.executable, str(HERE / "lm_shakespeare.py"), *rest, "--json", "--seed", str(args.seed + i),
             "--save", str(save_root / f"member{i}")] for i in range(args.members)]


def threads_per_member(args: argparse.Namespace) -> int:
    return args.threads or max(1, torch.get_num_threads() // args.members)


def train_members(commands: list[list[str]], threads: int) -> list[dict]:
    """Run the member commands at the same time; each one's JSON line (its own figures)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for cmd in commands]
    try:
        while None in [proc.poll() for proc in procs]:  # polls every member; one that fails stops the others
            failed = next((i for i, proc in enumerate(procs) if proc.returncode not in (None, 0)), None)
            if failed is not None:
                raise RnnkitError(f"ensemble member {failed} failed (exit status {procs[failed].returncode}); "
                                  f"its command: {' '.join(commands[failed])}")
            time.sleep(0.2)
        failed = next((i for i, proc in enumerate(procs) if proc.returncode != 0), None)
        if failed is not None:
            raise RnnkitError(f"ensemble member {failed} failed (exit status {procs[failed].returncode}); "
                              f"its command: {' '.join(commands[failed])}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    # members print two lines at the end (the trainer is quiet): the pipes never fill while they run
    return [json.loads(proc.stdout.read().strip().splitlines()[-1]) for proc in procs]


def score(ensemble, val_ids: torch.Tensor, windowed_loss) -> dict:
    from rnnkit.recipes.lm import stateful_loss
    return {"val_loss": round(stateful_loss(ensemble, val_ids, seq_len=256, batch_size=1), 4),
            "val_loss_windowed": round(windowed_loss(ensemble, val_ids), 4)}


def main() -> None:
    parser = build_parser()
    args, rest = parser.parse_known_args()
    shakespeare = _shakespeare_script()
    try:
        if args.members < 1 or args.threads < 0:
            raise ValueError(f"--members must be >= 1 and --threads >= 0, got {args.members} and {args.threads}")
        if args.bundles is None:
            member_args = shakespeare.build_parser().parse_args(rest)  # unknown options: argparse's own line
            with tempfile.TemporaryDirectory() as scratch:
                shakespeare.configs(member_args, 2, scratch)
            shakespeare.check_save_dir(args.save)
        elif rest:
            raise ValueError(f"--bundles scores saved models; these training options do not apply: {' '.join(rest)}")
        if args.save:
            shakespeare.check_save_dir(str(pathlib.Path(args.save) / "ensemble"))
    except (RnnkitError, ValueError) as exc:
        parser.error(str(exc))

    from rnnkit.models import LanguageModelEnsemble

    threads = threads_per_member(args)
    result: dict = {}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        if args.bundles is None:
            root = pathlib.Path(args.save) if args.save else pathlib.Path(scratch)
            members = train_members(member_commands(args, rest, root), threads)
            bundles = [root / f"member{i}" for i in range(args.members)]
            result.update(train_seconds=max(m["train_seconds"] for m in members),
                          wall_seconds=round(time.monotonic() - t0, 1),
                          members=[{k: m[k] for k in ("val_loss", "val_loss_windowed", "steps", "train_seconds",
                                                      "train_loss_last200")} | {"seed": m["config"]["seed"]}
                                   for m in members],
                          config={**members[0]["config"], "seed": args.seed, "save": args.save,
                                  "members": args.members, "threads_per_member": threads})
        else:
            bundles = [pathlib.Path(b) for b in args.bundles]
            result.update(config={"bundles": [str(b) for b in bundles]})
        try:  # refused in one line: a missing or corrupt bundle, a non-LM, members over other vocabularies
            ensemble = LanguageModelEnsemble.from_bundles(bundles)
        except RnnkitError as exc:
            parser.error(str(exc))
        ids = torch.tensor(ensemble.tokenizer.encode(shakespeare.load_dataset("tinyshakespeare", "val")))
        t_eval = time.monotonic()
        result.update(score(ensemble, ids, shakespeare.windowed_loss))
    result.update(eval_seconds=round(time.monotonic() - t_eval, 1), params=ensemble.num_parameters(),
                  torch_threads_eval=torch.get_num_threads())
    if args.save:
        ensemble.save(pathlib.Path(args.save) / "ensemble",
                      extra={"val_loss": result["val_loss"], "val_loss_windowed": result["val_loss_windowed"],
                             "members": [str(b) for b in bundles],
                             "data": {"dataset": "tinyshakespeare", "tokenizer": "char"}})
    print(f"tiny shakespeare, ensemble of {len(ensemble.members)}: stateful val loss {result['val_loss']:.4f}, "
          f"windowed {result['val_loss_windowed']:.4f}")
    if args.json:
        print(strict_json(result))


if __name__ == "__main__":
    run_script(main)
