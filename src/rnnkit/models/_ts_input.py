"""Checked conversion of forecasting inputs: series, covariates, time index and calendar.

Policies (each bad case is one :class:`~rnnkit.errors.DataError` line):

- duplicate or unsorted timestamps: refused.
- missing timestamps (gaps in a regular frequency): refused, or with ``nan="interpolate"``
  reindexed to the full frequency and filled like NaNs.
- irregular steps (not a regular frequency, even with gaps): refused.
- NaNs: refused (``nan="refuse"``, the default), or linearly interpolated in time with the ends
  taking the nearest value (``nan="interpolate"``); the count is logged and kept in
  ``Forecaster.fill_counts_``.
- infinite values, a constant target, an unknown column, no rows, no target column left: refused.
- the time index: a DatetimeIndex (a PeriodIndex is converted to its start timestamps) gives a
  frequency and calendar features; integers that are all valid 8-digit YYYYMMDD dates
  (20230101, ...) are read as those dates (logged); a numeric index that counts in one integer
  step (years 1900, 1901, ...) is continued by that step in forecasts; any other index
  (irregular or non-integer numbers, strings) is read as row positions.
"""

from __future__ import annotations

import logging
import numbers
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rnnkit.errors import DataError

__all__ = ["SeriesData", "to_series", "check_index", "calendar_features", "future_index",
           "season_from_index", "column_names", "as_list", "per_series", "static_rows", "future_rows",
           "integer_steps", "step_key", "step_seconds", "describe_step", "yyyymmdd_dates", "by_dates",
           "check_numeric"]

log = logging.getLogger(__name__)
_DAY = 86400.0


@dataclass(frozen=True)
class SeriesData:
    """One checked series: targets ``(N, C)``, past ``(N, P)`` and known-future ``(N, K)`` columns."""

    target: np.ndarray
    past: np.ndarray
    future: np.ndarray
    index: Any  # DatetimeIndex or None (positions)
    freq: str | None
    filled: int = 0
    int_index: tuple[int, int] | None = None  # (last value, step) of a regular integer index


def _step_seconds(index: pd.DatetimeIndex) -> float:
    """Median time step in seconds (whatever the index's resolution unit)."""
    if len(index) < 2:
        return _DAY
    return float(np.median(np.diff(index.as_unit("ns").asi8)) / 1e9)


