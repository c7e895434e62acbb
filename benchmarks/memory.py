#!/usr/bin/env python3
"""Long-range memory table: the longest dependency each recurrence (and a small Transformer) learns in a
fixed CPU wall-clock budget per (task, model, length) cell. See rnnkit.analysis.memory for the rules.

    python benchmarks/memory.py --budget 300 --threads 2 --json benchmarks/results/memory.json
    python benchmarks/memory.py --tasks adding --models rnn,lstm,gru --lengths 100,200 --budget 60
    python benchmarks/memory.py --quick        # seconds: checks that every task and model runs

It prints one line per cell as it finishes, then the Markdown tables, and writes the JSON (and the
tables beside it as .md).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
import time

import torch

from rnnkit.analysis.memory import MODELS, TASKS, format_memory_tables, run_memory_suite, write_report
from rnnkit.bench import machine_description


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", help=f"comma-separated, default all: {','.join(TASKS)}")
    ap.add_argument("--models", help=f"comma-separated, default all: {','.join(MODELS)}")
    ap.add_argument("--lengths", help="comma-separated lengths for the length-swept tasks (default per task)")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of wall clock per cell (default 60)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="count the budget in wall-clock seconds (default) or this process's CPU seconds "
                         "(fairer on a machine shared with other jobs)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=pathlib.Path, default=None, help="write results here (and tables as .md)")
    ap.add_argument("--quick", action="store_true", help="1 s per cell at the shortest lengths")
    args = ap.parse_args(argv)
    lengths = [int(n) for n in args.lengths.split(",")] if args.lengths else None
    budget = 1.0 if args.quick else args.budget
    if args.quick and lengths is None:
        lengths = {name: task.lengths[:1] for name, task in TASKS.items()}
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()

    def progress(r) -> None:
        print(f"{r.task:15s} {r.model:12s} T={r.length:<5d} {r.metric} {r.value:.4g} "
              f"{'solved' if r.solved else 'not solved'} ({r.steps} steps, {r.seconds:.0f} s)", flush=True)

    results = run_memory_suite(_names(args.tasks), _names(args.models), lengths, budget,
                               seed=args.seed, threads=args.threads, progress=progress, clock=args.clock)
    print(f"\nmachine: {machine_description()}; budget {budget:g} {args.clock} s per cell; "
          f"total {time.perf_counter() - start:.0f} s\n")
    print(format_memory_tables(results))
    if args.json:
        threads = torch.get_num_threads() if args.threads is None else args.threads
        meta = dict(machine=machine_description(), budget=budget, clock=args.clock, seed=args.seed, threads=threads,
                    command=" ".join(sys.argv))
        write_report(results, args.json, args.json.with_suffix(".md"), meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
