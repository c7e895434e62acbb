"""Recipes: forecasting and anomaly detection from a CSV, end to end (used by the CLI).

::

    fc, bundle, metrics = train_forecaster(ForecastModelConfig(), ForecastDataConfig(
        csv="sales.csv", time_col="date", target="units", horizon=12), "runs", "sales")
    frame = forecast_from_bundle(bundle, "sales.csv", "date", "units", plot="forecast.png")

``train_forecaster`` first fits on all rows but the last ``horizon`` and scores that holdout
against seasonal naive and ETS (``metrics.json``), then refits on every row for the bundle.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rnnkit._files import a_or_an, write_text_atomic
from rnnkit.data.timeseries import _DUPLICATES as _SERIES_DUPLICATES
from rnnkit.data.timeseries import NAN_POLICIES
from rnnkit.errors import ConfigError, DataError
from rnnkit.models import ts_metrics
from rnnkit.models.anomaly import AnomalyDetector, AnomalyWindow, DetectorConfig
from rnnkit.models.baselines import BASELINES, baseline_forecast
from rnnkit.models._ts_input import yyyymmdd_dates
from rnnkit.models.forecaster import Forecaster
from rnnkit.recipes._forecast_plots import plot_detection, plot_forecast

__all__ = ["ForecastDataConfig", "ForecastModelConfig", "DetectDataConfig", "train_forecaster",
           "forecast_from_bundle", "train_detector", "detect_from_bundle", "DetectorConfig"]

log = logging.getLogger(__name__)


def _cols(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _check_nan(nan: str) -> None:
    if nan not in NAN_POLICIES:
        raise ConfigError(f"data.nan: expected 'refuse' or 'interpolate', got {nan!r}")


# what the command line offers: read_series_csv's policies but "keep" (a forecast needs one row a step)
_DUPLICATES = tuple(d for d in _SERIES_DUPLICATES if d != "keep")


@dataclass(frozen=True)
class ForecastDataConfig:
    """A CSV to forecast: ``target`` (comma-separated for several), optional covariate columns
    (``covariates`` past, ``future_covariates`` known ahead), ``season_length`` 0 = from the
    time step. ``nan`` is ``refuse`` or ``interpolate``; ``baselines`` are scored on the holdout."""

    csv: str = ""
    """Path of the CSV file that holds the series (required)."""
    time_col: str = ""
    """Timestamp column; "" picks one named timestamp, time, date, datetime or ds,
    else uses row positions."""
    target: str = ""
    """Column(s) to forecast, comma-separated; "" = every column that is not a covariate."""
    horizon: int = 24
    """Steps to forecast after the end of the series; the holdout is this many last rows."""
    season_length: int = 0
    """Season length in steps; 0 = from the time step (12 monthly, 7 daily, 5 business days,
    24 hourly, ...), 1 = none."""
    covariates: str = ""
    """Past covariate columns, comma-separated: inputs known only up to now
    (not with ``recursive``)."""
    future_covariates: str = ""
    """Covariate columns known in advance, comma-separated; forecasting needs their horizon rows."""
    nan: str = "refuse"
    """Missing values and timestamps: ``refuse`` them, or ``interpolate`` them linearly in time."""
    duplicates: str = "refuse"
    """Rows with a timestamp seen before: ``refuse`` them, or keep the ``first``, the ``last`` or their ``mean``."""
    holdout: bool = True
    """Also fit without the last ``horizon`` rows and score it and the baselines there
    (needs 2 × horizon + 12 rows)."""
    baselines: str = "seasonal_naive,ets"
    """Baselines scored on the holdout, comma-separated: naive, seasonal_naive, ets, arima;
    "" = none."""

    def __post_init__(self) -> None:
        if not self.csv:
            raise ConfigError("data.csv (--csv): expected the path of a CSV file, got none")
        _check_nan(self.nan)
        if self.duplicates not in _DUPLICATES:
            raise ConfigError(f"data.duplicates: expected refuse, first, last or mean, got {self.duplicates!r}")
        # one role per column: a target that is also a past covariate read the column twice and crashed
        roles = [("target", c) for c in _cols(self.target)] + [("covariates", c) for c in _cols(self.covariates)] \
            + [("future_covariates", c) for c in _cols(self.future_covariates)]
        seen: dict[str, str] = {}
        for role, column in roles:
            if column in seen:
                raise ConfigError(f"data: column {column!r} is named as {seen[column]} and as {role}; "
                                  "expected each column in one role")
            seen[column] = role
        if self.horizon < 1 or self.season_length < 0:
            raise ConfigError(f"data.horizon must be >= 1 and data.season_length >= 0, got "
                              f"{self.horizon}, {self.season_length}")
        unknown = [b for b in _cols(self.baselines) if b not in BASELINES]
        if unknown:
            raise ConfigError(f"data.baselines: unknown {unknown[0]!r}; expected some of {sorted(BASELINES)}")


@dataclass(frozen=True)
class ForecastModelConfig:
    """The Forecaster's main options (see :class:`rnnkit.models.forecaster.ForecasterConfig`)."""

    cell: str = "lstm"
    """Recurrent cell: ``lstm``, ``gru``, ``rnn``, ``mingru`` or ``minlstm``."""
    hidden_size: int = 32
    """Hidden units of each recurrent layer (and of the output head's hidden layer)."""
    num_layers: int = 1
    """Number of stacked recurrent layers."""
    input_len: int = 0
    """History steps the network reads per forecast; 0 = auto, max(horizon, 2 × season, 8)."""
    strategy: str = "direct"
    """``direct``: one head predicts every horizon step; ``recursive``: a one-step head
    rolled forward."""
    head: str = "quantile"
    """Predictive distribution: ``quantile`` (quantile regression) or ``gaussian``
    (mean and deviation)."""
    normalize: str = "es"
    """``es``: remove an exponential-smoothing level and season (ES hybrid);
    ``scale``: scaling only."""
    trend: str = "auto"
    """Damped trend of the smoothing: ``auto`` (kept if it lowers the AIC), ``damped``
    or ``none``."""
    rnn_weight: float | None = None
    """Share, in (0, 1], of the network's correction of the smoothing forecast that is kept
    (``es`` only); none = auto: 0.7 without covariates, 1.0 with (the smoothing forecast has none)."""
    ensemble: int = 0
    """Networks trained with seeds ``seed``, ``seed`` + 1, ... and averaged;
    0 = 5 (2 over 5000 windows)."""
    max_steps: int = 600
    """Training steps per ensemble member at most (early stopping may end sooner)."""
    max_time: float = 120.0
    """Time limit in seconds for training all ensemble members (the holdout fit gets its own)."""
    lr: float = 1e-3
    """Learning rate of the AdamW optimiser."""
    dropout: float = 0.0
    """Dropout rate in the output head, and between recurrent layers when ``num_layers`` > 1."""
    seed: int = 0
    """Random seed of the weights and batches; ensemble member j uses ``seed`` + j."""


