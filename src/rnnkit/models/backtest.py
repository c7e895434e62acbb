"""Rolling-origin backtesting of the Forecaster side by side with the statsmodels baselines.

For origins :math:`T_k = n - H - (K - 1 - k)\\,s` (``k = 0..K-1``, step ``s``), every model is
fitted on :math:`y_{1..T_k}` only — scaling and smoothing included — and scored on
:math:`y_{T_k+1..T_k+H}` with MASE (scaled by its own training part), sMAPE, RMSE and, for the
Forecaster, the coverage of its central interval and the pinball loss of its quantiles.

Univariate only: one series, no covariates (the baselines take none); backtest the series of a
global model or the targets of a DataFrame one at a time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from rnnkit.errors import ConfigError, DataError
from rnnkit.models import ts_metrics
from rnnkit.models._ts_input import as_list, season_from_index
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


def _univariate(y: Any) -> pd.Series:
    """``y`` as one float Series: a Series, a one-column DataFrame, a 1-D array or list of numbers."""
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise DataError(f"backtest: expected one univariate series, got a DataFrame with {y.shape[1]} "
                            "columns; backtest each column on its own")
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series):
        return y
    ys, is_list = as_list(y)
    if is_list:
        raise DataError(f"backtest: expected one univariate series, got a list of {len(ys)} series; "
                        "backtest each series on its own")
    try:
        arr = np.asarray(ys[0], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"backtest: expected a Series or 1-D array of numbers, got {type(y).__name__}") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"backtest: expected one univariate series (1-D), got an array of shape {arr.shape}")
    return pd.Series(arr)


def backtest(forecaster: Any, y: Any, *, n_origins: int = 3, step: int | None = None,
             baselines: tuple[str, ...] = tuple(BASELINES), interval: float = 0.8) -> pd.DataFrame:
    """Refit ``forecaster``'s options and each baseline at every origin; one row per model/origin.

    Univariate only: ``y`` is one series and the forecaster has no covariates.

    Args:
        forecaster: a (possibly unfitted) :class:`Forecaster` whose options are reused; its
            fitted state is never used. It may not have ``future_covariates``.
        y: one univariate series: a pandas Series (a DatetimeIndex keeps the calendar
            features), a one-column DataFrame, a 1-D array or a list of numbers.
        n_origins: number of forecast origins ``K``.
        step: rows between origins (default: the horizon, so test windows do not overlap).
        baselines: names from :data:`rnnkit.models.baselines.BASELINES`.
        interval: the central interval whose coverage is reported (its quantiles must exist).

    Returns:
        DataFrame with columns ``model, origin, mase, smape, rmse`` (+ ``coverage, pinball``).

    Raises:
        ConfigError: a forecaster with future covariates, an unknown baseline, or ``n_origins``
            / ``step`` below 1.
        DataError: no forecaster, ``y`` not one univariate series, or too short for the origins.
    """
    if forecaster is None:
        raise DataError("backtest: pass a Forecaster (its options set horizon and season_length)")
    o = forecaster.options
    if o.future_covariates:
        raise ConfigError(f"backtest: expected a univariate forecaster, got future_covariates="
                          f"{o.future_covariates}; backtest takes no covariates")
    if isinstance(baselines, str):
        baselines = tuple(b.strip() for b in baselines.split(",") if b.strip())
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"backtest: baselines: expected some of {sorted(BASELINES)}, got {unknown[0]!r}")
    if not isinstance(n_origins, int) or n_origins < 1:
        raise ConfigError(f"backtest: n_origins: expected a positive int, got {n_origins!r}")
    if step is not None and (not isinstance(step, int) or step < 1):
        raise ConfigError(f"backtest: step: expected a positive int or None (the horizon), got {step!r}")
    H, series = o.horizon, _univariate(y)
    step = step or H
    first = len(series) - H - (n_origins - 1) * step
    if first < H + 12:
        hint = "use fewer origins or a smaller step" if n_origins > 1 else "give more history or a shorter horizon"
        raise DataError(f"backtest: {len(series)} rows cannot hold {n_origins} origin(s) {step} rows "
                        f"apart with horizon={H} (the first fit needs {H + 12} rows); {hint}")
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
