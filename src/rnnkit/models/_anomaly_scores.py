"""Input checks and forecast-error scores of the AnomalyDetector (no public API)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from rnnkit.errors import DataError
from rnnkit.models import _forecast_core as core
from rnnkit.models._forecast_train import make_windows
from rnnkit.models._ts_input import SeriesData, calendar_features, check_numeric, yyyymmdd_dates

__all__ = ["values_and_calendar", "forecast_scores"]

log = logging.getLogger(__name__)


def values_and_calendar(y: Any, nan: str, *, refuse_constant: bool = False,
                        fitting: bool = True) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(values (n, C), calendar (n, K), index or None)``; rows are scored in the given order.

    Repeated or missing timestamps are allowed (rows are positions); NaNs follow ``nan``. A
    constant column is refused with ``refuse_constant`` (fitting: nothing to learn); scoring
    takes it (a flat-lining sensor is an anomaly to score).
    """
    frame = y.to_frame() if isinstance(y, pd.Series) else pd.DataFrame(y) if not isinstance(y, pd.DataFrame) else y
    index = frame.index if isinstance(frame.index, pd.DatetimeIndex) else yyyymmdd_dates(frame.index)
    if index is not None and not index.is_monotonic_increasing:
        raise DataError("y: timestamps are not in increasing order; sort them first")
    check_numeric(frame, "y")  # as the Forecaster: text of numbers ("1.5") is not taken as numbers
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"y: expected numeric columns, got dtypes {list(map(str, frame.dtypes))}") from None
    if values.ndim != 2 or len(values) == 0:
        raise DataError(f"y: expected rows of numbers, got shape {values.shape}")
    if np.isinf(values).any():
        raise DataError(f"y: {int(np.isinf(values).sum())} infinite value(s); replace them")
    missing = int(np.isnan(values).sum())
    if missing and nan == "refuse":
        row = int(np.flatnonzero(np.isnan(values).any(1))[0])
        where = index[row] if index is not None else f"row {row}"
        how = "pass nan='interpolate'" if fitting else \
            "use a detector fitted with nan='interpolate' (rnnkit train detect --nan interpolate)"
        raise DataError(f"y: {missing} NaN value(s), first at {where}; fill them or {how}")
    if missing:
        values = pd.DataFrame(values).interpolate().ffill().bfill().to_numpy()
        log.info("anomaly detector: interpolated %d missing value(s)", missing)
    if refuse_constant and (np.ptp(values, axis=0) == 0).any():
        raise DataError("y: a column is constant; there is nothing to model, remove it")
    cal = calendar_features(index) if index is not None else np.zeros((len(values), 0))
    return values, cal, index


def forecast_scores(forecaster: Any, frame: pd.DataFrame, covs: pd.DataFrame,
                    batch: int = 4096) -> np.ndarray:
    """:math:`|x_t - \\mu_t| / \\sigma_t` of a fitted one-step Gaussian forecaster, per row."""
    f = forecaster.fitted_
    # the rows are checked already (values_and_calendar); not Forecaster._check, which refuses
    # a constant target: a constant stretch is scored like any other
    n_rows = len(frame)
    series = SeriesData(frame.to_numpy(np.float64), np.zeros((n_rows, 0)),
                        covs.to_numpy(np.float64).reshape(n_rows, -1), None, None)
    rec = f["series"][0]
    p = core.prepare(series, rec["transforms"], np.zeros(0), calendar=False)
    L, n = f["input_len"], n_rows
    scores = np.zeros(n)
    if n <= L:
        return scores
    w = make_windows([p], L, 1, [(0, n - 1)])  # origins L-1 .. n-2 predict rows L .. n-1
    nets = list(forecaster.members)
    out = []
    with torch.no_grad():
        for lo in range(0, len(w), batch):
            b = w.take(torch.arange(lo, min(lo + batch, len(w))))
            params = torch.stack([net(b.z[:, :L], b.past, b.future[:, :L], b.future[:, L:], b.sid,
                                      b.static) for net in nets])  # (M, B, 1, C, 2)
            mu = params[..., 0].mean(0)
            var = (params[..., 1] ** 2 + params[..., 0] ** 2).mean(0) - mu ** 2  # mixture
            err = (b.z[:, L:] - mu) / var.clamp_min(1e-8).sqrt()  # (B, 1, C)
            out.append(err.pow(2).mean(-1).sqrt()[:, 0].double())
    scores[L:] = torch.cat(out).numpy()
    return scores