@dataclass(frozen=True)
class DetectDataConfig:
    """A CSV (or ``dataset="nab/<series>"``) to learn normal behaviour from: the detector is
    fitted on the first ``train_fraction`` of the rows and detects on all of them."""

    csv: str = ""
    """Path of the CSV file that holds the series (needed unless ``dataset`` is given)."""
    time_col: str = ""
    """Timestamp column; "" picks one named timestamp, time, date, datetime or ds,
    else uses row positions."""
    target: str = ""
    """Value column(s), comma-separated, scored together; "" = every column but the time column."""
    dataset: str = ""
    """A labelled NAB series, ``nab/<series>`` from $RNNKIT_DATA/nab, used instead of ``csv``."""
    train_fraction: float = 0.15
    """Share of the rows, from the start, to fit on (at least 4 × ``window``);
    every row is scored."""
    nan: str = "refuse"
    """Missing values: ``refuse`` them, or ``interpolate`` them in time (also in ``rnnkit detect``)."""

    def __post_init__(self) -> None:
        if not self.csv and not self.dataset:
            raise ConfigError("data: expected csv or dataset (e.g. dataset='nab/nyc_taxi'), got neither")
        if self.csv and self.dataset:
            raise ConfigError(f"data: expected csv or dataset, got both ({self.csv!r} and {self.dataset!r})")
        _check_nan(self.nan)
        if not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(f"data.train_fraction: expected a value in (0, 1], got {self.train_fraction}")


