"""Exponential-smoothing normalisation of one series channel, the first half of the ES hybrid.

On :math:`u_t = \\log y_t` (all training values positive) or :math:`u_t = y_t`, additive
Holt-Winters level and seasonality with season length :math:`m` (error-correction form):

.. math::

    e_t = u_t - \\ell_{t-1} - s_{t-m}, \\qquad
    \\ell_t = \\ell_{t-1} + \\alpha e_t, \\qquad
    s_t = s_{t-m} + \\gamma (1 - \\alpha) e_t

:math:`\\alpha` and :math:`\\gamma` minimise the one-step squared error :math:`\\sum e_t^2` over a
grid, on the training part only; :math:`\\ell_0` and :math:`s_{1-m..0}` come from a classical
decomposition of the first (at most four) cycles. A window ending at the forecast origin
:math:`T` is normalised by the *last* level and each step's seasonal index (Smyl 2020):

.. math::

    x_t = (u_t - \\ell_T - s_t) / \\sigma \\quad (t \\le T), \\qquad
    \\hat u_{T+h} = \\ell_T + s_{T+h-m\\lceil h/m \\rceil} + \\sigma\\, \\hat x_{T+h}

where :math:`\\sigma` is the standard deviation of the training one-step errors :math:`e_t`, so
the recurrent network sees level- and season-free values of unit scale and predicts the rest.
With ``mode="scale"`` there is no smoothing: :math:`\\ell_t = \\mu`, :math:`s_t = 0` and
:math:`\\sigma` the standard deviation (plain standard scaling, fitted on the training part).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["EsParams", "fit_es", "es_filter", "future_season", "to_u", "from_u"]

_ALPHAS = np.array([0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
_GAMMAS = np.array([0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5])
_MAX_CYCLES = 4


@dataclass(frozen=True)
class EsParams:
    """Fitted normalisation of one channel (JSON-able through :meth:`to_dict`)."""

    mode: str  # "es" or "scale"
    log: bool
    season_length: int
    alpha: float
    gamma: float
    sigma: float
    mean: float  # the level of mode "scale"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EsParams:
        return cls(**data)


def to_u(p: EsParams, y: np.ndarray) -> np.ndarray:
    """Values in the smoothing space: ``log y`` (clipped at a tiny positive value) or ``y``."""
    y = np.asarray(y, dtype=np.float64)
    return np.log(np.maximum(y, 1e-12)) if p.log else y


def from_u(p: EsParams, u: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_u` (``exp`` is clipped so a wild forecast stays finite)."""
    return np.exp(np.clip(u, -700.0, 700.0)) if p.log else u


def _initial(u: np.ndarray, m: int) -> tuple[float, np.ndarray]:
    """``(level_0, seasonal indices s_{1-m..0})`` by classical decomposition of the first cycles."""
    if m <= 1 or len(u) < 2 * m:
        return float(u[0]), np.zeros(max(m, 1))
    k = min(_MAX_CYCLES, len(u) // m)
    head = u[: k * m]
    kernel = np.ones(m + 1) / m if m % 2 == 0 else np.ones(m) / m
    if m % 2 == 0:
        kernel[0] = kernel[-1] = 0.5 / m  # the centred 2 x m moving average
    trend = np.convolve(head, kernel, mode="same")
    half = len(kernel) // 2
    valid = np.zeros(len(head), dtype=bool)
    valid[half: len(head) - half] = True
    detrended = np.where(valid, head - trend, np.nan).reshape(k, m)
    season = np.nanmean(detrended, axis=0) if valid.reshape(k, m).any(axis=0).all() else np.zeros(m)
    season = season - season.mean()
    return float(np.mean(head[:m] - season)), season


def _run(u: np.ndarray, m: int, alpha: np.ndarray, gamma: np.ndarray) -> tuple:
    """Filter ``u`` for every ``(alpha, gamma)`` pair at once: ``(level, season, error)``, (G, n)."""
    level0, season0 = _initial(u, m)
    mm = max(m, 1)
    g = alpha.shape[0]
    ring = np.tile(season0, (g, 1))  # (G, m): the latest index of each season phase
    lev = np.full(g, level0)
    levels, seasons, errors = (np.empty((g, len(u))) for _ in range(3))
    for t, value in enumerate(u):
        j = t % mm
        err = value - lev - ring[:, j]
        lev = lev + alpha * err
        ring[:, j] = ring[:, j] + gamma * (1.0 - alpha) * err
        levels[:, t], seasons[:, t], errors[:, t] = lev, ring[:, j], err
    return levels, seasons, errors


def fit_es(y_train: np.ndarray, season_length: int, mode: str = "es", log: bool | None = None) -> EsParams:
    """Fit the normalisation of one channel on its training part (``log=None``: when positive)."""
    y = np.asarray(y_train, dtype=np.float64)
    use_log = bool((y > 0).all()) if log is None else bool(log and (y > 0).all())
    m = int(season_length) if season_length > 1 and len(y) >= 2 * season_length else 1
    probe = EsParams(mode, use_log, m, 1.0, 0.0, 1.0, 0.0)
    u = to_u(probe, y)
    if mode == "scale":
        sd = float(np.std(u))
        return EsParams(mode, use_log, m, 1.0, 0.0, sd if sd > 0 else 1.0, float(np.mean(u)))
    gammas = _GAMMAS if m > 1 else np.zeros(1)
    a, g = (x.reshape(-1) for x in np.meshgrid(_ALPHAS, gammas, indexing="ij"))
    _, _, errors = _run(u, m, a, g)
    skip = m if len(u) > 2 * m else 1  # the first cycle's errors mostly reflect the initial state
    best = int(np.argmin(np.sum(errors[:, skip:] ** 2, axis=1)))
    floor = 1e-2 * float(np.std(np.diff(u))) + 1e-9
    sigma = max(float(np.std(errors[best, skip:])), floor)
    return EsParams(mode, use_log, m, float(a[best]), float(g[best]), sigma, 0.0)


def es_filter(p: EsParams, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(level, season)`` of ``y`` in the smoothing space, each ``(n,)``; :math:`s_t` as of ``t``."""
    u = to_u(p, y)
    if p.mode == "scale":
        return np.full(len(u), p.mean), np.zeros(len(u))
    levels, seasons, _ = _run(u, p.season_length, np.array([p.alpha]), np.array([p.gamma]))
    return levels[0], seasons[0]


def future_season(season: np.ndarray, origin: int, horizon: int, m: int) -> np.ndarray:
    """:math:`s_{T+h-m\\lceil h/m \\rceil}` for ``h = 1..horizon`` at origin ``T = origin``."""
    if m <= 1:
        return np.zeros(horizon)
    h = np.arange(1, horizon + 1)
    return season[origin + h - m * np.ceil(h / m).astype(int)]
