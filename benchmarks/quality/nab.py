"""NAB (realKnownCause) anomaly windows: recall, precision, F1, delay and NAB's standard score.

Protocol: for each series the AnomalyDetector is fitted on NAB's probationary rows only (the
first min(15%, 750) rows), then detects windows on the whole series; detections and labelled
windows are scored after the probationary period. NAB's standard-profile score counts the first
row of each detected window as the detection (see rnnkit.models.anomaly_metrics) with the
detector's own threshold (NAB's threshold sweep is not run).

    RNNKIT_DATA=/work/shared/data python benchmarks/quality/nab.py [--json] [--methods forecast,reconstruction]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd

from rnnkit.bench import positive, run_script, strict_json
from rnnkit.data.registry import load_dataset
from rnnkit.models.anomaly import AnomalyDetector
from rnnkit.models.anomaly_metrics import nab_normalized, nab_raw_score, window_metrics


def probation(n: int) -> int:
    return int(min(math.floor(0.15 * n), 0.15 * 5000))


def evaluate(name: str, item, method: str, options: dict) -> dict:
    y = item.data["value"]
    cut = probation(len(y))
    start = time.perf_counter()
    det = AnomalyDetector(method=method, **options).fit(y.iloc[:cut])
    windows = [w for w in det.detect(y) if w.end >= y.index[cut]]
    seconds = time.perf_counter() - start
    labelled = [w for w in item.windows if w[1] >= y.index[cut]]
    row = {"series": name, "method": method, "rows": len(y), "seconds": round(seconds, 1),
           **window_metrics(windows, labelled, unit=pd.Timedelta("1h"))}
    flags = np.zeros(len(y), dtype=bool)
    position = {t: i for i, t in reversed(list(enumerate(y.index)))}  # first row of each time
    for w in windows:
        flags[position[w.start]] = True
    nab = nab_raw_score(list(y.index), flags, item.windows)
    row.update(nab_raw=nab["raw"], nab_windows=nab["windows"], nab_fp=nab["fp"],
               nab=nab_normalized([nab["raw"]], [nab["windows"]]))
    return row


def table(rows: list[dict]) -> str:
    head = "| series | method | windows | detected | recall | precision | F1 | delay (h) | NAB std | fit+detect (s) |"
    lines = [head, "|" + "---|" * 10]
    fmt = lambda v: "–" if v != v else f"{v:.2f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['series']} | {r['method']} | {r['windows']} | {r['detected']} | {fmt(r['recall'])} | "
                     f"{fmt(r['precision'])} | {fmt(r['f1'])} | {fmt(r['delay'])} | {r['nab']:.1f} | {r['seconds']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line after the table")
    parser.add_argument("--methods", default="forecast,reconstruction", help="comma-separated: forecast, reconstruction")
    parser.add_argument("--window", type=positive(int), default=48)
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in ("forecast", "reconstruction")] or ([] if methods else ["(none)"])
    if bad:  # before the runs, not after the first method's
        raise ValueError(f"--methods: expected forecast and/or reconstruction, got {bad[0]!r}")
    data = load_dataset("nab")
    options = {"window": args.window}
    t0, rows = time.perf_counter(), []
    for method in methods:
        for name, item in data.items():
            rows.append(evaluate(name, item, method, options))
    print(table(rows))
    summary = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        found, total = sum(r["found"] for r in mine), sum(r["windows"] for r in mine)
        correct = sum(r["precision"] * r["detected"] for r in mine if r["detected"])
        detected = sum(r["detected"] for r in mine)
        p, rcl = (correct / detected if detected else float("nan")), found / total
        summary[method] = {"recall": rcl, "precision": p, "f1": 2 * p * rcl / (p + rcl) if p + rcl else 0.0,
                           "nab": nab_normalized([r["nab_raw"] for r in mine], [r["nab_windows"] for r in mine])}
        print(f"\n{method}: pooled recall {rcl:.2f}, precision {p:.2f}, F1 {summary[method]['f1']:.2f}, "
              f"NAB standard score {summary[method]['nab']:.1f}")
    wall = time.perf_counter() - t0
    print(f"\nwall time {wall:.0f} s")
    if args.json:
        print(strict_json({"benchmark": "nab", "wall_s": round(wall, 1), "summary": summary,
                          "rows": rows}, default=float))


if __name__ == "__main__":
    run_script(main)
