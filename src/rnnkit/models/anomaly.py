"""``AnomalyDetector``: anomaly scores from forecast or reconstruction error, then windows.

Scores (one per row, in standard-deviation units):

- ``method="forecast"``: a one-step :class:`~rnnkit.models.forecaster.Forecaster` with a
  Gaussian head reads the last ``window`` rows; :math:`a_t = |x_t - \\mu_t| / \\sigma_t` in the
  scaled space (root mean square over several columns).
- ``method="reconstruction"``: an LSTM autoencoder (:mod:`rnnkit.models._autoencoder`);
  :math:`a_t = \\sqrt{r_t / \\bar r}`, the row's mean squared reconstruction error :math:`r_t`
  relative to its mean :math:`\\bar r` over the training rows (about 1 for normal rows, like
  the forecast score).

Both are divided by their root mean square on the held-out last tenth of the training rows, so
normal rows the model did not train on score about 1. Scores are smoothed causally,
:math:`\\tilde a_t = \\mathrm{EWMA}_{span}(a)_t`, and flagged when above a threshold: ``fixed``
(:math:`\\tilde a_t > c`), ``quantile`` (the ``q`` quantile of the training scores), or ``adaptive``
(:math:`\\tilde a_t > \\max(c, \\bar a_{t} + k\\, s_{t})`, mean and standard deviation of the
previous ``history`` smoothed scores). Runs of flagged rows closer than ``merge`` rows become one
window ``(start, end, score = max smoothed score)``.

Rows need not be regular in time (NAB files repeat a few timestamps): they are scored in order.
Calendar features of a DatetimeIndex (hour, day of week, ...) are given to the forecaster, so a
detector fitted with timestamps needs them when scoring too. ``fit`` refuses a constant column
(nothing to learn); ``score`` and ``detect`` take one (a flat-lining sensor is an anomaly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from rnnkit.data.scaling import Scaler
from rnnkit.data.timeseries import NAN_POLICIES
from rnnkit.errors import ConfigError, DataError
from rnnkit.export.bundle import BundleMixin, register_model
from rnnkit.models._anomaly_scores import forecast_scores, values_and_calendar
from rnnkit.models._autoencoder import AESpec, LSTMAutoencoder, fit_autoencoder, row_errors
from rnnkit.models._forecast_net import CELLS
from rnnkit.models._forecast_train import torch_threads
from rnnkit.models._ts_input import calendar_features, describe_step, same_calendar, step_seconds
from rnnkit.models.forecaster import Forecaster, _BundleConfig

__all__ = ["AnomalyDetector", "DetectorConfig", "AnomalyWindow"]

_CHOICES = {"method": ("forecast", "reconstruction"), "threshold": ("fixed", "quantile", "adaptive"),
            "nan": NAN_POLICIES, "cell": tuple(CELLS)}


class AnomalyWindow(NamedTuple):
    """A detected window: first and last row (timestamps, or positions) and its peak score."""

    start: Any
    end: Any
    score: float


@dataclass(frozen=True)
class DetectorConfig:
    """Options of :class:`AnomalyDetector` (see the module docstring for the equations)."""

    method: str = "forecast"
    """Score from: ``forecast`` (a one-step forecaster's error) or ``reconstruction``
    (an autoencoder's)."""
    window: int = 48
    """Rows read per score; the first ``window`` rows are never flagged and fitting needs
    4 × as many."""
    hidden_size: int = 32
    """Hidden units of the forecaster's or the autoencoder's recurrent layers."""
    cell: str = "lstm"
    """Recurrent cell: ``lstm``, ``gru``, ``rnn``, ``mingru`` or ``minlstm``."""
    threshold: str = "adaptive"
    """Threshold on the smoothed score: ``fixed`` (``value``), ``quantile``
    (of the training scores) or ``adaptive``."""
    value: float = 4.0
    """Threshold in score units (normal rows score about 1): the ``fixed`` one and the
    ``adaptive`` floor."""
    quantile: float = 0.999
    """With ``threshold=quantile``: the level of the quantile of the training rows'
    smoothed scores."""
    k: float = 4.0
    """With ``threshold=adaptive``: standard deviations above the trailing mean of the scores."""
    history: int = 0
    """With ``threshold=adaptive``: previous scores in the trailing mean and deviation;
    0 = 10 × ``window``."""
    smooth: int = 3
    """Span, in rows, of the causal exponential moving average of the scores; 1 = no smoothing."""
    merge: int = 0
    """Flagged runs at most this many unflagged rows apart become one window;
    0 = ``window`` // 2."""
    max_steps: int = 400
    """Training steps at most (early stopping may end sooner)."""
    max_time: float = 60.0
    """Time limit in seconds for training."""
    nan: str = "refuse"
    """Missing values in fitted and scored series (``rnnkit detect`` too): ``refuse``
    or ``interpolate``."""
    seed: int = 0
    """Random seed of the weights and training batches."""

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name}: expected one of {choices}, got {getattr(self, name)!r}")
        for name in ("window", "hidden_size", "smooth", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected a positive int, got {value!r}")
        for name in ("history", "merge", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name}: expected an int, got {value!r}")
        for name in ("value", "quantile", "k", "max_time"):  # NaN passed `value <= 0` (never flagging)
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
                    or value <= 0:
                raise ConfigError(f"{name}: expected a finite number > 0, got {value!r}")
        if not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"quantile: expected a value in (0, 1), got {self.quantile!r}")
        if 0 < self.history < self.window:
            raise ConfigError(f"history: expected 0 (10 x window) or at least window={self.window} trailing "
                              f"scores, got {self.history}")
        if self.history < 0 or self.merge < 0 or self.value <= 0 or self.k <= 0:
            raise ConfigError("history and merge must be >= 0, value and k > 0; got "
                              f"{self.history}, {self.merge}, {self.value}, {self.k}")


@register_model("anomaly_detector")
class AnomalyDetector(BundleMixin, nn.Module):
    """Unsupervised anomaly detector over a recurrent forecaster or autoencoder.

    ``fit(y)`` on data that is mostly normal, ``score(y)`` per row, ``detect(y)`` windows.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        known = [f.name for f in dataclasses.fields(DetectorConfig)]
        unknown = [k for k in options if k not in known]
        if unknown:
            raise ConfigError(f"AnomalyDetector: unknown option {unknown[0]!r}; known options: {', '.join(known)}")
        self.options = DetectorConfig(**options)
        self.forecaster: Forecaster | None = None
        self.autoencoder: LSTMAutoencoder | None = None
        self.fitted_: dict[str, Any] | None = None

    @property
    def config(self) -> Any:
        return _BundleConfig(dataclasses.asdict(self.options), self.fitted_ or {})

    def save(self, directory: Any, **kwargs: Any) -> Any:
        """Save the fitted detector as a bundle folder (an unfitted one is refused)."""
        if self.fitted_ is None:
            raise ConfigError("AnomalyDetector is not fitted; call fit(y) first (before score, detect or save)")
        return super().save(directory, **kwargs)

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> AnomalyDetector:
        model = cls(**data["options"])
        fitted = data.get("fitted") or {}
        if fitted.get("forecaster"):
            model.forecaster = Forecaster.from_config(fitted["forecaster"])
        if fitted.get("autoencoder"):
            model.autoencoder = LSTMAutoencoder(AESpec(**fitted["autoencoder"]))
        model.fitted_ = fitted or None
        return model

    # -- fit / score ----------------------------------------------------------------------------
    def fit(self, y: Any) -> AnomalyDetector:
        """Learn what normal looks like from ``y`` (Series, DataFrame or array, rows in order).

        The last tenth of ``y`` is held out: early stopping, and the score unit (the root mean
        square of its raw scores, so out-of-sample normal rows score about 1).
        """
        o = self.options
        values, cal, index = values_and_calendar(y, o.nan, refuse_constant=True)
        if len(values) < 4 * o.window:
            raise DataError(f"y has {len(values)} rows; window={o.window} needs at least "
                            f"{4 * o.window} to fit; use a shorter window")
        self.fitted_ = {"n_features": values.shape[1], "n_calendar": cal.shape[1], "unit": 1.0,
                        "columns": _names(y), "step_seconds": step_seconds(index)}
        held = self._fit_forecaster(values, cal) if o.method == "forecast" else self._fit_autoencoder(values)
        raw = self._raw_scores(values, cal)
        self.fitted_["unit"] = float(np.sqrt(np.mean(raw[-held:] ** 2))) or 1.0
        train = self._smoothed(values, cal)
        self.fitted_["train_quantile"] = float(np.quantile(train[o.window:], o.quantile))
        return self

    def _fit_forecaster(self, values: np.ndarray, cal: np.ndarray) -> int:
        o, held = self.options, max(len(values) // 10, self.options.window)
        self.forecaster = Forecaster(
            horizon=1, season_length=1, normalize="scale", log="never", head="gaussian",
            input_len=o.window, val_size=held, calendar=False,
            future_covariates=tuple(f"cal{j}" for j in range(cal.shape[1])), ensemble=1,
            hidden_size=o.hidden_size, cell=o.cell, max_steps=o.max_steps,
            max_time=o.max_time, batch_size=64, seed=o.seed)
        self.forecaster.fit(*_frames(values, cal))
        self.fitted_["forecaster"] = dataclasses.asdict(self.forecaster.config)
        return held

    def _fit_autoencoder(self, values: np.ndarray) -> int:
        o = self.options
        scaler = Scaler("standard").fit(values)
        spec = AESpec(values.shape[1], o.window, o.hidden_size, o.cell)
        with torch.random.fork_rng(), torch_threads(1):
            self.autoencoder = fit_autoencoder(scaler.transform(values), spec, seed=o.seed,
                                               max_steps=o.max_steps, max_time=o.max_time)
        err = row_errors(self.autoencoder, scaler.transform(values))
        self.fitted_.update(scaler=scaler.to_dict(), autoencoder=dataclasses.asdict(spec),
                            mean_error=float(np.mean(err)) + 1e-12)
        return len(values) - max(int(len(values) * 0.9), o.window)  # the autoencoder's held-out rows

    def _raw_scores(self, values: np.ndarray, cal: np.ndarray) -> np.ndarray:
        f = self.fitted_
        if f is None:
            raise ConfigError("AnomalyDetector is not fitted; call fit(y) first")
        if values.shape[1] != f["n_features"]:
            raise DataError(f"y: expected {f['n_features']} column(s) as in fit, got {values.shape[1]}")
        if self.forecaster is not None:
            cal = self._calendar(cal)
            raw = forecast_scores(self.forecaster, *_frames(values, cal))
        else:
            x = Scaler.from_dict(f["scaler"]).transform(values)
            raw = np.sqrt(row_errors(self.autoencoder, x) / f["mean_error"])
        return raw / f["unit"]

    def _calendar(self, cal: np.ndarray) -> np.ndarray:
        """The calendar features the forecaster was fitted with (none if it had no timestamps)."""
        want = self.fitted_["n_calendar"]
        if want == 0:
            return cal[:, :0]  # fitted without timestamps: those of y are not used
        if cal.shape[1] == 0:
            raise DataError(f"y: the detector was fitted with timestamps ({want} calendar features) but y "
                            "has none; pass y with its DatetimeIndex (a CSV: its time column)")
        if cal.shape[1] != want:
            raise DataError(f"y: its time step gives {cal.shape[1]} calendar features, expected {want} as "
                            "in fit; score data with the time step the detector was fitted on")
        return cal

    def _smoothed(self, values: np.ndarray, cal: np.ndarray) -> np.ndarray:
        raw = self._raw_scores(values, cal)
        # an error beyond float32's range (a spike of 1e20 in a sensor log) is inf, which pandas' EWMA
        # skips as missing: the spike scored as normal. Capped instead, far above any threshold
        raw = np.minimum(np.nan_to_num(raw, nan=SCORE_CAP, posinf=SCORE_CAP), SCORE_CAP)
        # the forecast score's first `window` rows are placeholders (0), not scores: the EWMA starts after
        start = self.forecaster.fitted_["input_len"] if self.forecaster is not None else 0
        out = np.zeros(len(raw))
        out[start:] = pd.Series(raw[start:]).ewm(span=self.options.smooth, adjust=False).mean().to_numpy()
        return out

    def _inputs(self, y: Any) -> tuple[np.ndarray, np.ndarray, Any]:
        """``values_and_calendar`` for scoring: columns by name where fit had names, calendar features
        from the fitted time step (which y's own must match)."""
        f = self.fitted_
        if f is None:
            raise ConfigError("AnomalyDetector is not fitted; call fit(y) first")
        y = _reorder(y, f.get("columns"))
        values, cal, index = values_and_calendar(y, self.options.nan, fitting=False)
        fitted_step = f.get("step_seconds")
        if index is not None and fitted_step is not None:
            got = step_seconds(index)
            if got is not None and not same_calendar(got, fitted_step):
                raise DataError(f"y: its time step ({describe_step(got)}) differs from the fitted one "
                                f"({describe_step(fitted_step)}); score data at the time step the detector "
                                "was fitted on")
            cal = calendar_features(index, fitted_step)
        return values, cal, index

    def score(self, y: Any) -> np.ndarray:
        """Smoothed anomaly score of every row (``0`` for the first ``window`` rows with
        ``method="forecast"``, which has no forecast there)."""
        values, cal, _ = self._inputs(y)
        return self._smoothed(values, cal)

    def thresholds(self, scores: np.ndarray) -> np.ndarray:
        """The threshold each row's score is compared with (per the ``threshold`` option)."""
        o, f = self.options, self.fitted_ or {}
        if o.threshold == "fixed":
            return np.full(len(scores), o.value)
        if o.threshold == "quantile":
            return np.full(len(scores), f.get("train_quantile", o.value))
        trail = pd.Series(scores, dtype=np.float64)
        trail.iloc[: o.window] = np.nan  # never flagged, and no scores with method="forecast" (zeros)
        trail = trail.shift(1).rolling(o.history or 10 * o.window, min_periods=o.window)
        adaptive = (trail.mean() + o.k * trail.std()).to_numpy()
        return np.maximum(np.nan_to_num(adaptive, nan=np.inf), o.value)

    def detect(self, y: Any) -> list[AnomalyWindow]:
        """Anomaly windows of ``y``: ``AnomalyWindow(start, end, score)`` in time order."""
        values, cal, index = self._inputs(y)
        scores = self._smoothed(values, cal)
        flags = scores > self.thresholds(scores)
        flags[: self.options.window] = False
        return _windows(flags, scores, index, self.options.merge or self.options.window // 2)


SCORE_CAP = 1e6  # score units (normal rows score about 1)


def _names(y: Any) -> list[str] | None:
    """The column names of a DataFrame of several columns (scored by name later), else None."""
    if isinstance(y, pd.DataFrame) and y.shape[1] > 1:
        return [str(c) for c in y.columns]
    return None


def _reorder(y: Any, fitted: list[str] | None) -> Any:
    """``y``'s columns in the fitted order (a CSV read with --target b,a), refusing other names."""
    if fitted is None or not isinstance(y, pd.DataFrame):
        return y
    got = [str(c) for c in y.columns]
    if got == fitted:
        return y
    if sorted(got) != sorted(fitted):
        raise DataError(f"y: columns {got} differ from the fitted {fitted}; give the columns the detector "
                        "was fitted on")
    return y.set_axis(got, axis=1)[fitted]


def _frames(values: np.ndarray, cal: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = pd.DataFrame(values, columns=[f"y{j}" for j in range(values.shape[1])])
    return frame, pd.DataFrame(cal, columns=[f"cal{j}" for j in range(cal.shape[1])])


def _windows(flags: np.ndarray, scores: np.ndarray, index: Any, merge: int) -> list[AnomalyWindow]:
    """Runs of flagged rows (gaps of at most ``merge`` rows bridged) as windows."""
    rows = np.flatnonzero(flags)
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) > merge + 1)
    starts = np.concatenate([[rows[0]], rows[breaks + 1]])
    ends = np.concatenate([rows[breaks], [rows[-1]]])
    label = (lambda i: index[i]) if index is not None else int
    return [AnomalyWindow(label(a), label(b), float(scores[a: b + 1].max())) for a, b in zip(starts, ends)]