def _read(csv: str, time_col: str, columns: list[str], nan: str, duplicates: str = "refuse",
          trained: str = "") -> pd.DataFrame:
    """``read_series_csv``; ``trained`` names the command that fixed the NaN policy of a saved model
    (``rnnkit forecast`` and ``rnnkit detect`` have no --nan: the hint says where to set it)."""
    from rnnkit.data.timeseries import read_series_csv
    try:
        frame = read_series_csv(csv, time_col or None, columns or None, nan=nan, duplicates=duplicates)
    except DataError as exc:
        if not trained or "nan='interpolate'" not in str(exc):
            raise
        raise DataError(str(exc).replace("pass nan='interpolate'", "use a model trained with --nan interpolate "
                                         f"({trained}); this one refuses them")) from None
    dates = yyyymmdd_dates(frame.index, csv)
    if dates is not None:  # 20230101 is a date, not row 20 230 101 (season 1 and no calendar features)
        log.warning("%s: time column %r holds YYYYMMDD integers (%s ... %s); read as dates", csv,
                    frame.index.name, frame.index[0], frame.index[-1])
        frame = frame.set_axis(dates, axis=0)
    return frame


def _forecaster(model: ForecastModelConfig, data: ForecastDataConfig, targets: list[str]) -> Forecaster:
    return Forecaster(horizon=data.horizon, season_length=data.season_length, target=tuple(targets),
                      future_covariates=tuple(_cols(data.future_covariates)), nan=data.nan,
                      **dataclasses.asdict(model))


def _split(frame: pd.DataFrame, targets: list[str], data: ForecastDataConfig):
    covs = _cols(data.covariates) + _cols(data.future_covariates)
    return frame[targets], (frame[covs] if covs else None)


