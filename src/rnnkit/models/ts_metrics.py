"""Forecast accuracy metrics (M4 definitions), numpy in, float out.

With ``y`` the truth and ``f`` the forecast over a horizon of ``H`` steps, and ``x`` the
in-sample (training) series of length ``n`` with season length ``m`` (1 when not seasonal):

.. math::

    \\mathrm{MASE} = \\frac{\\frac1H \\sum_h |y_h - f_h|}{\\frac{1}{n-m} \\sum_{t>m} |x_t - x_{t-m}|}
    \\qquad
    \\mathrm{sMAPE} = \\frac{200}{H} \\sum_h \\frac{|y_h - f_h|}{|y_h| + |f_h|}

    \\mathrm{RMSE} = \\sqrt{\\tfrac1H \\sum_h (y_h - f_h)^2}
    \\qquad
    \\mathrm{pinball}_q = \\frac1H \\sum_h \\max\\{q (y_h - f^q_h), (q-1)(y_h - f^q_h)\\}

``coverage(y, lower, upper)`` is the fraction of points inside ``[lower, upper]``. MASE below 1
means the forecast beats the in-sample one-step seasonal naive forecast on average.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["mase", "smape", "rmse", "mae", "coverage", "pinball", "mase_scale"]


def _pair(y: Any, f: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y, dtype=np.float64)
    b = np.asarray(f, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"truth and forecast must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("expected at least one point, got an empty array")
    return a, b


def mase_scale(insample: Any, season_length: int = 1) -> float:
    """Mean absolute ``m``-step difference of the in-sample series (MASE's denominator).

    Uses the one-step difference when the series is shorter than two seasons or exactly
    periodic (a zero seasonal scale), and 1.0 when the series is constant (MASE = MAE).
    """
    x = np.asarray(insample, dtype=np.float64).reshape(len(insample), -1)
    if len(x) < 2:
        raise ValueError(f"MASE needs at least 2 in-sample points, got {len(x)}")
    tiny = 1e-12 * (float(np.max(np.abs(x))) + 1e-300)
    m = int(season_length) if season_length and season_length > 1 else 1
    for lag in ((m, 1) if m > 1 and len(x) > m else (1,)):
        scale = float(np.mean(np.abs(x[lag:] - x[:-lag])))
        if scale > tiny:
            return scale
    return 1.0


def mae(y: Any, f: Any) -> float:
    """Mean absolute error."""
    a, b = _pair(y, f)
    return float(np.mean(np.abs(a - b)))


def mase(y: Any, f: Any, insample: Any, season_length: int = 1) -> float:
    """Mean absolute scaled error (Hyndman & Koehler 2006), scaled by the in-sample series."""
    return mae(y, f) / mase_scale(insample, season_length)


def smape(y: Any, f: Any) -> float:
    """Symmetric MAPE in percent (0..200), the M4 definition; 0/0 terms count as 0."""
    a, b = _pair(y, f)
    den = np.abs(a) + np.abs(b)
    ratio = np.divide(np.abs(a - b), den, out=np.zeros_like(den), where=den > 0)
    return float(200.0 * np.mean(ratio))


def rmse(y: Any, f: Any) -> float:
    """Root mean squared error."""
    a, b = _pair(y, f)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def coverage(y: Any, lower: Any, upper: Any) -> float:
    """Fraction of ``y`` inside ``[lower, upper]`` (the empirical interval coverage)."""
    a, lo = _pair(y, lower)
    _, hi = _pair(y, upper)
    return float(np.mean((a >= lo) & (a <= hi)))


def pinball(y: Any, quantiles: Any, levels: Sequence[float]) -> float:
    """Mean pinball (quantile) loss; ``quantiles`` has a last axis of ``len(levels)``."""
    q = np.asarray(quantiles, dtype=np.float64)
    a = np.asarray(y, dtype=np.float64)[..., None]
    lv = np.asarray(levels, dtype=np.float64)
    if q.shape[-1] != lv.size or q.shape[:-1] != a.shape[:-1]:
        raise ValueError(f"quantiles must have shape {a.shape[:-1] + (lv.size,)}, got {q.shape}")
    diff = a - q
    return float(np.mean(np.maximum(lv * diff, (lv - 1.0) * diff)))
