"""``Forecaster``: an ES-RNN-style hybrid forecaster with a scikit-learn-like estimator API.

>>> f = Forecaster(horizon=24, season_length=12).fit(y)      # y: Series with a DatetimeIndex
>>> f.predict()                                               # (24,) point forecast
>>> f.predict_frame()                                         # mean, median, q0.05 ... q0.95
>>> f.save("bundle"); rnnkit.load("bundle").predict()         # identical forecasts

The model (see :mod:`rnnkit.models._es` and :mod:`rnnkit.models._forecast_net`): exponential
smoothing fitted per series on the training part gives the level :math:`\\ell_T` and seasonal
indices :math:`s`; the recurrence reads the normalised window
:math:`x_t = (u_t - \\ell_T - s_t)/\\sigma` and predicts quantiles of
:math:`x_{T+1..T+H}`; the forecast is :math:`u = \\ell_T + \\hat s_{T+h} + \\sigma \\hat x_{T+h}`
(and :math:`y = e^u` when the series was modelled in logs), with the network's shift of the
median kept at ``rnn_weight`` of its size (auto: 0.7, or 1.0 with covariates). A few seeds are trained with early stopping on
the last part of the history and their quantiles are averaged. Everything fitted (smoothing
parameters, scalers, the state at the forecast origin) is stored in the bundle's ``config.json``; the
weights in ``model.safetensors``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from rnnkit._files import one_line
from rnnkit.errors import CheckpointError, ConfigError, DataError
from rnnkit.export.bundle import BundleMixin, register_model
from rnnkit.models import _forecast_core as core
from rnnkit.models._forecast_config import ForecasterConfig, auto_sizes
from rnnkit.models._forecast_net import ForecastNet, NetSpec
from rnnkit.models._forecast_train import FitPlan, fit_net, make_windows, torch_threads
from rnnkit.models._ts_input import (SeriesData, as_list, calendar_features, future_index, future_rows,
                                     per_series, season_from_index, static_rows, step_key, to_series)

__all__ = ["Forecaster", "ForecasterConfig"]

log = logging.getLogger(__name__)
AUTO_RNN_WEIGHT = 0.7  # rnn_weight=None without covariates: a combination with the smoothing forecast


def _same_columns(got: dict[str, list], want: dict[str, list]) -> bool:
    """Whether two series have the same columns. One target may be named anything (a global
    model over ``[df["a"], df["b"]]`` learns "the target"); several must match by name, and
    covariates always do."""
    same_targets = got["targets"] == want["targets"] or len(got["targets"]) == len(want["targets"]) == 1
    return same_targets and got["past"] == want["past"] and got["future"] == want["future"]


def _time_step(s: SeriesData) -> tuple[Any, str]:
    """``(key, description)`` of a series' time step; series of a global model must share the key
    (the calendar features and the season come from one step; anchors like W-SUN/W-MON may differ)."""
    if s.index is None:
        return None, "no time index (positions)"
    return step_key(s.freq) or "?", f"frequency {s.freq!r}"


def _tail_index(record: dict[str, Any]) -> pd.DatetimeIndex | None:
    """The last timestamps of a series record, in its time zone (a name like Europe/Paris, kept apart:
    the stamps' fixed offsets alone lost it, and two offsets across a DST change did not parse)."""
    if record["tail"] is None:
        return None
    if record.get("tz"):
        return pd.DatetimeIndex(pd.to_datetime(record["tail"], utc=True)).tz_convert(record["tz"])
    return pd.DatetimeIndex(pd.to_datetime(record["tail"]))


def _series_names(ys: list) -> list[str] | None:
    """The series' own names (a pandas Series' ``name``, a one-column DataFrame's column) when every
    series has one and they differ, else ``None`` (positions label them)."""
    names = []
    for yi in ys:
        if isinstance(yi, pd.Series) and yi.name is not None:
            names.append(str(yi.name))
        elif isinstance(yi, pd.DataFrame) and yi.shape[1] == 1:
            names.append(str(yi.columns[0]))
        else:
            return None
    return names if len(set(names)) == len(names) else None


@dataclasses.dataclass(frozen=True)
class _BundleConfig:
    """What ``config.json`` holds: the options and everything fitted (JSON values only)."""

    options: dict
    fitted: dict


_FITTED_TYPES = {"targets": list, "past": list, "future": list, "is_list": bool, "season_length": int,
                 "input_len": int, "val_size": int, "n_calendar": int, "spec": dict, "n_members": int,
                 "series": list}
_RECORD_KEYS = ("transforms", "state", "n", "freq", "tail", "static", "filled")  # int_index: newer, optional


def _check_fitted(fitted: Any) -> None:
    """The structure of a saved ``fitted_`` record (what :meth:`Forecaster.fit` writes), before it is used."""
    if not isinstance(fitted, dict):
        raise TypeError(f"expected an object, got {type(fitted).__name__}")
    for key, kind in _FITTED_TYPES.items():
        if not isinstance(fitted.get(key), kind):
            raise TypeError(f"{key}: expected {kind.__name__}, got {fitted.get(key)!r:.40}")
    if fitted["n_members"] < 1 or not fitted["series"]:
        raise ValueError("expected at least one member and one series")
    for i, record in enumerate(fitted["series"]):
        missing = [k for k in _RECORD_KEYS if not isinstance(record, dict) or k not in record]
        if missing:
            raise KeyError(f"series[{i}] lacks {', '.join(missing)}")
    if fitted["spec"].get("n_series") != len(fitted["series"]):
        raise ValueError(f"spec.n_series {fitted['spec'].get('n_series')!r} is not the {len(fitted['series'])} "
                         "series recorded")


@register_model("forecaster")
class Forecaster(BundleMixin, nn.Module):
    """Probabilistic multi-step forecaster: exponential smoothing + an rnnkit recurrence.

    Args:
        horizon: steps to forecast.
        season_length: season length ``m``; ``0`` infers it from the time index (12 monthly, 4
            quarterly, 7 daily, 5 business-daily, 24 hourly, ...); ``1`` means no season.
        **options: any field of :class:`ForecasterConfig` (``hidden_size``, ``cell``,
            ``strategy``, ``head``, ``quantiles``, ``ensemble``, ``max_time``, ``nan``, ...).
    """

    def __init__(self, horizon: int = 24, season_length: int = 0, **options: Any) -> None:
        super().__init__()
        known = [f.name for f in dataclasses.fields(ForecasterConfig)]
        unknown = [k for k in options if k not in known]
        if unknown:  # named here: the config class's TypeError named ForecasterConfig.__init__()
            raise ConfigError(f"Forecaster: unknown option {unknown[0]!r}; known options: {', '.join(known)}")
        self.options = ForecasterConfig(horizon=horizon, season_length=season_length, **options)
        self.members = nn.ModuleList()
        self.fitted_: dict[str, Any] | None = None

    # -- bundle ---------------------------------------------------------------------------------
    @property
    def config(self) -> _BundleConfig:
        return _BundleConfig(dataclasses.asdict(self.options), self.fitted_ or {})

    def save(self, directory: Any, **kwargs: Any) -> Any:
        """Save the fitted forecaster as a bundle folder (an unfitted one is refused: its bundle
        held no weights and failed at the first forecast after loading)."""
        self._fitted()
        return super().save(directory, **kwargs)

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> Forecaster:
        model = cls(**data["options"])
        fitted = data.get("fitted") or {}
        if fitted:
            try:
                _check_fitted(fitted)
                spec = NetSpec(**{**fitted["spec"], "quantiles": tuple(fitted["spec"]["quantiles"])})
            except (KeyError, TypeError, ValueError) as exc:  # loaded, it failed at the first forecast
                raise ValueError(f"its 'fitted' record is damaged ({one_line(exc)}); save the forecaster "
                                 "again") from None  # the bundle names the file around it
            model.members = nn.ModuleList(ForecastNet(spec) for _ in range(fitted["n_members"]))
            model.fitted_ = fitted
        return model

    # -- inputs ---------------------------------------------------------------------------------
    def _check(self, y: Any, covariates: Any) -> tuple[list[SeriesData], dict[str, list]]:
        o = self.options
        ys, _ = as_list(y)
        if not ys:
            raise DataError("y: expected at least one series, got an empty list")
        covs = per_series(covariates, len(ys), "covariates")
        out, names = [], None
        for i, (yi, ci) in enumerate(zip(ys, covs)):
            label = "y" if len(ys) == 1 else f"y[{i}]"
            data, tgt, past, fut = to_series(yi, ci, targets=o.target, future=o.future_covariates,
                                             nan=o.nan, name=label)
            got = {"targets": tgt, "past": past, "future": fut}
            if names is not None and not _same_columns(got, names):
                raise DataError(f"{label}: columns {got} differ from the first series' {names}")
            if out and _time_step(data)[0] != _time_step(out[0])[0]:
                raise DataError(f"{label}: {_time_step(data)[1]} differs from y[0]'s "
                                f"{_time_step(out[0])[1]}; a global model needs series with one "
                                "time step (resample them, or fit one model per frequency)")
            out.append(data)
            names = got
        if o.strategy == "recursive" and names["past"]:
            raise ConfigError(f"strategy='recursive' cannot use past covariates {names['past']} "
                              "(their future is unknown); use strategy='direct'")
        return out, names

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, y: Any, covariates: Any = None, *, static: Any = None) -> Forecaster:
        """Fit on ``y`` (Series, DataFrame, 1-D/2-D array, or a list of them for a global model of
        series with one time step; a flat list of numbers is one series).

        ``covariates`` (a DataFrame or array with one row per ``y`` row, a list for several
        series) are past covariates, except the columns named in ``future_covariates``, which
        are known in advance (pass their horizon rows to :meth:`predict`). ``static`` holds one
        row of numbers per series.
        """
        o = self.options
        series, names = self._check(y, covariates)
        statics = static_rows(static, len(series))
        m = o.season_length or season_from_index(series[0].index)
        L, V = auto_sizes([len(s.target) for s in series], o, m)
        self._check_season(series, m, V)
        tfs = [core.fit_transforms(s, len(s.target) - V, m, o.normalize, o.log_flag, o.trend)
               for s in series]
        labels = ["y"] if len(series) == 1 else [f"y[{i}]" for i in range(len(series))]
        prepared = [core.prepare(s, tf, st, o.calendar, names["targets"], lb)
                    for s, tf, st, lb in zip(series, tfs, statics, labels)]
        spec = self._spec(series, names, prepared, statics, L)
        weight = self._weight(names)
        self.members, info, calib = self._train(spec, prepared, L, V, weight)
        ys, is_list = as_list(y)
        n_cal = calendar_features(series[0].index).shape[1] if o.calendar and series[0].index is not None else 0
        self.fitted_ = {
            **names, "is_list": is_list, "season_length": int(m), "input_len": L, "val_size": V, "n_calendar": n_cal,
            "spec": dataclasses.asdict(spec), "n_members": len(self.members), "train": info,
            "calibration": calib, "rnn_weight": weight, "names": _series_names(ys),
            "series": [self._record(s, tf, p, st, L) for s, tf, p, st in
                       zip(series, tfs, prepared, statics)],
        }
        return self

    def _check_season(self, series: list[SeriesData], m: int, V: int) -> None:
        """An explicit season needs two full seasons in the rows the smoothing is fitted on (its
        seasonal indices start from a decomposition of two cycles); with fewer it was dropped without a
        word. A season inferred from the time index is dropped as before (logged)."""
        for i, s in enumerate(series):
            n_fit = len(s.target) - V
            if m > 1 and n_fit < 2 * m:
                label = "y" if len(series) == 1 else f"y[{i}]"
                if not self.options.season_length:
                    log.info("forecaster: %s: %d rows to fit the smoothing on, fewer than two seasons of %d; "
                             "no season", label, n_fit, m)
                    continue
                tail = f" ({len(s.target)} rows less the validation tail of {V})" if V else ""
                raise DataError(f"{label}: season_length={m} needs at least two seasons ({2 * m} rows) to fit the "
                                f"smoothing's seasonal indices on, got {n_fit}{tail}; give a shorter "
                                "season_length, 1 (none), or more history")

    def _spec(self, series, names, prepared, statics, L) -> NetSpec:
        o = self.options
        return NetSpec(n_targets=len(names["targets"]), n_past=len(names["past"]),
                       n_future=prepared[0].future.shape[1], n_static=statics.shape[1],
                       n_series=len(series), input_len=L, horizon=o.horizon, cell=o.cell,
                       hidden_size=o.hidden_size, num_layers=o.num_layers, embed_size=o.embed_size,
                       dropout=o.dropout, head=o.head, quantiles=o.quantiles, strategy=o.strategy)

    def _train(self, spec: NetSpec, prepared: list, L: int, V: int,
               weight: float) -> tuple[nn.ModuleList, list, list]:
        """Train the ensemble; returns ``(members, per-member info, calibration factors)``."""
        o, H = self.options, self.options.horizon
        ns = [len(p.u) for p in prepared]
        train = make_windows(prepared, L, H, [(0, n - V - H) for n in ns])
        val = make_windows(prepared, L, H, [(n - V - 1, n - H) for n in ns]) if V else None
        everything = make_windows(prepared, L, H, [(0, n - H) for n in ns])
        k = o.ensemble or (5 if len(everything) <= 5000 else 2)
        steps = o.max_steps if V else min(o.max_steps, 300)
        plan = FitPlan(lr=o.lr, batch_size=o.batch_size, max_steps=steps, patience=o.patience,
                       refit=o.refit)
        start, members, info = time.monotonic(), [], []
        with torch_threads(o.threads):
            for j in range(k):
                deadline = start + o.max_time * (j + 1) / k
                net, record = fit_net(spec, train, val, everything, plan, o.seed + j, deadline)
                members.append(net)
                info.append(record)
        log.info("forecaster: %d member(s), %d training windows, %.1fs", k, len(train),
                 time.monotonic() - start)
        calib = None
        if o.calibrate and (o.refit or spec.strategy != "direct"):
            log.warning("forecaster: calibrate=True is ignored with refit=True or strategy='recursive'")
        elif o.calibrate:
            n_val = 0 if val is None else val.z[:, L:].numel()
            if n_val < core.CALIBRATION_MIN:
                log.warning("forecaster: calibrate=True needs at least %d validation targets, got %d "
                            "(val_size=%d); the intervals are left uncalibrated (give a longer "
                            "val_size or more history)", core.CALIBRATION_MIN, n_val, V)
            calib = core.calibration(members, val, weight)
        return nn.ModuleList(members), info, calib

    def _weight(self, names: dict[str, list] | None = None) -> float:
        """The share of the network's median shift kept: all of it without smoothing; else an
        explicit ``rnn_weight``, or (auto) the fitted one, decided at fit from ``names``: 1.0 with
        past or future covariates (the smoothing forecast has none: blending in 30% of it shrank
        every covariate's effect by 30%), 0.7 without."""
        o = self.options
        if o.normalize != "es":
            return 1.0
        if o.rnn_weight is not None:
            return float(o.rnn_weight)
        if names is None and self.fitted_ is not None:
            if self.fitted_.get("rnn_weight") is not None:
                return float(self.fitted_["rnn_weight"])
            names = self.fitted_
        return 1.0 if names and (names["past"] or names["future"]) else AUTO_RNN_WEIGHT

    def _record(self, s: SeriesData, tf: dict, p, static: np.ndarray, L: int) -> dict[str, Any]:
        tail = None if s.index is None else [t.isoformat() for t in s.index[-2:]]
        return {"transforms": tf, "state": core.origin_state(p, L, self.options.horizon),
                "n": len(s.target), "freq": s.freq, "tail": tail, "static": static.tolist(),
                "tz": None if s.index is None or s.index.tz is None else str(s.index.tz),
                "filled": s.filled, "int_index": None if s.int_index is None else list(s.int_index)}

    # -- predict --------------------------------------------------------------------------------
    def _fitted(self) -> dict[str, Any]:
        if self.fitted_ is None:
            raise ConfigError("Forecaster is not fitted; call fit(y) first (before predict or save)")
        return self.fitted_

    def _records(self, y: Any, y_covariates: Any, static: Any) -> list[dict[str, Any]]:
        """The stored series records, or fresh ones for new history ``y`` (same columns)."""
        f = self._fitted()
        if y is None:
            return f["series"]
        series, names = self._check(y, y_covariates)
        want = {k: f[k] for k in ("targets", "past", "future")}
        if not _same_columns(names, want) or len(series) != len(f["series"]):
            raise DataError(f"y: expected {len(f['series'])} series with columns {want}, got "
                            f"{len(series)} with {names}")
        statics = static_rows(static, len(series)) if static is not None else \
            np.array([r["static"] for r in f["series"]]).reshape(len(series), -1)
        L = f["input_len"]
        out = []
        for i, (s, old, st) in enumerate(zip(series, f["series"], statics)):
            self._check_time_step(s, old)
            if len(s.target) < L:
                raise DataError(f"y: {len(s.target)} rows, expected at least input_len={L}")
            label = "y" if len(series) == 1 else f"y[{i}]"
            p = core.prepare(s, old["transforms"], st, self.options.calendar, f["targets"], label)
            out.append(self._record(s, old["transforms"], p, st, L))
        return out

    @staticmethod
    def _check_time_step(s: SeriesData, old: dict[str, Any]) -> None:
        """New history must have the fitted series' time step: its season, calendar features and the
        forecast's timestamps come from it (weekly history for a monthly model ran without a word)."""
        fitted = (None, "no time index (positions)") if old["tail"] is None else \
            (step_key(old["freq"]) or "?", f"frequency {old['freq']!r}")
        got = _time_step(s)
        if got[0] != fitted[0] and "?" not in (got[0], fitted[0]):
            raise DataError(f"y: its time step ({got[1]}) differs from the fitted series' ({fitted[1]}); give history at "
                            "the time step the forecaster was fitted on")

    def _run(self, covariates: Any, y: Any, y_covariates: Any, static: Any) -> tuple[list, list]:
        f, o = self._fitted(), self.options
        records = self._records(y, y_covariates, static)
        rows = per_series(covariates, len(records), "covariates")
        states = []
        for rec, r in zip(records, rows):
            if f["future"] and r is None:
                raise DataError(f"covariates: expected the {o.horizon} future rows of "
                                f"{f['future']}, got None")
            tail = _tail_index(rec)
            if r is not None:  # dated rows are taken at the forecast's timestamps, others in order
                r = future_rows(r, f["future"], o.horizon, future_index(tail, rec["freq"], o.horizon))
            hz = core.horizon_future(tail, rec["freq"], rec["transforms"], r, o.horizon,
                                     f["n_calendar"])
            states.append({**rec["state"], "future": rec["state"]["future_hist"] + hz.tolist()})
        sid = torch.arange(len(records))
        static_t = torch.tensor([r["static"] for r in records], dtype=torch.float32)
        static_t = static_t.reshape(len(records), -1)
        nets = list(self.members)
        with torch.no_grad():
            out = core.forecast(nets, states, [r["transforms"]["es"] for r in records], sid,
                                static_t, o.quantiles, o.n_samples, o.seed, self._weight(),
                                f.get("calibration"))
        return out, records

    def predict(self, covariates: Any = None, *, y: Any = None, y_covariates: Any = None,
                static: Any = None) -> Any:
        """Point forecasts (the predictive median) from the end of the history.

        Returns ``(horizon,)`` for one target, ``(horizon, n_targets)`` for several, and a list
        of those for a list of series. ``covariates``: the horizon rows of the known-future
        columns. ``y`` (with ``y_covariates``): forecast from this new history instead, with
        everything fitted kept as is.
        """
        out, _ = self._run(covariates, y, y_covariates, static)
        points = [r["median"][:, 0] if r["median"].shape[1] == 1 else r["median"] for r in out]
        return points if len(points) > 1 or self._fitted()["is_list"] else points[0]

    def predict_frame(self, covariates: Any = None, *, y: Any = None, y_covariates: Any = None,
                      static: Any = None) -> pd.DataFrame:
        """Forecast table: ``mean``, ``median`` and ``q<level>`` columns (prefixed ``<target>:``
        for several targets), indexed by the future timestamps, the continuation of a regular
        integer index (years 1900..1979 -> 1980, ...), or else positions; a ``series`` column for
        a list of series: their names (each Series' ``name``, a one-column DataFrame's column) when
        all have distinct ones, else their positions 0, 1, ..."""
        out, records = self._run(covariates, y, y_covariates, static)
        f, H = self._fitted(), self.options.horizon
        frames = []
        for i, (r, rec) in enumerate(zip(out, records)):
            tail = _tail_index(rec)
            index = future_index(tail, rec["freq"], H)
            if index is None and rec.get("int_index"):  # years 1900..1979 continue 1980, 1981, ...
                last, step = rec["int_index"]
                index = pd.Index(last + step * np.arange(1, H + 1))
            index = pd.RangeIndex(rec["n"], rec["n"] + H) if index is None else index
            cols = {}
            for c, name in enumerate(f["targets"]):
                pre = "" if len(f["targets"]) == 1 else f"{name}:"
                cols[f"{pre}mean"], cols[f"{pre}median"] = r["mean"][:, c], r["median"][:, c]
                for k, q in enumerate(self.options.quantiles):
                    cols[f"{pre}q{q:g}"] = r["quantiles"][:, c, k]
            frame = pd.DataFrame(cols, index=index)
            if len(out) > 1 or f["is_list"]:
                frame.insert(0, "series", f["names"][i] if f.get("names") else i)
            frames.append(frame)
        return frames[0] if len(frames) == 1 else pd.concat(frames)

    # -- fitted attributes ----------------------------------------------------------------------
    @property
    def scaling_(self) -> list[dict[str, Any]]:
        """Per series, the fitted normalisation: smoothing parameters and covariate scalers."""
        return [r["transforms"] for r in self._fitted()["series"]]

    @property
    def fill_counts_(self) -> list[int]:
        """Per series, how many NaNs / missing rows were interpolated (``nan="interpolate"``)."""
        return [r["filled"] for r in self._fitted()["series"]]
