"""Rolling-origin backtesting of the Forecaster side by side with the statsmodels baselines.

For origins :math:`T_k = n - H - (K - 1 - k)\\,s` (``k = 0..K-1``, step ``s``), every model is
fitted on :math:`y_{1..T_k}` only — scaling and smoothing included — and scored on
:math:`y_{T_k+1..T_k+H}` with MASE (scaled by its own training part), sMAPE, RMSE and, for the
Forecaster, the coverage of its central interval and the pinball loss of its quantiles.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from rnnkit.errors import DataError
from rnnkit.models import ts_metrics
from rnnkit.models.baselines import BASELINES, baseline_forecast

__all__ = ["backtest"]


def _score(truth: np.ndarray, point: np.ndarray, train: np.ndarray, m: int) -> dict[str, float]:
    return {"mase": ts_metrics.mase(truth, point, train, m), "smape": ts_metrics.smape(truth, point),
            "rmse": ts_metrics.rmse(truth, point)}


def _forecaster_row(forecaster: Any, train: Any, truth: np.ndarray, m: int,
                    interval: float) -> dict[str, float]:
    from rnnkit.models.forecaster import Forecaster

    model = Forecaster(**dataclasses.asdict(forecaster.options)).fit(train)
    frame = model.predict_frame()
    levels = model.options.quantiles
    lo, hi = round((1 - interval) / 2, 2), round((1 + interval) / 2, 2)
    row = _score(truth, frame["median"].to_numpy(), np.asarray(train, dtype=np.float64), m)
    if lo in levels and hi in levels:
        row["coverage"] = ts_metrics.coverage(truth, frame[f"q{lo:g}"], frame[f"q{hi:g}"])
    qs = np.stack([frame[f"q{q:g}"].to_numpy() for q in levels], -1)
    row["pinball"] = ts_metrics.pinball(truth, qs, levels)
    return row


def backtest(forecaster: Any, y: Any, *, n_origins: int = 3, step: int | None = None,
             baselines: tuple[str, ...] = tuple(BASELINES), interval: float = 0.8) -> pd.DataFrame:
    """Refit ``forecaster``'s options and each baseline at every origin; one row per model/origin.

    Args:
        forecaster: a (possibly unfitted) :class:`Forecaster` whose options are reused; its
            fitted state is never used. ``None`` runs only the baselines.
        y: a univariate pandas Series (a DatetimeIndex keeps the calendar features) or array.
        n_origins: number of forecast origins ``K``.
        step: rows between origins (default: the horizon, so test windows do not overlap).
        baselines: names from :data:`rnnkit.models.baselines.BASELINES`.
        interval: the central interval whose coverage is reported (its quantiles must exist).

    Returns:
        DataFrame with columns ``model, origin, mase, smape, rmse`` (+ ``coverage, pinball``).
    """
    if forecaster is None:
        raise DataError("backtest: pass a Forecaster (its options set horizon and season_length)")
    o = forecaster.options
    H, series = o.horizon, y if isinstance(y, pd.Series) else pd.Series(np.asarray(y, dtype=float))
    step = step or H
    first = len(series) - H - (n_origins - 1) * step
    if n_origins < 1 or first < H + 12:
        raise DataError(f"backtest: {len(series)} rows cannot hold {n_origins} origin(s) {step} rows "
                        f"apart with horizon={H}; use fewer origins or a smaller step")
    from rnnkit.models._ts_input import season_from_index

    m = o.season_length or season_from_index(series.index if isinstance(series.index, pd.DatetimeIndex) else None)
    rows = []
    for k in range(n_origins):
        cut = first + k * step
        train, truth = series.iloc[:cut], series.to_numpy(np.float64)[cut: cut + H]
        rows.append({"model": "rnnkit", "origin": cut, **_forecaster_row(forecaster, train, truth, m, interval)})
        for name in baselines:
            point = baseline_forecast(name, train.to_numpy(np.float64), H, m)
            rows.append({"model": name, "origin": cut, **_score(truth, point, train.to_numpy(np.float64), m)})
    return pd.DataFrame(rows)
