"""Exponential-smoothing normalisation of one series channel, the first half of the ES hybrid.

On :math:`u_t = \\log y_t` (all training values positive) or :math:`u_t = y_t`, additive
Holt-Winters level, optional damped trend and seasonality with season length :math:`m`
(error-correction form):

.. math::

    e_t = u_t - \\ell_{t-1} - \\phi b_{t-1} - s_{t-m}, \\qquad
    \\ell_t = \\ell_{t-1} + \\phi b_{t-1} + \\alpha e_t, \\qquad
    b_t = \\phi b_{t-1} + \\beta e_t, \\qquad
    s_t = s_{t-m} + \\gamma (1 - \\alpha) e_t

:math:`(\\alpha, \\beta, \\phi, \\gamma)` minimise the one-step squared error :math:`\\sum e_t^2` over
a grid, on the training part only; the damped trend is kept only when it lowers
:math:`n \\log(\\mathrm{SSE}/n) + 2k` (AIC with :math:`k` smoothing parameters). :math:`\\ell_0`,
:math:`b_0` and :math:`s_{1-m..0}` come from a classical decomposition of the first (at most
four) cycles. A window ending at the forecast origin :math:`T` is normalised by the *last*
level and each step's seasonal index (Smyl 2020); the targets also by the trend's forecast:

.. math::

    x_t = (u_t - \\ell_T - s_t) / \\sigma \\quad (t \\le T), \\qquad
    \\hat u_{T+h} = \\ell_T + \\textstyle\\sum_{i=1}^{h} \\phi^i b_T + s_{T+h-m\\lceil h/m \\rceil}
    + \\sigma\\, \\hat x_{T+h}

where :math:`\\sigma` is the standard deviation of the training one-step errors :math:`e_t`, so
the recurrent network sees level- and season-free values of unit scale and predicts the rest.
With ``mode="scale"`` there is no smoothing: :math:`\\ell_t = \\mu`, :math:`s_t = 0` and
:math:`\\sigma` the standard deviation (plain standard scaling, fitted on the training part).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["EsParams", "fit_es", "es_filter", "damped_sum", "to_u", "from_u"]

_ALPHAS = np.array([0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
_GAMMAS = np.array([0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5])
_BETAS = np.array([0.01, 0.03, 0.1, 0.2])
_PHIS = np.array([0.8, 0.9, 0.95, 0.98, 1.0])
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
    beta: float = 0.0
    phi: float = 0.0  # 0: no trend

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


def damped_sum(phi: float, horizon: int) -> np.ndarray:
    """:math:`\\sum_{i=1}^{h} \\phi^i` for ``h = 1..horizon`` (zeros without a trend)."""
    return np.cumsum(phi ** np.arange(1, horizon + 1)) if phi > 0 else np.zeros(horizon)


def _initial(u: np.ndarray, m: int) -> tuple[float, float, np.ndarray]:
    """``(level_0, trend_0, s_{1-m..0})`` by classical decomposition of the first cycles."""
    head = u[: max(min(len(u), 2 * max(m, 5)), 2)]
    slope = float(np.polyfit(np.arange(len(head)), head, 1)[0])
    if m <= 1 or len(u) < 2 * m:
        return float(u[0]), slope, np.zeros(max(m, 1))
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
    return float(np.mean(head[:m] - season)), slope, season


def _run(u: np.ndarray, m: int, a: np.ndarray, b: np.ndarray, phi: np.ndarray, g: np.ndarray,
         keep: bool = False) -> tuple:
    """Filter ``u`` for G parameter sets at once: SSE per set (skipping the first cycle) and,
    with ``keep``, the ``(level, trend, season)`` paths, each (G, n)."""
    level0, trend0, season0 = _initial(u, m)
    mm, n = max(m, 1), len(u)
    ring = np.tile(season0, (len(a), 1))  # (G, m): the latest index of each season phase
    lev, tr = np.full(len(a), level0), np.where(phi > 0, trend0, 0.0)
    sse, skip = np.zeros(len(a)), (m if n > 2 * m else 1)
    paths = [np.empty((len(a), n)) for _ in range(3)] if keep else None
    for t, value in enumerate(u):
        j = t % mm
        damped = phi * tr
        err = value - lev - damped - ring[:, j]
        if t >= skip:
            sse += err * err
        lev = lev + damped + a * err
        tr = damped + b * err
        ring[:, j] = ring[:, j] + g * (1.0 - a) * err
        if paths is not None:
            paths[0][:, t], paths[1][:, t], paths[2][:, t] = lev, tr, ring[:, j]
    return sse, paths


def _grid(m: int, trend: bool) -> list[np.ndarray]:
    gammas = _GAMMAS if m > 1 else np.zeros(1)
    if not trend:
        a, g = (x.reshape(-1) for x in np.meshgrid(_ALPHAS, gammas, indexing="ij"))
        return [a, np.zeros_like(a), np.zeros_like(a), g]
    a, b, phi, g = (x.reshape(-1) for x in np.meshgrid(_ALPHAS, _BETAS, _PHIS, gammas, indexing="ij"))
    keep = b <= a
    return [a[keep], b[keep], phi[keep], g[keep]]


def fit_es(y_train: np.ndarray, season_length: int, mode: str = "es", log: bool | None = None,
           trend: str = "auto") -> EsParams:
    """Fit one channel's normalisation on its training part (``log=None``: when positive;
    ``trend``: ``auto`` by AIC, ``damped`` or ``none``)."""
    y = np.asarray(y_train, dtype=np.float64)
    use_log = bool((y > 0).all()) if log is None else bool(log and (y > 0).all())
    m = int(season_length) if season_length > 1 and len(y) >= 2 * season_length else 1
    u = to_u(EsParams(mode, use_log, m, 1.0, 0.0, 1.0, 0.0), y)
    if mode == "scale":
        sd = float(np.std(u))
        return EsParams(mode, use_log, m, 1.0, 0.0, sd if sd > 0 else 1.0, float(np.mean(u)))
    best = None
    n_eff = max(len(u) - (m if len(u) > 2 * m else 1), 1)
    for with_trend in {"auto": (False, True), "damped": (True,), "none": (False,)}[trend]:
        grid = _grid(m, with_trend)
        sse, _ = _run(u, m, *grid)
        i = int(np.argmin(sse))
        k = 1 + (m > 1) + 2 * with_trend
        aic = n_eff * np.log(sse[i] / n_eff + 1e-300) + 2 * k
        if best is None or aic < best[0]:
            best = (aic, [float(v[i]) for v in grid], sse[i])
    (alpha, beta, phi, gamma), sse = best[1], best[2]
    floor = 1e-2 * float(np.std(np.diff(u))) + 1e-9
    sigma = max(float(np.sqrt(sse / n_eff)), floor)
    return EsParams(mode, use_log, m, alpha, gamma, sigma, 0.0, beta, phi)


def es_filter(p: EsParams, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(level, trend, season)`` of ``y`` in the smoothing space, each ``(n,)``, as of ``t``."""
    u = to_u(p, y)
    if p.mode == "scale":
        return np.full(len(u), p.mean), np.zeros(len(u)), np.zeros(len(u))
    one = lambda v: np.array([v], dtype=np.float64)  # noqa: E731
    _, paths = _run(u, p.season_length, one(p.alpha), one(p.beta), one(p.phi), one(p.gamma), keep=True)
    return paths[0][0], paths[1][0], paths[2][0]
