#!/usr/bin/env python3
"""Long-range memory table: the longest dependency each recurrence (and a small Transformer) learns in a
fixed budget per (task, model, length) cell; the same as ``rnnkit bench memory``. See
rnnkit.analysis.memory for the rules, and ``--help`` for the options.

    python benchmarks/memory.py --budget 300 --threads 2 --json benchmarks/results/memory.json
    python benchmarks/memory.py --tasks adding --models rnn,lstm,gru --lengths 100,200 --budget 60
    python benchmarks/memory.py --quick        # seconds: checks that every task and model runs
"""

from __future__ import annotations

import sys

from rnnkit.analysis.memory import main

if __name__ == "__main__":
    sys.exit(main(prog="python benchmarks/memory.py"))
