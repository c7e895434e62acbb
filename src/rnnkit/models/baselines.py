"""Statistical baselines from statsmodels, run in the same evaluation as the Forecaster.

- ``naive``: :math:`\\hat y_{T+h} = y_T`.
- ``seasonal_naive``: :math:`\\hat y_{T+h} = y_{T+h-m\\lceil h/m \\rceil}`.
- ``ets``: statsmodels ``ETSModel`` (Hyndman et al. 2008 state-space ETS), the model chosen by
  AICc among error {add, mul}, trend {none, add, add damped}, season {none, add, mul}
  (multiplicative parts only for positive series; season only with two full cycles).
- ``arima``: statsmodels ``ARIMA`` with an automatic order in the spirit of ``auto.arima``
  (Hyndman & Khandakar 2008): ``d`` from repeated KPSS tests, seasonal ``D = 1`` when the STL
  seasonal strength exceeds 0.64, then ``(p, q)`` in 0..2 by AICc with the seasonal part fixed
  to the airline model's :math:`(0, 1, 1)_m` when ``D = 1`` (a full seasonal grid costs minutes
  per monthly series on two CPU cores), with a constant (``d + D = 0``) or drift (``d + D = 1``).

Each function takes the in-sample series (1-D) and returns ``horizon`` point forecasts.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from rnnkit.errors import ConfigError

__all__ = ["naive", "seasonal_naive", "ets", "arima", "BASELINES", "baseline_forecast"]

log = logging.getLogger(__name__)


def _series(y: Any) -> np.ndarray:
    x = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.size < 3 or not np.isfinite(x).all():
        raise ValueError(f"baselines need >= 3 finite values, got {x.size} (finite: {np.isfinite(x).sum()})")
    return x


def naive(y: Any, horizon: int, season_length: int = 1) -> np.ndarray:
    """Last value repeated."""
    return np.full(horizon, _series(y)[-1])


def seasonal_naive(y: Any, horizon: int, season_length: int = 1) -> np.ndarray:
    """The last full season repeated (``naive`` when ``season_length <= 1`` or too short)."""
    x, m = _series(y), int(season_length)
    if m <= 1 or x.size < m:
        return naive(x, horizon)
    last = x[-m:]
    return np.array([last[h % m] for h in range(horizon)])


def _quiet(fn: Callable[[], Any]) -> Any:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn()


def _ets_candidates(x: np.ndarray, m: int) -> list[dict[str, Any]]:
    positive = bool((x > 0).all())
    errors = ["add", "mul"] if positive else ["add"]
    trends = [(None, False), ("add", False), ("add", True)]
    seasons = [None]
    if m > 1 and x.size >= 2 * m + 2:
        seasons += ["add", "mul"] if positive else ["add"]
    out = []
    for err, (trend, damped), season in itertools.product(errors, trends, seasons):
        if err == "add" and season == "mul":
            continue  # numerically unstable combination (excluded in Hyndman's ets too)
        out.append(dict(error=err, trend=trend, damped_trend=damped, seasonal=season,
                        seasonal_periods=m if season else None))
    return out


def ets(y: Any, horizon: int, season_length: int = 1) -> np.ndarray:
    """statsmodels ``ETSModel``, automatic choice by AICc; seasonal naive if every fit fails."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    x, m = _series(y), int(season_length)
    best, best_ic = None, np.inf
    for spec in _ets_candidates(x, m):
        try:
            res = _quiet(lambda: ETSModel(x, **spec).fit(disp=False, maxiter=200))
        except (ValueError, np.linalg.LinAlgError):
            continue
        ic = getattr(res, "aicc", np.inf)
        if np.isfinite(ic) and ic < best_ic:
            best, best_ic = res, ic
    if best is None:
        log.info("ets: every model failed to fit; using seasonal naive")
        return seasonal_naive(x, horizon, m)
    fc = np.asarray(_quiet(lambda: best.forecast(horizon)), dtype=np.float64)
    return fc if np.isfinite(fc).all() else seasonal_naive(x, horizon, m)


def _ndiffs(x: np.ndarray, max_d: int = 2) -> int:
    """Number of first differences until KPSS (level) no longer rejects at 5%."""
    from statsmodels.tsa.stattools import kpss

    d = 0
    while d < max_d and x.size > 10:
        stat, pvalue, *_ = _quiet(lambda: kpss(x, regression="c", nlags="auto"))
        if pvalue >= 0.05:
            break
        x, d = np.diff(x), d + 1
    return d


def _seasonal_strength(x: np.ndarray, m: int) -> float:
    """Hyndman's :math:`F_S = \\max(0, 1 - Var(R) / Var(S + R))` from an STL decomposition."""
    from statsmodels.tsa.seasonal import STL

    res = _quiet(lambda: STL(x, period=m, robust=True).fit())
    var_sr = np.var(res.seasonal + res.resid)
    return float(max(0.0, 1.0 - np.var(res.resid) / var_sr)) if var_sr > 0 else 0.0


def _arima_orders(m: int, seasonal_d: int, d: int) -> list[tuple]:
    sorder = (0, 1, 1, m) if seasonal_d else (0, 0, 0, 0)
    return [((p, d, q), sorder) for p, q in itertools.product(range(3), range(3))]


def _aicc(res: Any, n: int) -> float:
    k = len(res.params)
    return float(res.aic + 2 * k * (k + 1) / max(n - k - 1, 1))


def arima(y: Any, horizon: int, season_length: int = 1) -> np.ndarray:
    """statsmodels ``ARIMA`` with an automatic (seasonal) order by AICc; naive if all fail."""
    from statsmodels.tsa.arima.model import ARIMA

    x, m = _series(y), int(season_length)
    big_d = 1 if m > 1 and x.size >= 3 * m and _seasonal_strength(x, m) > 0.64 else 0
    xs = x[m:] - x[:-m] if big_d else x
    d = _ndiffs(xs)
    trend = {0: "c", 1: "t"}.get(d + big_d, "n")
    best, best_ic = None, np.inf
    for order, sorder in _arima_orders(m, big_d, d):
        try:
            res = _quiet(lambda: ARIMA(x, order=order, seasonal_order=sorder, trend=trend).fit())
        except (ValueError, np.linalg.LinAlgError, IndexError):
            continue
        ic = _aicc(res, x.size)
        if np.isfinite(ic) and ic < best_ic:
            best, best_ic = res, ic
    if best is None:
        log.info("arima: every order failed to fit; using naive")
        return naive(x, horizon)
    fc = np.asarray(_quiet(lambda: best.forecast(horizon)), dtype=np.float64)
    return fc if np.isfinite(fc).all() else naive(x, horizon)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "naive": naive, "seasonal_naive": seasonal_naive, "ets": ets, "arima": arima,
}


def baseline_forecast(name: str, y: Any, horizon: int, season_length: int = 1) -> np.ndarray:
    """Forecast ``horizon`` steps of ``y`` with the baseline ``name`` (a key of ``BASELINES``)."""
    if name not in BASELINES:
        raise ConfigError(f"baseline: expected one of {sorted(BASELINES)}, got {name!r}")
    return BASELINES[name](y, int(horizon), int(season_length))