def _holdout(model: ForecastModelConfig, data: ForecastDataConfig, frame: pd.DataFrame,
             targets: list[str]) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Fit on all rows but the last horizon; metrics of rnnkit and the baselines on them."""
    H = data.horizon
    y, x = _split(frame, targets, data)
    fc = _forecaster(model, data, targets).fit(y.iloc[:-H], None if x is None else x.iloc[:-H])
    future = None if x is None or not data.future_covariates else x.iloc[-H:][_cols(data.future_covariates)]
    pred = fc.predict_frame(future)
    m = fc.fitted_["season_length"]
    out: dict[str, Any] = {}
    for t in targets:
        pre = "" if len(targets) == 1 else f"{t}:"
        train, truth = y[t].to_numpy()[:-H], y[t].to_numpy()[-H:]
        row = {"rnnkit": {"mase": ts_metrics.mase(truth, pred[f"{pre}median"], train, m),
                          "smape": ts_metrics.smape(truth, pred[f"{pre}median"]),
                          "rmse": ts_metrics.rmse(truth, pred[f"{pre}median"]),
                          "coverage80": ts_metrics.coverage(truth, pred[f"{pre}q0.1"], pred[f"{pre}q0.9"])}}
        for b in _cols(data.baselines):
            point = baseline_forecast(b, train, H, m)
            row[b] = {"mase": ts_metrics.mase(truth, point, train, m), "smape": ts_metrics.smape(truth, point)}
        out[t] = row
    return out, pred


def train_forecaster(model_cfg: ForecastModelConfig, data_cfg: ForecastDataConfig,
                     run_dir: str | Path = "runs", name: str = "forecast") -> tuple[Forecaster, Path, dict]:
    """Train on the CSV, write ``<run_dir>/<name>/bundle``, ``forecast.png`` and ``metrics.json``.

    Returns ``(forecaster, bundle path, metrics)``; metrics hold the holdout scores (when the
    series is long enough) and the fit summary.
    """
    targets = _cols(data_cfg.target)
    covs = _cols(data_cfg.covariates) + _cols(data_cfg.future_covariates)
    frame = _read(data_cfg.csv, data_cfg.time_col, targets + covs if targets else [], data_cfg.nan,
                  data_cfg.duplicates)
    csv_filled = int(frame.attrs.get("filled", 0))  # NaN cells the CSV reader interpolated
    targets = targets or [c for c in map(str, frame.columns) if c not in covs]
    if not targets:
        columns = ", ".join(map(str, frame.columns))
        raise DataError(f"{data_cfg.csv}: no target column left: every column ({columns}) is a covariate; "
                        "expected at least one to forecast (name it with --target, or give fewer covariates)")
    out = Path(run_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("holdout.png", "forecast.png"):  # an earlier run of this name's plots are not this one's
        (out / stale).unlink(missing_ok=True)
    metrics: dict[str, Any] = {"rows": len(frame), "targets": targets}
    if data_cfg.holdout and len(frame) >= 2 * data_cfg.horizon + 12:
        metrics["holdout"], pred = _holdout(model_cfg, data_cfg, frame, targets)
        plot_forecast(frame[targets].iloc[:-data_cfg.horizon], pred, out / "holdout.png",
                      source=f"run {name}", truth=frame[targets].iloc[-data_cfg.horizon:])
    y, x = _split(frame, targets, data_cfg)
    fc = _forecaster(model_cfg, data_cfg, targets).fit(y, x)
    # where the training data is, for `rnnkit forecast RUN --plot` without --csv (the history to draw)
    source = {"csv": str(Path(data_cfg.csv).resolve()), "time_col": data_cfg.time_col,
              "duplicates": data_cfg.duplicates}
    bundle = fc.save(out / "bundle", extra={"training_data": source})
    metrics["fit"] = {"input_len": fc.fitted_["input_len"], "season_length": fc.fitted_["season_length"],
                      "members": fc.fitted_["n_members"],
                      # the CSV's NaN cells (filled as it was read) and the rows of missing timestamps
                      "filled": [csv_filled + n for n in fc.fill_counts_]}
    if not data_cfg.future_covariates:
        plot_forecast(y, fc.predict_frame(), out / "forecast.png", source=f"run {name}")
    else:  # the CSV ends with the history: the horizon's covariate rows are not known yet
        metrics["forecast_png"] = (f"not written: the forecast needs the {data_cfg.horizon} future rows of "
                                   f"{data_cfg.future_covariates}, which the training CSV does not hold; draw it "
                                   f"with rnnkit forecast {out} --future-csv FILE --plot forecast.png")
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=float) + "\n")
    return fc, bundle, metrics


def _load(bundle: str | Path, kind: type) -> Any:
    from rnnkit.export.bundle import load_bundle
    path = Path(bundle)
    path = path / "bundle" if (path / "bundle" / "config.json").is_file() else path
    model = load_bundle(path)
    if not isinstance(model, kind):
        got, want = type(model).__name__, kind.__name__
        raise ConfigError(f"{bundle}: holds {a_or_an(got)}, expected {a_or_an(want)}")
    return model


def forecast_from_bundle(bundle: str | Path, csv: str | None = None, time_col: str | None = None,
                         target: str | None = None, plot: str | None = None,
                         future_csv: str | None = None, duplicates: str = "refuse") -> pd.DataFrame:
    """Forecast with a saved Forecaster: from the end of its training data, or of ``csv``.

    ``future_csv`` holds the horizon rows of the known-future covariates, if the model has any;
    ``duplicates`` is what to do with rows of ``csv`` (and ``future_csv``) that repeat a timestamp (as
    ``train forecast``'s).
    """
    if duplicates not in _DUPLICATES:
        raise ConfigError(f"duplicates: expected {', '.join(_DUPLICATES[:-1])} or {_DUPLICATES[-1]}, "
                          f"got {duplicates!r}")
    if csv is None and future_csv is None and duplicates != "refuse":  # it was ignored: nothing to apply it to
        raise ConfigError(f"duplicates={duplicates!r} is a policy for the rows of csv (--csv) and future_csv; "
                          "without them the forecast starts from the end of the training data")
    fc = _load(bundle, Forecaster)
    f = fc.fitted_ or {}
    targets = _cols(target) if target else list(f.get("targets", []))
    future = None
    if f.get("future"):
        if not future_csv:
            raise DataError(f"the model needs the future rows of {f['future']}; pass future_csv "
                            "(--future-csv FILE)")
        future = _read(future_csv, time_col or "", list(f["future"]), "refuse", duplicates)
    history = None
    if csv is not None:
        history = _read(csv, time_col or "", targets + list(f["past"]) + list(f["future"]), fc.options.nan,
                        duplicates, trained="rnnkit train forecast")
    try:
        if history is None:
            frame = fc.predict_frame(future)
        else:
            covs = history[list(f["past"]) + list(f["future"])] if f["past"] or f["future"] else None
            frame = fc.predict_frame(future, y=history[targets], y_covariates=covs)
    except DataError as exc:  # the future rows are the file's: name it
        if future_csv and str(exc).startswith("covariates:"):
            raise DataError(f"{future_csv}{str(exc)[len('covariates'):]}") from None
        raise
    if plot:
        history = _training_data(fc, targets) if history is None else history
        plot_forecast(history[targets], frame, plot, source=_source(bundle, csv))
    return frame


def _source(bundle: str | Path, csv: str | None) -> str:
    """What a plot's title names: the run (``runs/sales/bundle`` -> run sales) or the bundle, and the
    history's file when it is not the training data."""
    path = Path(bundle)
    run = path.parent.name if path.name == "bundle" else path.name
    kind = "run" if path.name == "bundle" or (path / "bundle").is_dir() else "bundle"
    return f"{kind} {run}" + (f", history {Path(csv).name}" if csv else "")


def _training_data(fc: Forecaster, targets: list[str]) -> pd.DataFrame:
    """The training CSV a bundle of ``rnnkit train forecast`` records: the history a plot draws when no
    --csv is given (the forecast is from its end)."""
    source = (getattr(fc, "bundle_extra", None) or {}).get("training_data")
    if not isinstance(source, dict) or not source.get("csv"):
        raise DataError("plot: this bundle does not record its training CSV (not saved by rnnkit train forecast, "
                        "or before it did); pass csv (--csv) with the history to draw")
    if not Path(source["csv"]).is_file():
        raise DataError(f"plot: the history to draw is the training CSV {source['csv']}, which is not there any "
                        "more; pass csv (--csv) with the history")
    return _read(source["csv"], source.get("time_col", ""), targets, fc.options.nan,
                 source.get("duplicates", "refuse"))


def _detect_data(data: DetectDataConfig) -> tuple[pd.Series | pd.DataFrame, list[tuple]]:
    if data.dataset:
        from rnnkit.data.registry import load_dataset
        kind, _, series = data.dataset.partition("/")
        if kind != "nab" or not series:
            raise ConfigError(f"data.dataset: expected 'nab/<series>', got {data.dataset!r}")
        item = load_dataset("nab", series)  # local files only: $RNNKIT_DATA/nab on disk
        return item.data["value"], list(item.windows)
    frame = _read(data.csv, data.time_col, _cols(data.target), data.nan, duplicates="keep")
    y = frame.iloc[:, 0] if frame.shape[1] == 1 else frame
    y.attrs["filled"] = int(frame.attrs.get("filled", 0))  # for the summary (a column drops the frame's attrs)
    return y, []


def train_detector(detector_cfg: DetectorConfig, data_cfg: DetectDataConfig,
                   run_dir: str | Path = "runs", name: str = "detect") -> tuple[AnomalyDetector, Path, dict]:
    """Fit an AnomalyDetector on the first ``train_fraction`` rows; bundle, plot and summary."""
    if detector_cfg.nan == "interpolate" and data_cfg.nan != "interpolate":  # [model] nan: the CSV too
        data_cfg = dataclasses.replace(data_cfg, nan="interpolate")
    y, labelled = _detect_data(data_cfg)
    n_fit = max(int(len(y) * data_cfg.train_fraction), 4 * detector_cfg.window)
    options = dataclasses.asdict(detector_cfg)
    if data_cfg.nan == "interpolate":  # what the training CSV needed, `rnnkit detect` will too
        options["nan"] = "interpolate"
    det = AnomalyDetector(**options).fit(y.iloc[:n_fit])
    out = Path(run_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    bundle = det.save(out / "bundle")
    windows = det.detect(y)
    summary: dict[str, Any] = {"rows": len(y), "fit_rows": n_fit,
                               "windows": [[_when(w.start), _when(w.end), float(w.score)] for w in windows]}
    if data_cfg.nan == "interpolate":  # NaN cells the CSV reader filled (missing timestamps stay gaps)
        summary["filled"] = int(y.attrs.get("filled", 0))
    if labelled and n_fit < len(y):
        # scored on the rows after those fitted on: a labelled window inside the training rows (the
        # model learnt it as normal) or a detection there says nothing about the detector
        from rnnkit.models.anomaly_metrics import window_metrics
        first = y.index[n_fit]
        unseen = [(max(w[0], first), w[1], *w[2:]) for w in windows if w[1] >= first]
        labels = [(max(a, first), b) for a, b in labelled if b >= first]
        summary["evaluated_from"] = str(first)
        summary["metrics"] = window_metrics(unseen, labels, unit=pd.Timedelta("1h"))  # delay in hours
    _plot_detection(det, y, windows, labelled, out / "detection.png", f"anomaly detection (run {name})")
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return det, bundle, summary


def _when(value: Any) -> Any:
    """A window's edge for JSON: a timestamp as an ISO string, a row position as an int."""
    return value.isoformat() if isinstance(value, pd.Timestamp) else int(value)


def _plot_detection(det: AnomalyDetector, y: Any, windows: list, labelled: list, path: Any, title: str) -> None:
    scores = det.score(y)
    series = y if isinstance(y, pd.Series) else y.iloc[:, 0]
    if isinstance(y, pd.DataFrame) and y.shape[1] > 1:
        title = f"{series.name!s}: {title} (column 1 of {y.shape[1]}; the score reads all)"
    else:
        title = f"{series.name or 'value'}: {title}"
    plot_detection(series, windows, path, title=title, scores=scores,
                   thresholds=det.thresholds(scores), labelled=labelled)


def detect_from_bundle(bundle: str | Path, csv: str, time_col: str | None = None,
                       target: str | None = None, plot: str | None = None,
                       labelled: list[tuple] | None = None) -> list[AnomalyWindow]:
    """Anomaly windows ``(start, end, score)`` of ``csv`` under a saved AnomalyDetector."""
    det = _load(bundle, AnomalyDetector)
    fitted = det.fitted_ or {}
    columns = _cols(target or "") or fitted.get("columns") or []
    frame = _read(csv, time_col or "", columns, det.options.nan, duplicates="keep", trained="rnnkit train detect")
    want = fitted.get("n_features")
    if want is not None and frame.shape[1] != want and not target:
        names = ", ".join(map(str, frame.columns))
        raise DataError(f"{csv}: {frame.shape[1]} value column(s) ({names}), the detector was fitted on "
                        f"{want}; name the column(s) it was fitted on with --target")
    y = frame.iloc[:, 0] if frame.shape[1] == 1 else frame
    windows = det.detect(y)
    if plot:
        _plot_detection(det, y, windows, labelled or [], plot,
                        f"anomalies in {Path(csv).name} ({_source(bundle, None)})")
    return windows
