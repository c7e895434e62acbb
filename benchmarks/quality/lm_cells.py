#!/usr/bin/env python3
"""LSTM vs GRU vs MinGRU vs MinLSTM vs LayerNormLSTM on Tiny Shakespeare with the same wall-clock
budget each (one after the other, so each has the machine to itself), as one table.

    RNNKIT_DATA=../shared/data python benchmarks/quality/lm_cells.py --seconds 600 --json

Runs ``lm_shakespeare.py`` once per cell with the same size options and prints a Markdown table
and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

from rnnkit.bench import positive, run_script, strict_json
from rnnkit.errors import ConfigError

CELLS = {"LSTM": ["--cell", "lstm"], "GRU": ["--cell", "gru"], "MinGRU": ["--cell", "mingru"],
         "MinLSTM": ["--cell", "minlstm"], "LayerNormLSTM": ["--cell", "lstm", "--layer-norm"],
         # one MinGRU/MinLSTM layer has no recurrent weights and few parameters (67k against the
         # LSTM's 519k at H=320): stacks of about the LSTM's size, as their paper uses them
         "MinGRU-3x384": ["--cell", "mingru", "--layers", "3", "--hidden", "384"],
         "MinLSTM-2x384": ["--cell", "minlstm", "--layers", "2", "--hidden", "384"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=positive(float), default=600.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated subset of " + ",".join(CELLS))
    ap.add_argument("extra", nargs="*", help="more options for lm_shakespeare.py (after --)")
    args = ap.parse_args()
    script = pathlib.Path(__file__).with_name("lm_shakespeare.py")
    names = [n.strip() for n in args.cells.split(",") if n.strip()]
    unknown = [n for n in names if n not in CELLS]
    if unknown or not names:  # before the first run, not after it
        raise ConfigError(f"--cells: unknown cell {unknown[0] if unknown else '(none)'!r}; expected some of "
                          f"{', '.join(CELLS)}")
    rows = {}
    for name in names:
        cmd = [sys.executable, str(script), "--seconds", str(args.seconds), "--json", *CELLS[name], *args.extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:  # the run's own message, not only CalledProcessError's exit status
            why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise ConfigError(f"{name}: lm_shakespeare.py failed (exit {proc.returncode}): {why}")
        rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name}: {rows[name]['val_loss']}", file=sys.stderr)
    print("| cell | stateful val loss | windowed val loss | train loss (last 200 steps) | steps | parameters |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['val_loss']:.4f} | {r['val_loss_windowed']:.4f} | {r['train_loss_last200']} "
              f"| {r['steps']} | {r['params']:,} |")
    if args.json:
        print(strict_json({"seconds": args.seconds, "rows": rows}))


if __name__ == "__main__":
    run_script(main)
