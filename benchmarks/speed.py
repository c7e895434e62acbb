#!/usr/bin/env python3
"""Speed table of the kernels issue: rnnkit layers vs torch.nn, measured side by side in one run.

    python benchmarks/speed.py [--json benchmarks/results/speed.json] [--quick] [--repeats N]

Every row times its two contenders in turn and reports the median of the pair ratios
``time(rnnkit) / time(alternative)`` (robust to a shared machine's drift). See docs/performance.md.
"""

from __future__ import annotations

import argparse
import pathlib

from rnnkit.bench import format_table, json_path, machine_description, positive, run_script, run_speed, to_json, \
    write_json
from rnnkit.kernels import _cpp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=pathlib.Path, default=None, help="write the rows as JSON here")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, to check the script runs")
    ap.add_argument("--repeats", type=positive(int), default=7,
                    help="timed pairs per row (median of their ratios); --quick uses 3, the MinGRU/MinLSTM "
                    "rows 3 and the informational rows max(3, repeats // 2)")
    args = ap.parse_args()
    if args.json:
        args.json = json_path(args.json)  # checked before the run
    _cpp.ops()  # build or load the optional C++ loops first, so the description says whether they run
    machine = machine_description()  # the load before the run
    rows = run_speed(repeats=args.repeats, quick=args.quick)
    print(f"machine: {machine}")
    print(format_table(rows))
    if args.json:
        write_json(args.json, to_json(rows, machine))


if __name__ == "__main__":
    run_script(main)
