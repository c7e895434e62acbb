"""Evaluation of anomaly windows against labelled windows, and NAB's scoring.

**Window metrics.** A labelled window counts as found when a detected window overlaps it;
a detected window is correct when it overlaps a labelled one:

.. math::

    \\mathrm{recall} = \\frac{\\#\\,\\text{labelled windows found}}{\\#\\,\\text{labelled windows}},\\quad
    \\mathrm{precision} = \\frac{\\#\\,\\text{detections overlapping a label}}{\\#\\,\\text{detections}},\\quad
    F_1 = \\frac{2PR}{P + R}

and the *delay* of a found window is the time from its start to the start of the first
detection that overlaps it (0 when the detection began earlier).

**NAB score** (Lavin & Ahmad 2015, the scoring rules of the NAB repository, re-implemented here
from their description). Each data point after the probationary period (the first
:math:`\\min(\\lfloor 0.15 n \\rfloor, 750)` rows) that is a detection is weighted by the scaled
sigmoid :math:`\\sigma(x) = 2/(1 + e^{5x}) - 1` (and :math:`-1` for :math:`x \\ge 3`) of its
position: inside a window of width :math:`w` ending at row :math:`r`, :math:`x = -(r - i + 1)/w`
and the point scores :math:`A_{TP}\\,\\sigma(x)/\\sigma(-1)`, only the best point of each window
counting; outside a window, :math:`x = |r_{prev} - i| / (w_{prev} - 1)` after the previous
window (:math:`x = 3` before any) and the point scores :math:`A_{FP}\\,\\sigma(x)` — each one.
A window with no detection scores :math:`-A_{FN}`. The standard profile has
:math:`A_{TP} = 1, A_{FP} = 0.11, A_{FN} = 1`. The raw score is normalised against the null
detector (nothing detected, :math:`-A_{FN}` per window) and the perfect one (every window at
its first row, :math:`A_{TP}` per window): :math:`100\\,(S - S_{null}) / (S_{perfect} - S_{null})`.
NAB also tunes each detector's threshold on the whole corpus; scores here use the detector's
own threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["window_metrics", "nab_raw_score", "nab_normalized", "scaled_sigmoid", "STANDARD_PROFILE"]

STANDARD_PROFILE = {"tp": 1.0, "fp": 0.11, "fn": 1.0}


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def window_metrics(detected: Sequence[tuple], labelled: Sequence[tuple], *,
                   unit: Any = None) -> dict[str, float]:
    """Recall, precision, F1 and mean delay of ``detected`` (start, end, ...) windows.

    Starts and ends may be timestamps or positions; ``unit`` (e.g. ``pd.Timedelta("1h")``)
    divides the delays, which are reported in that unit (timestamps without one: hours;
    positions: steps). A window whose end comes before its start is refused.
    """
    det = [(d[0], d[1]) for d in detected]
    for kind, windows in (("detected", det), ("labelled", labelled)):
        for w in windows:
            if w[1] < w[0]:
                raise ValueError(f"window_metrics: a {kind} window ends before it starts: {tuple(w[:2])}")
    found, delays = 0, []
    for lab in labelled:
        hits = [d for d in det if _overlaps(d, lab)]
        if hits:
            found += 1
            gap = min(d[0] for d in hits) - lab[0]
            gap = gap if gap > gap * 0 else gap * 0  # clamp at zero (numbers or timedeltas)
            if unit is None and hasattr(gap, "total_seconds"):  # timestamps: hours
                gap = gap.total_seconds() / 3600.0
            elif unit is None and isinstance(gap, np.timedelta64):
                gap = gap / np.timedelta64(1, "h")
            delays.append(gap / unit if unit is not None else float(gap))
    correct = sum(any(_overlaps(d, lab) for lab in labelled) for d in det)
    recall = found / len(labelled) if labelled else float("nan")
    precision = correct / len(det) if det else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if det and labelled and precision + recall > 0 else 0.0
    return {"windows": len(labelled), "detected": len(det), "found": found, "recall": recall,
            "precision": precision, "f1": f1,
            "delay": float(np.mean(delays)) if delays else float("nan")}


def scaled_sigmoid(x: float) -> float:
    """NAB's weight of a detection at relative position ``x`` (``-1`` window start, ``0`` end)."""
    return -1.0 if x >= 3.0 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def _window_rows(times: Sequence, windows: Sequence[tuple]) -> list[tuple[int, int]]:
    """(first row, last row) of each window: the first row whose time equals its start/end."""
    pos: dict = {}
    for i, t in enumerate(times):
        pos.setdefault(t, i)
    rows = []
    for start, end in windows:
        if start not in pos or end not in pos:
            raise ValueError(f"window ({start}, {end}) does not start and end on timestamps of the data")
        rows.append((pos[start], pos[end]))
    return sorted(rows)


def nab_raw_score(times: Sequence, detections: Sequence[bool], windows: Sequence[tuple],
                  profile: dict[str, float] = STANDARD_PROFILE, probation: float = 0.15) -> dict:
    """NAB's raw score of per-row binary ``detections`` on one data file, with the counts."""
    n = len(times)
    if len(detections) != n:
        raise ValueError(f"expected {n} detections (one per row), got {len(detections)}")
    skip = min(math.floor(probation * n), probation * 5000)
    rows = _window_rows(times, windows)
    best = {k: None for k, (_, r) in enumerate(rows) if r >= skip}  # windows that can be scored
    fp_sum, n_fp, max_tp = 0.0, 0, scaled_sigmoid(-1.0)
    for i in np.flatnonzero(np.asarray(detections, dtype=bool)):
        if i < skip:
            continue
        inside = [k for k, (a, b) in enumerate(rows) if a <= i <= b]
        if inside:
            k = inside[0]
            a, b = rows[k]
            score = scaled_sigmoid(-(b - i + 1) / (b - a + 1)) * profile["tp"] / max_tp
            best[k] = score if best.get(k) is None else max(best[k], score)
            continue
        before = [(a, b) for a, b in rows if b < i]
        x = 3.0 if not before else abs(before[-1][1] - i) / max(before[-1][1] - before[-1][0], 1)
        fp_sum += scaled_sigmoid(x) * profile["fp"]
        n_fp += 1
    window_part = sum(-profile["fn"] if s is None else s for s in best.values())
    tp = sum(s is not None for s in best.values())
    return {"raw": window_part + fp_sum, "tp": tp, "fn": len(best) - tp, "fp": n_fp,
            "windows": len(best)}


def nab_normalized(raw_scores: Sequence[float], window_counts: Sequence[int],
                   profile: dict[str, float] = STANDARD_PROFILE) -> float:
    """``100 (S - S_null) / (S_perfect - S_null)`` over the given files (summed)."""
    total = float(sum(raw_scores))
    windows = float(sum(window_counts))
    null, perfect = -profile["fn"] * windows, profile["tp"] * windows
    return 100.0 * (total - null) / (perfect - null) if perfect > null else float("nan")
