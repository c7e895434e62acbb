"""Time series: checked CSV reading, sliding windows, and scaling fitted on training data.

Typical use::

    df = read_series_csv("nyc_taxi.csv")                # DatetimeIndex, float columns
    train, val, test = split_series(df, val_fraction=0.1, test_fraction=0.2)
    scaler = Scaler("standard").fit(train)              # statistics of the training part only
    ds = WindowDataset(scaler.transform(train), input_len=48, horizon=12)

pandas is needed only by :func:`read_series_csv` (``pip install 'rnnkit[timeseries]'``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from rnnkit.data._io import read_csv_table
from rnnkit.data.scaling import Scaler, as_array
from rnnkit.errors import DataError

__all__ = ["read_series_csv", "split_series", "WindowDataset", "Window", "Scaler", "NAN_POLICIES"]

logger = logging.getLogger(__name__)

TIME_COLUMN_NAMES = ("timestamp", "time", "date", "datetime", "ds")
_DUPLICATES = ("refuse", "first", "last", "mean", "keep")
NAN_POLICIES = ("refuse", "interpolate")  # what to do with missing values, everywhere a series is read
_MISSING = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "n/a", "null", "NULL", "None"})


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(
            "read_series_csv needs pandas; install it with: pip install 'rnnkit[timeseries]'"
        ) from exc
    return pandas


def _pick_columns(path: Any, header: list[str], time_col: str | None,
                  target: str | Sequence[str] | None) -> tuple[str | None, list[str]]:
    """Resolve the time column (by name when ``None``) and the target columns."""
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise DataError(f"{path}: column name {dup[0]!r} appears twice in the header; rename one")
    available = ", ".join(header)
    if time_col is None:
        time_col = next((c for c in header if c.strip().lower() in TIME_COLUMN_NAMES), None)
    elif time_col not in header:
        raise DataError(f"{path}: no time column {time_col!r}; available columns: {available}")
    targets = [target] if isinstance(target, str) else list(target or [])
    for col in targets:
        if col not in header:
            raise DataError(f"{path}: no column {col!r}; available columns: {available}")
    if not targets:
        targets = [c for c in header if c != time_col]
    if not targets:
        raise DataError(f"{path}: no value columns besides {time_col!r}; add a column of values")
    return time_col, targets


def _parse_values(path: Any, column: list[str], lines: list[int], name: str,
                  decimal_comma: bool = False) -> np.ndarray:
    """Floats of one column; missing markers become NaN, anything else unparseable raises.
    ``decimal_comma``: "2,5" is 2.5 (files separated by ';', as spreadsheets write them where the
    comma is the decimal mark)."""
    out = np.empty(len(column), dtype=np.float64)
    infinite = []  # rows of inf, -inf or a number too large for a float (1e400)
    for i, cell in enumerate(column):
        cell = cell.strip()
        if cell in _MISSING:
            out[i] = np.nan
            continue
        if decimal_comma and "," in cell and "." not in cell:
            cell = cell.replace(",", ".", 1) if cell.count(",") == 1 else cell
        try:
            out[i] = float(cell)
        except ValueError:
            raise DataError(f"{path} line {lines[i]}: column {name!r} holds {cell!r}, not a "
                            "number; fix the value or leave the cell empty") from None
        if np.isinf(out[i]):
            infinite.append(i)
    if infinite:
        i = infinite[0]
        raise DataError(f"{path}: {len(infinite)} infinite value(s) in column {name!r}, first on line "
                        f"{lines[i]} ({column[i].strip()!r}); fix them or leave the cells empty")
    return out


def _to_times(raw: Any) -> Any:
    """Numbers (steps, years) when every stamp is a number, else datetimes (NaN/NaT if bad)."""
    pd = _pandas()
    numbers = pd.to_numeric(raw, errors="coerce")
    if not numbers.isna().any():
        whole = bool((numbers == numbers.round()).all())
        return numbers.astype("int64") if whole else numbers
    with warnings.catch_warnings():  # "could not infer format": handled just below
        warnings.simplefilter("ignore", UserWarning)
        # One format for the whole column, month first (pandas' default) or day first: 13/01/2015
        # must not make the column's 01/02/2015 the 1st of February while 12/01/2015 stays the
        # 1st of December (what parsing each stamp on its own does). Year-first stamps (ISO, the
        # common case) have one reading: they are parsed once
        orders = (False,) if bool(raw.str.match(r"\d{4}[-/.]\d").all()) else (False, True)
        readings = [t for t in (pd.to_datetime(raw, errors="coerce", dayfirst=first) for first in orders)
                    if not t.isna().any()]
        if len(readings) == 2 and not readings[0].equals(readings[1]):
            regular = [t for t in readings if _regular(t)]  # 01/02/2015: the reading with a time step
            return regular[0] if len(regular) == 1 else readings[0]
        if readings:
            return readings[0]
        return pd.to_datetime(raw, errors="coerce", format="mixed")  # mixed formats: each on its own


def _regular(times: Any) -> bool:
    """Whether sorted distinct ``times`` have a frequency pandas can name (a regular time step)."""
    pd = _pandas()
    distinct = pd.DatetimeIndex(times).unique().sort_values()
    with warnings.catch_warnings():  # pandas' notice about infer_freq's future return type
        warnings.simplefilter("ignore")
        try:
            return len(distinct) >= 3 and pd.infer_freq(distinct) is not None
        except (TypeError, ValueError):
            return False


def _parse_times(path: Any, column: list[str], lines: list[int], name: str,
                 refuse_duplicates: bool) -> Any:
    """The time index from one column; unparseable (and, if asked, duplicate) stamps raise."""
    pd = _pandas()
    times = _to_times(pd.Series(column, dtype="object").str.strip())
    if times.isna().any():
        i = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise DataError(f"{path} line {lines[i]}: cannot parse timestamp {column[i]!r} in column "
                        f"{name!r}; write times as YYYY-MM-DD HH:MM:SS")
    dup = times.duplicated(keep="first").to_numpy()
    if refuse_duplicates and dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((times == times.iloc[i]).to_numpy())[0])
        raise DataError(f"{path} line {lines[i]}: duplicate timestamp {column[i]!r} (first on "
                        f"line {lines[first]}); remove them, or pass duplicates='first', "
                        "'last', 'mean' or 'keep' (command line: --duplicates first, last or mean)")
    return pd.Index(times.to_numpy(), name=name)


def _check_nans(path: Any, df: Any, lines: list[int], nan: str) -> None:
    """Refuse missing values (``nan="refuse"``) or columns with no value at all."""
    mask = df.isna().to_numpy()
    if not mask.any():
        return
    cols = [c for c, m in zip(df.columns, mask.any(axis=0)) if m]
    row = int(np.flatnonzero(mask.any(axis=1))[0])
    if nan == "refuse":
        raise DataError(f"{path}: {int(mask.sum())} missing value(s) in column(s) "
                        f"{', '.join(map(repr, cols))}, first on line {lines[row]}; fill them "
                        "or pass nan='interpolate'")
    empty = [c for c in cols if df[c].isna().all()]
    if empty:
        raise DataError(f"{path}: column {empty[0]!r} has no values at all; remove it")
    logger.info("%s: interpolating %d missing values", path, int(mask.sum()))


def _order(df: Any, path: Any, duplicates: str) -> Any:
    """Apply the duplicate-timestamp policy and sort rows by time (stably)."""
    if duplicates in ("first", "last"):
        df = df[~df.index.duplicated(keep=duplicates)]
    elif duplicates == "mean":
        df = df.groupby(level=0, sort=False).mean()
    if not df.index.is_monotonic_increasing:
        logger.info("%s: rows are not in time order; sorting them", path)
        df = df.sort_index(kind="stable")
    return df


def read_series_csv(path: str | os.PathLike, time_col: str | None = None,
                    target: str | Sequence[str] | None = None, *,
                    nan: str = "refuse", duplicates: str = "refuse",
                    delimiter: str | None = None) -> Any:
    """Read a time-series CSV into a float64 ``pandas.DataFrame``, checking it thoroughly.

    Args:
        path: the CSV file (``.gz`` transparently), with a header row.
        time_col: the timestamp column; ``None`` picks a column named timestamp, time, date,
            datetime or ds (any case) when there is one, else the index is 0..N-1. A time
            column of plain numbers (steps, years) gives a numeric index, else datetimes, read
            in one format for the whole column: dates like 03/04/2015 month first (pandas'
            default) unless only day first reads every stamp (a day above 12) or, when both
            do, only day first gives a regular time step.
        target: the value column(s) to keep; ``None`` keeps every other column.
        nan: ``"refuse"`` missing values, or ``"interpolate"`` them (linearly in time; the
            ends take the nearest value).
        duplicates: what to do with rows that repeat a timestamp: ``"refuse"``, keep the
            ``"first"`` or ``"last"``, average them (``"mean"``), or ``"keep"`` all rows.
        delimiter: the field separator (default: tab for ``.tsv``; else a comma, or a semicolon,
            tab or bar when the header has no comma). With ';' a comma in a number is its
            decimal mark ("2,5").

    Returns:
        A DataFrame of the target columns, indexed by time (sorted) when there is a time column;
        ``df.attrs["filled"]`` counts the values ``nan="interpolate"`` filled.

    Raises:
        DataError: ragged rows, unknown columns, non-numeric or infinite values, unparseable or duplicate
            timestamps, or missing values under ``nan="refuse"`` — naming the file and line.
    """
    if nan not in NAN_POLICIES:
        raise ValueError(f"nan must be 'refuse' or 'interpolate', got {nan!r}")
    if duplicates not in _DUPLICATES:
        raise ValueError(f"duplicates must be one of {_DUPLICATES}, got {duplicates!r}")
    pd = _pandas()
    header, rows, delim = read_csv_table(path, delimiter)
    if not rows:
        raise DataError(f"{path}: no data rows after the header; add one row per time step")
    time_col, targets = _pick_columns(path, header, time_col, target)
    lines = [line for line, _ in rows]
    wanted = set(targets) | {time_col}
    cols = {n: [f[j] for _, f in rows] for j, n in enumerate(header) if n in wanted}
    data = {t: _parse_values(path, cols[t], lines, t, decimal_comma=delim == ";") for t in targets}
    index = None if time_col is None else _parse_times(
        path, cols[time_col], lines, time_col, refuse_duplicates=duplicates == "refuse")
    df = pd.DataFrame(data, index=index, columns=targets)
    _check_nans(path, df, lines, nan)  # before reordering, so the line numbers are right
    if index is not None:
        df = _order(df, path, duplicates)
    filled = int(df.isna().to_numpy().sum())
    if filled:
        # Interpolate in time (datetimes) or along the time column's numbers (or positions).
        method = "time" if df.index.dtype.kind == "M" else "index"
        df = df.interpolate(method=method).ffill().bfill()
    df.attrs["filled"] = filled  # how many cells nan="interpolate" filled (a caller may report it)
    return df


def split_series(values: Any, val_fraction: float = 0.1,
                 test_fraction: float = 0.2) -> tuple[Any, Any, Any]:
    """Cut a series (rows = time) into contiguous ``(train, val, test)`` parts, in time order.

    Works on DataFrames, arrays and tensors; the test part is the last ``test_fraction``.
    """
    if not (val_fraction >= 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):  # NaN too
        raise ValueError("need val_fraction, test_fraction >= 0 with a sum below 1")
    n = len(values)
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    a, b = n - n_test - n_val, n - n_test
    take = values.iloc if hasattr(values, "iloc") else values
    return take[:a], take[a:b], take[b:]


class Window(NamedTuple):
    """One example of :class:`WindowDataset`."""

    past: torch.Tensor  # (input_len, F)
    future: torch.Tensor  # (horizon, len(targets))


def _target_indices(values: Any, n_features: int,
                    targets: Sequence[int | str] | None) -> list[int]:
    """Column positions of ``targets`` (names need a DataFrame)."""
    if targets is None:
        return list(range(n_features))
    columns = [str(c) for c in values.columns] if hasattr(values, "columns") else []
    out = []
    if not targets:
        raise ValueError("targets must name at least one column (None: all)")
    for t in targets:
        if not isinstance(t, (str, int, np.integer)) or isinstance(t, bool):
            raise ValueError(f"targets must be column indices (int) or names (str), got {t!r}")
        if isinstance(t, str):
            if t not in columns:
                raise ValueError(f"no target column {t!r}; available: {', '.join(columns)}")
            out.append(columns.index(t))
        elif not 0 <= int(t) < n_features:
            raise ValueError(f"target index {t} out of range for {n_features} features")
        else:
            out.append(int(t))
    return out


class WindowDataset(Dataset):
    """Sliding (past window, future horizon) pairs over a multivariate series.

    Item ``i`` starts at ``s = i * stride``: ``past = x[s : s+input_len]`` (all features) and
    ``future = x[s+input_len : s+input_len+horizon, targets]``.

    Args:
        values: ``(N, F)`` or ``(N,)`` DataFrame, array or tensor, rows in time order.
        input_len: length of the past window.
        horizon: number of future steps to predict.
        stride: step between window starts.
        targets: the predicted features, as column indices or (for a DataFrame) names;
            default all.
        dtype: tensor dtype of the examples.
    """

    def __init__(self, values: Any, input_len: int, horizon: int = 1, *, stride: int = 1,
                 targets: Sequence[int | str] | None = None, dtype: torch.dtype = torch.float32):
        if input_len < 1 or horizon < 1 or stride < 1:
            raise ValueError("input_len, horizon and stride must be >= 1")
        x = as_array(values)
        if x.shape[0] < input_len + horizon:
            raise DataError(f"series has {x.shape[0]} rows but one window needs input_len + "
                            f"horizon = {input_len + horizon}; use shorter windows")
        idx = _target_indices(values, x.shape[1], targets)
        self.x = torch.tensor(x, dtype=dtype)  # (N, F), a copy
        self.input_len, self.horizon, self.stride, self.targets = input_len, horizon, stride, idx

    def __len__(self) -> int:
        return (self.x.shape[0] - self.input_len - self.horizon) // self.stride + 1

    def __getitem__(self, i: int) -> Window:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"window {i} out of range for {n} windows")
        s = (i % n) * self.stride
        cut = s + self.input_len
        return Window(self.x[s:cut], self.x[cut : cut + self.horizon][:, self.targets])
