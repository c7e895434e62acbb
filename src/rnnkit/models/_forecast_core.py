"""The Forecaster's pipeline between checked series and the networks (no public API).

``fit_transforms`` fits the per-series normalisation on the training part only;
``prepare`` applies it to a whole series; ``origin_state`` cuts the JSON-able state a forecast
needs at the last origin; ``forecast`` turns an ensemble's outputs into quantiles of ``y``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rnnkit.data.scaling import Scaler
from rnnkit.errors import DataError
from rnnkit.models._es import EsParams, fit_es, from_u
from rnnkit.models._forecast_net import ForecastNet, NetSpec, interp_quantiles, to_quantiles
from rnnkit.models._forecast_train import Prepared, horizon_offset, origin_z, prepare_series
from rnnkit.models._ts_input import SeriesData, calendar_features, future_index

__all__ = ["fit_transforms", "check_log_domain", "prepare", "origin_state", "horizon_future", "forecast", "calibration",
           "GRID", "CALIBRATION_MIN"]

GRID = tuple(round(k / 100, 2) for k in range(1, 100))
CALIBRATION_MIN = 100  # validation targets (windows x horizon x targets) calibration needs


def _scaler(values: np.ndarray) -> dict[str, Any]:
    if values.shape[1] == 0:
        return {"kind": "standard", "shift": [], "scale": []}
    return Scaler("standard").fit(values).to_dict()


def _apply(scaler: dict[str, Any], values: np.ndarray) -> np.ndarray:
    if values.shape[1] == 0:
        return values
    return np.asarray(Scaler.from_dict(scaler).transform(values), dtype=np.float64)


def fit_transforms(s: SeriesData, n_fit: int, season: int, mode: str, log: bool | None,
                   trend: str = "auto") -> dict:
    """Per-series normalisation fitted on rows ``[0, n_fit)`` only (nothing later is seen but
    whether ``log="auto"`` can take logs: every row the transform is applied to must be positive,
    a zero in the validation tail too)."""
    es = [fit_es(s.target[:n_fit, c], season, mode,
                 bool((s.target[:, c] > 0).all()) if log is None else log, trend).to_dict()
          for c in range(s.target.shape[1])]
    return {"es": es, "past": _scaler(s.past[:n_fit]), "future": _scaler(s.future[:n_fit])}


def check_log_domain(s: SeriesData, tf: dict, names: list[str] | None = None, label: str = "y") -> None:
    """Refuse values <= 0 in a channel modelled in logs (``log`` of them was -27.6 after clipping:
    a forecast of zeros or nonsense, without a word)."""
    for c, es in enumerate(tf["es"]):
        bad = np.flatnonzero(s.target[:, c] <= 0) if es["log"] else []
        if len(bad):
            where = s.index[bad[0]] if s.index is not None else f"row {bad[0]}"
            col = f"target {names[c]!r}" if names else f"target {c}"
            raise DataError(f"{label}: the model works in logs of {col} (fitted on positive values) but "
                            f"{len(bad)} value(s) are <= 0, first {s.target[bad[0], c]:g} at {where}; give "
                            "positive values, or fit with log='never'")


def prepare(s: SeriesData, tf: dict, static: np.ndarray, calendar: bool,
            names: list[str] | None = None, label: str = "y") -> Prepared:
    """Apply the fitted transforms to a whole series (calendar features first among the future);
    values <= 0 in a channel modelled in logs are refused."""
    check_log_domain(s, tf, names, label)
    cal = calendar_features(s.index) if calendar and s.index is not None else np.zeros((len(s.target), 0))
    future = np.concatenate([cal, _apply(tf["future"], s.future)], 1)
    params = [EsParams.from_dict(d) for d in tf["es"]]
    return prepare_series(s.target, params, _apply(tf["past"], s.past), future, static)


def horizon_future(tail: Any, freq: str | None, tf: dict, future_rows: np.ndarray | None,
                   horizon: int, n_calendar: int) -> np.ndarray:
    """Known-future covariates of the horizon ``(H, K)``: calendar, then the user's (scaled).

    ``tail`` holds the last timestamps of the history (a DatetimeIndex) or is ``None``.
    """
    cal = np.zeros((horizon, n_calendar))
    idx = future_index(tail, freq, horizon)
    if n_calendar and idx is not None:
        cal = calendar_features(tail.append(idx))[-horizon:]
    if future_rows is None:
        user = np.zeros((horizon, len(tf["future"]["shift"])))
    else:
        user = _apply(tf["future"], np.asarray(future_rows, dtype=np.float64).reshape(horizon, -1))
    return np.concatenate([cal, user], 1)


def origin_state(p: Prepared, L: int, H: int) -> dict[str, Any]:
    """What a forecast from the last origin ``T = n - 1`` needs, as JSON-able lists."""
    n = len(p.u)
    T = np.array([n - 1])
    z = origin_z(p, T, L, H, n)[0]  # (L + H, C); the horizon part carries only zeros
    s_hat = horizon_offset(p, T, H)[0]  # (H, C): trend and season ahead of the last level
    return {"z": z[:L].tolist(), "past": p.past[n - L:].tolist(),
            "future_hist": p.future[n - L: n].tolist(), "level": p.level[n - 1].tolist(),
            "s_hat": s_hat.tolist()}


def _batch(states: list[dict], spec: NetSpec, f: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    z = torch.tensor([s["z"] for s in states], dtype=f).reshape(len(states), spec.input_len, -1)
    past = torch.tensor([s["past"] for s in states], dtype=f).reshape(len(states), spec.input_len, -1)
    fut = torch.tensor([s["future"] for s in states], dtype=f)
    fut = fut.reshape(len(states), spec.input_len + spec.horizon, -1)
    return z, past, fut


def _grid(nets: list[ForecastNet], z, past, fut, sid, static, weight: float) -> np.ndarray:
    """Ensemble-averaged quantiles on ``GRID`` in z space, ``(B, H, C, G)``, the median's shift
    kept at ``weight``."""
    L = nets[0].spec.input_len
    with torch.no_grad():
        outs = [to_quantiles(net(z[:, :L], past, fut[:, :L], fut[:, L:], sid, static), nets[0].spec, GRID)
                for net in nets]
    grid = torch.stack(outs).mean(0).double().numpy()
    return grid - (1.0 - weight) * grid[..., GRID.index(0.5)][..., None]


def calibration(nets: list[ForecastNet], val: Any, weight: float,
                min_points: int = CALIBRATION_MIN) -> list[float]:
    """Per ``GRID`` level, the factor :math:`c_k` that widens or narrows the quantiles around the
    median so that a fraction ``level`` of the validation targets lies below
    :math:`\\mathrm{med} + c_k (q_k - \\mathrm{med})` (split-conformal style, clipped to [0.5, 3]);
    all 1 (no change) with fewer than ``min_points`` validation targets."""
    if val is None or val.z[:, nets[0].spec.input_len:].numel() < min_points:
        return [1.0] * len(GRID)
    grid = _grid(nets, val.z, val.past, val.future, val.sid, val.static, weight)
    med = grid[..., GRID.index(0.5)]
    truth = val.z[:, nets[0].spec.input_len:].double().numpy() - med  # (N, H, C)
    out = []
    for g, level in enumerate(GRID):
        ratio = (truth / np.where(grid[..., g] == med, np.nan, grid[..., g] - med)).reshape(-1)
        ratio = ratio[np.isfinite(ratio)]
        c = 1.0 if level == 0.5 or ratio.size == 0 else float(np.quantile(ratio, max(level, 1 - level)))
        out.append(float(np.clip(c, 0.5, 3.0)))
    return out


def _rollout(net: ForecastNet, z, fut, sid, static, n_samples: int, gen) -> torch.Tensor:
    """Sample paths ``(B, S, H, C)`` of the recursive strategy."""
    spec, B, L = net.spec, z.shape[0], net.spec.input_len
    rep = lambda t: t.repeat_interleave(n_samples, 0)  # noqa: E731
    z, fut, sid, static = rep(z), rep(fut), rep(sid), rep(static)
    ctx = net._context(sid, static)
    h, state = net.rnn(net._steps(z, z.new_zeros(z.shape[0], L, 0), fut[:, 1:L + 1], ctx))
    raw = net.head(torch.cat([h[:, -1], ctx], -1)).view(z.shape[0], 1, spec.n_targets, -1)
    params, paths = net._shape(raw, None)[:, 0], []
    known = torch.tensor(spec.quantiles, dtype=z.dtype)
    for step in range(spec.horizon):
        if spec.head == "gaussian":
            noise = torch.randn(params.shape[:-1], generator=gen)
            x = params[..., 0] + params[..., 1] * noise
        else:
            u = torch.rand(params.shape[:-1] + (1,), generator=gen)
            x = interp_quantiles(params, known, u)[..., 0]
        paths.append(x)
        if step + 1 < spec.horizon:
            params, state = net.step_params(x, fut[:, L + step + 1], ctx, state)
    return torch.stack(paths, 1).view(B, n_samples, spec.horizon, spec.n_targets)


def _recursive(nets, states, sid, static, n_samples: int, seed: int) -> np.ndarray:
    spec = nets[0].spec
    z, _, fut = _batch(states, spec, _dtype(nets))
    static = static.to(_dtype(nets))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        paths = torch.cat([_rollout(net, z, fut, sid, static, n_samples, gen) for net in nets], 1)
    return paths.double().numpy()  # (B, S, H, C)


def _dtype(nets: list) -> torch.dtype:
    return next(nets[0].parameters()).dtype if nets else torch.float32


def forecast(nets: list[ForecastNet], states: list[dict], es: list[list[dict]], sid, static,
             levels: tuple[float, ...], n_samples: int, seed: int,
             weight: float = 1.0, calib: list[float] | None = None) -> list[dict[str, np.ndarray]]:
    """Per series ``{"quantiles": (H, C, Q), "median": (H, C), "mean": (H, C)}`` in y units.

    ``weight`` scales the network's shift of the median away from the smoothing forecast
    (:math:`\\hat x \\to \\hat x - (1 - w)\\,\\mathrm{median}(\\hat x)`), keeping the interval widths;
    ``calib`` are the direct strategy's :func:`calibration` factors.
    """
    spec = nets[0].spec
    if spec.strategy == "recursive":
        paths = _recursive(nets, states, sid, static, n_samples, seed)
        paths = paths - (1.0 - weight) * np.median(paths, axis=1, keepdims=True)
    else:
        z, past, fut = _batch(states, spec, _dtype(nets))  # the members' dtype: .double() works
        grid = _grid(nets, z, past, fut, sid, static.to(z.dtype), weight)
        med = grid[..., GRID.index(0.5)][..., None]
        grid = med + np.asarray(calib or [1.0] * len(GRID)) * (grid - med)
    out = []
    for b, state in enumerate(states):
        params = [EsParams.from_dict(d) for d in es[b]]
        base = np.asarray(state["level"])[None] + np.asarray(state["s_hat"])  # (H, C)
        sigma = np.array([p.sigma for p in params])
        if spec.strategy == "recursive":
            ys = _to_y(params, base[None] + sigma * paths[b])  # (S, H, C)
            qs = np.moveaxis(np.quantile(ys, levels, axis=0), 0, -1)
            med, mean = np.median(ys, axis=0), ys.mean(axis=0)
        else:
            ys = _to_y(params, base[..., None] + sigma[:, None] * grid[b], axis=1)  # (H, C, G)
            qs = np.stack([ys[..., GRID.index(round(q, 2))] for q in levels], -1)
            med, mean = ys[..., GRID.index(0.5)], ys.mean(-1)
        out.append({"quantiles": qs, "median": med, "mean": mean})
    return out


def _to_y(params: list[EsParams], u: np.ndarray, axis: int = -1) -> np.ndarray:
    """Back from the smoothing space channel by channel (channels on ``axis``)."""
    u = np.moveaxis(u, axis, -1)
    y = np.stack([from_u(p, u[..., c]) for c, p in enumerate(params)], -1)
    return np.moveaxis(y, -1, axis)