def _infer_freq(index: pd.DatetimeIndex) -> str | None:
    """``pd.infer_freq`` as a string, without pandas' warning about its future return type."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        freq = pd.infer_freq(index)
    return getattr(freq, "freqstr", freq)


def _guess_freq(index: pd.DatetimeIndex) -> str | None:
    """The most common frequency pandas infers on short runs of the index (gaps allowed)."""
    guesses = Counter()
    for start in range(0, max(1, len(index) - 5), max(1, len(index) // 20)):
        try:
            guesses[_infer_freq(index[start:start + 5])] += 1
        except (TypeError, ValueError):
            continue
    guesses.pop(None, None)
    return guesses.most_common(1)[0][0] if guesses else None


def check_index(index: Any, name: str = "y") -> tuple[Any, str | None, int]:
    """``(index, freq, n_missing)``: refuse duplicate, unsorted or irregular timestamps."""
    if not isinstance(index, pd.DatetimeIndex):
        return None, None, 0
    if index.has_duplicates:
        dup = index[index.duplicated()]
        raise DataError(f"{name}: {len(dup)} duplicate timestamp(s), first {dup[0]}; remove them "
                        "(e.g. read_series_csv(..., duplicates='mean'))")
    if not index.is_monotonic_increasing:
        raise DataError(f"{name}: timestamps are not in increasing order; sort them first")
    if len(index) < 3:
        return index, None, 0
    freq = index.freqstr or _infer_freq(index)
    if freq is not None:
        return index, freq, 0
    freq = _guess_freq(index)
    full = pd.date_range(index[0], index[-1], freq=freq) if freq else None
    if full is None or not index.isin(full).all():
        raise DataError(f"{name}: irregular time steps (no regular frequency fits the "
                        f"{len(index)} timestamps); resample to a regular frequency first")
    return index, freq, len(full) - len(index)


def integer_steps(index: Any) -> tuple[int, int] | None:
    """``(last value, step)`` of a numeric index that counts in one positive integer step (years
    1900, 1901, ...; a RangeIndex), else ``None`` (irregular or non-integer numbers, not numbers)."""
    if isinstance(index, pd.DatetimeIndex) or index.dtype.kind not in "iuf" or len(index) < 2:
        return None
    values = index.to_numpy(np.float64)
    steps = np.diff(values)
    if not (np.isfinite(values).all() and (values == np.round(values)).all() and steps[0] >= 1
            and (steps == steps[0]).all()):
        return None
    return int(values[-1]), int(steps[0])


def yyyymmdd_dates(index: Any, name: str = "y") -> Any:
    """``index`` as a DatetimeIndex when it holds integers that are all valid YYYYMMDD dates
    (20230101 is 2023-01-01, not row 20 230 101), else ``None``."""
    if isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex, pd.MultiIndex)) or index.dtype.kind not in "iuf" \
            or len(index) == 0:
        return None
    values = index.to_numpy(np.float64)
    if not (np.isfinite(values).all() and (values == np.round(values)).all()
            and ((values >= 10000101) & (values <= 99991231)).all()):
        return None
    dates = pd.to_datetime(pd.Series(values.astype(np.int64).astype(str)), format="%Y%m%d", errors="coerce")
    if dates.isna().any():
        return None
    log.info("%s: the time index holds YYYYMMDD integers (%d ... %d); read as dates", name, int(values[0]),
             int(values[-1]))
    return pd.DatetimeIndex(dates.to_numpy(), name=index.name)


def _dated(df: pd.DataFrame, name: str) -> pd.DataFrame:
    dates = yyyymmdd_dates(df.index, name)
    if dates is not None:
        df = df.set_axis(dates, axis=0)
    return df


def _frame(values: Any, name: str) -> pd.DataFrame:
    """``values`` (Series, DataFrame, 1-D or 2-D array) as a float DataFrame."""
    if isinstance(values, pd.Series):
        return values.to_frame(name=str(values.name) if values.name is not None else name)
    if isinstance(values, pd.DataFrame):
        return values.copy()
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf" or arr.ndim not in (1, 2):
        raise TypeError(f"{name}: expected a pandas Series/DataFrame or a 1-D/2-D numeric array, "
                        f"got {type(values).__name__} of shape {getattr(arr, 'shape', None)}")
    if arr.ndim == 1:
        return pd.DataFrame({name: arr.astype(np.float64)})
    return pd.DataFrame(arr.astype(np.float64), columns=[f"{name}{j}" for j in range(arr.shape[1])])


def column_names(df: pd.DataFrame, wanted: tuple[str, ...], name: str) -> list[str]:
    """Check that every wanted column exists (``DataError`` naming the available ones)."""
    cols = [str(c) for c in df.columns]
    for col in wanted:
        if col not in cols:
            raise DataError(f"{name}: no column {col!r}; available columns: {', '.join(cols)}")
    return list(wanted)


def check_numeric(df: pd.DataFrame, name: str) -> None:
    """Refuse a column that is not of a numeric dtype (text, even text of numbers like "1.5": what
    the values mean is the caller's to decide, with ``pd.to_numeric``)."""
    bad = [c for c in df.columns if df[c].dtype.kind not in "biuf"]
    if bad:
        raise DataError(f"{name}: column {str(bad[0])!r} is not numeric ({df[bad[0]].dtype}); "
                        "convert or drop it")


def _numeric(df: pd.DataFrame, name: str) -> pd.DataFrame:
    df.columns = [str(c) for c in df.columns]
    check_numeric(df, name)
    df = df.astype(np.float64)
    if np.isinf(df.to_numpy()).any():
        raise DataError(f"{name}: {int(np.isinf(df.to_numpy()).sum())} infinite value(s); "
                        "replace them with numbers or NaN")
    return df


def _fill(df: pd.DataFrame, nan: str, name: str, n_missing: int, freq: str | None) -> tuple:
    """Apply the NaN/missing-timestamp policy; returns ``(frame, number of filled cells)``."""
    if n_missing:
        if nan != "interpolate":
            full = pd.date_range(df.index[0], df.index[-1], freq=freq)
            first = full[~full.isin(df.index)][0]
            raise DataError(f"{name}: {n_missing} missing timestamp(s) at frequency {freq!r}, "
                            f"first {first}; fill the gaps or pass nan='interpolate'")
        df = df.reindex(pd.date_range(df.index[0], df.index[-1], freq=freq))
    count = int(df.isna().to_numpy().sum())
    if count and nan != "interpolate":
        col = df.columns[df.isna().any().to_numpy()][0]
        where = df.index[df[col].isna().to_numpy()][0]
        raise DataError(f"{name}: {count} NaN value(s), first in column {col!r} at {where}; "
                        "fill them or pass nan='interpolate'")
    if count:
        empty = [c for c in df.columns if df[c].isna().all()]
        if empty:
            raise DataError(f"{name}: column {empty[0]!r} has no values at all; remove it")
        method = "time" if isinstance(df.index, pd.DatetimeIndex) else "linear"
        df = df.interpolate(method=method).ffill().bfill()
        log.info("%s: interpolated %d missing value(s)", name, count)
    return df, count


def _check_constant(target: np.ndarray, names: list[str], name: str) -> None:
    for j, col in enumerate(names):
        values = target[:, j]
        if np.ptp(values) == 0:
            raise DataError(f"{name}: target {col!r} is constant (every value is {values[0]:g}); "
                            "there is nothing to learn, forecast it with its last value")


def _split_columns(df: pd.DataFrame, y_cols: list[str], targets: tuple[str, ...],
                   future: tuple[str, ...], name: str) -> tuple[list[str], list[str], list[str]]:
    """Targets (default: y's columns that are not known-future), past and future columns."""
    cols = [str(c) for c in df.columns]
    tgt = column_names(df, targets, name) if targets else [c for c in y_cols if c not in future]
    if not tgt:
        got = f"y's columns {y_cols} are all future covariates" if y_cols else "y has no columns"
        raise DataError(f"{name}: no target column left ({got}); expected at least one column to "
                        "forecast (name it with target=..., or give fewer future_covariates)")
    fut = [c for c in future if c in cols]
    past = [c for c in cols if c not in tgt and c not in fut]
    return tgt, past, fut


def to_series(y: Any, covariates: Any, *, targets: tuple[str, ...], future: tuple[str, ...],
              nan: str, name: str = "y") -> tuple[SeriesData, list[str], list[str], list[str]]:
    """Check one series and its covariates; returns ``(data, targets, past, future)`` names."""
    df = _dated(_numeric(_frame(y, "y"), name), name)
    if len(df) == 0:
        raise DataError(f"{name}: 0 rows; expected a non-empty series of numbers")
    if isinstance(df.index, pd.PeriodIndex):
        df.index = df.index.to_timestamp()  # periods as their start timestamps (frequency continued)
    y_cols = list(df.columns)
    if covariates is not None:
        cov = _numeric(_frame(covariates, "x"), f"{name} covariates")
        cov = by_dates(cov, df.index, f"{name} covariates", f"{name}")
        if len(cov) != len(df):
            raise DataError(f"{name}: covariates have {len(cov)} rows, expected one per y row "
                            f"({len(df)})")
        cov.index = df.index
        clash = [c for c in cov.columns if c in df.columns]
        if clash:
            raise DataError(f"{name}: covariate column {clash[0]!r} is also a column of y; rename it")
        df = pd.concat([df, cov], axis=1)
    for col in future:
        column_names(df, (col,), name)
    tgt, past, fut = _split_columns(df, y_cols, targets, future, name)
    index, freq, n_missing = check_index(df.index, name)
    df, filled = _fill(df, nan, name, n_missing, freq)
    int_index = integer_steps(df.index) if index is None else None
    index = df.index if index is not None else None
    target = df[tgt].to_numpy(np.float64)
    _check_constant(target, tgt, name)
    data = SeriesData(target, df[past].to_numpy(np.float64).reshape(len(df), -1),
                      df[fut].to_numpy(np.float64).reshape(len(df), -1), index, freq, filled,
                      int_index)
    return data, tgt, past, fut


def season_from_index(index: Any) -> int:
    """Season length implied by the time step: 12 monthly, 4 quarterly, 7 daily (5 business
    days: daily steps with no Saturday or Sunday), 24 hourly..."""
    if index is None or len(index) < 2:
        return 1
    step = _step_seconds(index)
    if 0.99 * _DAY <= step <= 1.01 * _DAY and len(index) >= 10 and (index.day_of_week < 5).all():
        return 5
    for low, high, season in ((25 * _DAY, 32 * _DAY, 12), (85 * _DAY, 95 * _DAY, 4),
                              (6.5 * _DAY, 7.5 * _DAY, 52), (0.99 * _DAY, 1.01 * _DAY, 7)):
        if low <= step <= high:
            return season
    if step < _DAY and _DAY % step == 0:
        return int(_DAY // step)
    return 1


# a fixed-length step's key is its length; a calendar one's its unit (month start and month end are
# both monthly) and multiple; strings pandas no longer parses (an older bundle's 'M') stay as they are
_UNITS = {"MS": "M", "ME": "M", "BMS": "BM", "BME": "BM", "SMS": "SM", "SME": "SM", "QS": "Q", "QE": "Q",
          "BQS": "BQ", "BQE": "BQ", "YS": "Y", "YE": "Y", "A": "Y", "AS": "Y", "BYS": "BY", "BYE": "BY",
          "BA": "BY", "BAS": "BY"}
_OLD_FIXED = {"H": 3600 * 10**9, "T": 60 * 10**9, "S": 10**9, "L": 10**6, "U": 10**3, "N": 1}  # pandas < 2.2
_WEEK = 7 * 86400 * 10**9


def step_key(freq: str | None) -> Any:
    """What two frequencies share when they are the same time step ('MS' and 'ME', 'W-SUN', 'W-MON'
    and '7D', 'h' and an older pandas' 'H')."""
    if not freq:
        return None
    from pandas.tseries.frequencies import to_offset
    try:
        offset = to_offset(freq)
    except ValueError:  # a string this pandas no longer reads (an older bundle's 'M', 'H', '2BA')
        match = re.fullmatch(r"(\d*)([A-Za-z]+)", freq.split("-")[0])
        if match is None:
            return (freq, 1)
        n, code = int(match.group(1) or 1), match.group(2)
        if code in _OLD_FIXED:
            nanos = n * _OLD_FIXED[code]
            return ("W", nanos // _WEEK) if nanos % _WEEK == 0 else ("fixed", nanos)
        return (_UNITS.get(code, code), n)
    try:
        nanos = offset.nanos
    except ValueError:
        code = offset.rule_code.split("-")[0]
        return (_UNITS.get(code, code), offset.n)
    return ("W", nanos // _WEEK) if nanos % _WEEK == 0 else ("fixed", nanos)


def step_seconds(index: Any) -> float | None:
    """The median time step of a DatetimeIndex of two or more rows, in seconds; else None."""
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
        return None
    return _step_seconds(index)


def describe_step(seconds: float) -> str:
    """``seconds`` in words (``1 hour``, ``30 minutes``, ``1 day``, ``31 days``)."""
    for size, unit in ((_DAY, "day"), (3600.0, "hour"), (60.0, "minute"), (1.0, "second")):
        if seconds >= size or size == 1.0:
            n = seconds / size
            n = int(n) if float(n).is_integer() else round(n, 2)
            return f"{n} {unit}{'' if n == 1 else 's'}"
    return f"{seconds} seconds"  # pragma: no cover


def _calendar_kind(step: float) -> int:
    """Which calendar features a time step of ``step`` seconds gets: 0 sub-daily, 1 daily, 2 weekly,
    3 monthly and quarterly, 4 yearly (see calendar_features)."""
    return sum(step >= edge for edge in (_DAY, 6 * _DAY, 25 * _DAY, 300 * _DAY))


def same_calendar(a: float, b: float) -> bool:
    """Whether two time steps (seconds) get the same calendar features and are within 1.5x."""
    return _calendar_kind(a) == _calendar_kind(b) and max(a, b) <= 1.5 * min(a, b)


def calendar_features(index: Any, step: float | None = None) -> np.ndarray:
    """Cyclic calendar features ``(N, K)`` finer than a year but coarser than the step.

    Sine and cosine of: hour of day and day of week (sub-daily steps), day of week and day of
    year (daily), day of year (weekly), month of year (monthly and quarterly); none for yearly
    steps or a positional index. ``step`` (seconds) is the time step to use instead of the
    index's own (a fitted model's, for an index of one row).
    """
    if index is None or (len(index) < 2 and step is None):
        return np.zeros((0 if index is None else len(index), 0))
    step = _step_seconds(index) if step is None else step
    hour = (index.hour + index.minute / 60.0) / 24.0
    dow = index.day_of_week / 7.0
    doy = (index.day_of_year - 1) / 365.25
    month = (index.month - 1) / 12.0
    phases = ([hour, dow], [dow, doy], [doy], [month], [])[_calendar_kind(step)]
    cols = [f(2 * np.pi * np.asarray(p, dtype=np.float64)) for p in phases for f in (np.sin, np.cos)]
    return np.stack(cols, axis=1) if cols else np.zeros((len(index), 0))


def future_index(index: Any, freq: str | None, horizon: int) -> Any:
    """The ``horizon`` timestamps after ``index`` (``None`` for a positional index)."""
    if index is None or freq is None:
        return None
    return pd.date_range(index[-1], periods=horizon + 1, freq=freq)[1:]


def as_list(y: Any) -> tuple[list, bool]:
    """``(list of series, whether y was a list)``; a flat list of numbers is one 1-D series."""
    if not isinstance(y, (list, tuple)):
        return [y], False
    if y and all(isinstance(v, numbers.Real) for v in y):
        return [np.asarray(y, dtype=np.float64)], False
    return list(y), True


def per_series(value: Any, n: int, name: str) -> list:
    """One item per series: ``value`` itself for one series, else a list of ``n``."""
    if value is None:
        return [None] * n
    if n == 1 and not isinstance(value, (list, tuple)):
        return [value]
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise DataError(f"{name}: expected a list of {n} (one per series), got {type(value).__name__}")
    return list(value)


def static_rows(static: Any, n: int) -> np.ndarray:
    """Static covariates as ``(n, S)`` finite numbers (``(n, 0)`` when None)."""
    if static is None:
        return np.zeros((n, 0))
    try:
        arr = np.asarray(static, dtype=np.float64)
    except (TypeError, ValueError) as exc:  # "could not convert string to float: 'x'", ragged rows
        raise DataError(f"static: expected static covariates as {n} row(s) of numbers (one row per series, "
                        f"the same length), got {static!r:.60} ({str(exc).splitlines()[0]})") from None
    arr = arr.reshape(1, -1) if n == 1 and arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] != n or not np.isfinite(arr).all():
        raise DataError(f"static: expected {n} row(s) of finite numbers, got shape {arr.shape}")
    return arr


def by_dates(frame: pd.DataFrame, wanted: Any, name: str, what: str) -> pd.DataFrame:
    """The rows of ``frame`` at the timestamps ``wanted`` when both are dated (else ``frame`` as it is,
    matched by position); a timestamp ``frame`` lacks is refused, naming the first."""
    if isinstance(frame.index, pd.PeriodIndex):
        frame = frame.set_axis(frame.index.to_timestamp(), axis=0)
    dates = yyyymmdd_dates(frame.index, name)
    frame = frame if dates is None else frame.set_axis(dates, axis=0)
    if not isinstance(frame.index, pd.DatetimeIndex) or not isinstance(wanted, pd.DatetimeIndex):
        return frame
    index = frame.index
    if index.tz is not None and wanted.tz is not None:
        index = index.tz_convert(wanted.tz)
    elif (index.tz is None) != (wanted.tz is None):
        raise DataError(f"{name}: timestamps {'with' if index.tz is not None else 'without'} a time zone, "
                        f"expected them {'with' if wanted.tz is not None else 'without'} one as {what}")
    if index.has_duplicates:
        raise DataError(f"{name}: duplicate timestamp {index[index.duplicated()][0]}; expected one row a time step")
    missing = wanted[~wanted.isin(index)]
    if len(missing):
        span = f"{index[0]} .. {index[-1]}" if len(index) else "none"
        raise DataError(f"{name}: no row for {what}'s timestamp {missing[0]} ({len(missing)} of {len(wanted)} "
                        f"missing; {what} runs {wanted[0]} .. {wanted[-1]}, the rows {span}); give a row for "
                        "every timestamp")
    return frame.set_axis(index, axis=0).loc[wanted]


def future_rows(rows: Any, names: list[str], horizon: int, index: Any = None) -> np.ndarray:
    """The horizon rows ``(H, K)`` of the known-future covariate columns ``names``: those at the
    forecast's timestamps ``index`` when both are dated, else the rows in order."""
    if isinstance(rows, pd.Series):
        rows = rows.to_frame()
    if isinstance(rows, pd.DataFrame):
        missing = [c for c in names if c not in rows.columns]
        if missing:
            raise DataError(f"covariates: no column {missing[0]!r}; available columns: "
                            f"{', '.join(map(str, rows.columns))}")
        rows = by_dates(rows[names], index, "covariates", "the forecast")
    arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    if arr.shape != (horizon, len(names)) or not np.isfinite(arr).all():
        raise DataError(f"covariates: expected {horizon} finite rows of {names}, got shape {arr.shape}")
    return arr
