#!/usr/bin/env python3
"""Speed table: rnnkit layers vs torch.nn, forward+backward, measured side by side in one run.

    python benchmarks/speed.py [--json benchmarks/results/speed.json] [--quick]
"""

from __future__ import annotations

import argparse
import pathlib

from rnnkit.bench import format_table, machine_description, run_speed, to_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=pathlib.Path, default=None, help="write the rows as JSON here")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, to check the script runs")
    args = ap.parse_args()
    rows = run_speed(quick=args.quick)
    print(f"machine: {machine_description()}")
    print(format_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(to_json(rows) + "\n")


if __name__ == "__main__":
    main()
