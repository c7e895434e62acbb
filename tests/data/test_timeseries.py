"""Tests of rnnkit.data.timeseries and scaling: checked CSVs, windows, leak-free scaling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")

from rnnkit.data import (  # noqa: E402
    Scaler,
    WindowDataset,
    load_dataset,
    read_series_csv,
    split_series,
)
from rnnkit.errors import DataError  # noqa: E402

GOOD = "timestamp,load,temp\n2024-01-01 00:00,1,10\n2024-01-01 01:00,2,11\n2024-01-01 02:00,4,12\n"


def _write(tmp_path, content: str, name: str = "series.csv"):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


# -- reading ------------------------------------------------------------------------------
def test_read_series_csv_detects_time_and_keeps_targets(tmp_path):
    df = read_series_csv(_write(tmp_path, GOOD))
    assert list(df.columns) == ["load", "temp"] and df.index.name == "timestamp"
    assert df.index[1] == pd.Timestamp("2024-01-01 01:00")
    assert df.dtypes.tolist() == [np.float64, np.float64]
    one = read_series_csv(_write(tmp_path, GOOD), target="temp")
    assert one["temp"].tolist() == [10.0, 11.0, 12.0]
    plain = read_series_csv(_write(tmp_path, "a,b\n1,2\n3,4\n"))
    assert plain.index.tolist() == [0, 1] and plain["b"].tolist() == [2.0, 4.0]


@pytest.mark.parametrize(
    ("content", "kwargs", "pattern"),
    [
        (GOOD + "2024-01-01 03:00,5\n", {}, r"series.csv line 5: 2 fields but the header has 3"),
        (GOOD, {"target": ["load", "pressure"]},
         r"series.csv: no column 'pressure'; available columns: timestamp, load, temp"),
        (GOOD, {"time_col": "when"}, r"no time column 'when'; available columns: timestamp"),
        (GOOD + "2024-01-01 03:00,high,13\n", {},
         r"series.csv line 5: column 'load' holds 'high', not a number"),
        (GOOD + "yesterday,5,13\n", {}, r"series.csv line 5: cannot parse timestamp 'yesterday'"),
        (GOOD + "2024-01-01 01:00,5,13\n", {},
         r"series.csv line 5: duplicate timestamp '2024-01-01 01:00' \(first on line 3\)"),
        (GOOD + "2024-01-01 03:00,,13\n2024-01-01 04:00,NaN,\n", {},
         r"series.csv: 3 missing value\(s\) in column\(s\) 'load', 'temp', first on line 5; "
         r"fill them or pass nan='interpolate'"),
        ("timestamp,load\n", {}, r"series.csv: no data rows"),
    ],
)
def test_read_series_csv_refuses_bad_data(tmp_path, content, kwargs, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        read_series_csv(_write(tmp_path, content), **kwargs)
    assert "\n" not in str(info.value)


def test_read_series_csv_interpolates_in_time_and_sorts(tmp_path):
    content = ("date,v\n2024-01-04,7\n2024-01-01,1\n2024-01-02,\n2024-01-05,\n")
    df = read_series_csv(_write(tmp_path, content), nan="interpolate")
    assert df.index.is_monotonic_increasing
    # 01-02 lies between 01-01 (1) and 01-04 (7): a third of the way in time.
    assert df["v"].tolist() == [1.0, 3.0, 7.0, 7.0]


def test_read_series_csv_duplicate_policies(tmp_path):
    path = _write(tmp_path, "time,v\n1,1\n2,2\n2,4\n3,3\n")
    assert read_series_csv(path, duplicates="first")["v"].tolist() == [1, 2, 3]
    assert read_series_csv(path, duplicates="last")["v"].tolist() == [1, 4, 3]
    assert read_series_csv(path, duplicates="mean")["v"].tolist() == [1, 3, 3]
    assert read_series_csv(path, duplicates="keep")["v"].tolist() == [1, 2, 4, 3]


def test_read_series_csv_reads_day_first_dates_in_one_format(tmp_path):
    """13/01/2015 means the whole column is day first: 02/01/2015 is then the 2nd of January,
    not the 1st of February (what parsing each stamp on its own gave)."""
    days = pd.date_range("2015-01-01", periods=40, freq="D")
    daily = "d,v\n" + "".join(f"{t:%d/%m/%Y},{i}\n" for i, t in enumerate(days))
    df = read_series_csv(_write(tmp_path, daily), time_col="d")
    assert df.index.equals(pd.DatetimeIndex(days, name="d")) and df["v"].tolist() == list(range(40))
    us = "d,v\n" + "".join(f"{t:%m/%d/%Y},{i}\n" for i, t in enumerate(days))
    assert read_series_csv(_write(tmp_path, us), time_col="d").index.equals(pd.DatetimeIndex(days, name="d"))
    # 01/02/2015 ... 01/12/2015: both readings parse; only day first gives a regular time step
    months = pd.date_range("2015-01-01", periods=24, freq="MS")
    monthly = "d,v\n" + "".join(f"{t:%d/%m/%Y},{i}\n" for i, t in enumerate(months))
    assert read_series_csv(_write(tmp_path, monthly), time_col="d").index.equals(pd.DatetimeIndex(months, name="d"))


def test_read_series_csv_never_reads_iso_dates_day_first(tmp_path):
    """Year-first stamps have one reading. pandas' dayfirst=True turns 2015-03-04 into the 3rd of
    April, and for these irregular stamps that reading had the regular time step, so it was taken."""
    stamps = ["2015-03-04", "2015-04-12", "2015-06-11"]
    df = read_series_csv(_write(tmp_path, "d,v\n" + "".join(f"{t},{i}\n" for i, t in enumerate(stamps))),
                         time_col="d")
    assert df.index.equals(pd.DatetimeIndex(stamps, name="d"))


def test_read_series_csv_reads_semicolon_files_with_decimal_commas(tmp_path):
    df = read_series_csv(_write(tmp_path, "date;load;temp\n2024-01-01;1,5;10\n2024-01-02;2;-0,25\n"))
    assert list(df.columns) == ["load", "temp"] and df["load"].tolist() == [1.5, 2.0]
    assert df["temp"].tolist() == [10.0, -0.25]
    # a comma file keeps "1,5" a mistake (a thousands separator? a decimal mark?), not a guess
    with pytest.raises(DataError, match="holds '1,5', not a number"):
        read_series_csv(_write(tmp_path, 'date,load\n2024-01-01,"1,5"\n'))


# -- windows ------------------------------------------------------------------------------
def test_window_dataset_pairs_past_and_future():
    x = torch.arange(20.0).view(10, 2)  # feature 0: 0, 2, 4, ...; feature 1: 1, 3, 5, ...
    ds = WindowDataset(x, input_len=3, horizon=2, stride=2, targets=[1])
    assert len(ds) == 3  # starts 0, 2, 4 (each needs 5 rows)
    past, future = ds[1]
    assert torch.equal(past, x[2:5]) and torch.equal(future, x[5:7, 1:])
    batch = torch.utils.data.default_collate([ds[0], ds[2]])
    assert batch.past.shape == (2, 3, 2) and batch.future.shape == (2, 2, 1)
    frame = pd.DataFrame(x.numpy(), columns=["a", "b"])
    assert torch.equal(WindowDataset(frame, 3, 2, targets=["b"])[0].future, x[3:5, 1:])
    with pytest.raises(DataError, match="series has 10 rows but one window needs"):
        WindowDataset(x, input_len=8, horizon=3)


# -- scaling ------------------------------------------------------------------------------
def test_scaler_sees_only_the_training_part():
    rng = np.random.default_rng(0)
    series = np.concatenate([rng.normal(5, 2, (80, 2)), rng.normal(100, 30, (20, 2))])
    train, val, test = split_series(series, val_fraction=0.1, test_fraction=0.1)
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    scaler = Scaler("standard").fit(train)
    np.testing.assert_allclose(scaler.shift, train.mean(axis=0))
    np.testing.assert_allclose(scaler.scale, train.std(axis=0))
    scaled = scaler.transform(train)
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-12)
    # Changing the test part changes nothing about how training data is scaled.
    series[90:] = 1e6
    again = Scaler("standard").fit(split_series(series, 0.1, 0.1)[0])
    np.testing.assert_array_equal(again.shift, scaler.shift)
    assert scaler.transform(test).mean() > 10  # test data is far outside the training range


def test_scaler_round_trips_types_and_dict():
    frame = pd.DataFrame({"a": [0.0, 5.0, 10.0], "b": [3.0, 3.0, 3.0]})
    scaler = Scaler("minmax").fit(frame)
    out = scaler.transform(frame)
    assert isinstance(out, pd.DataFrame) and out["a"].tolist() == [0.0, 0.5, 1.0]
    assert out["b"].tolist() == [0.0, 0.0, 0.0]  # constant feature: no division by zero
    forecast = torch.tensor([[[0.5], [1.0]]], dtype=torch.float32)  # (B, T, 1) of feature "a"
    restored = scaler.inverse_transform(forecast, features=[0])
    assert restored.dtype == torch.float32 and restored.flatten().tolist() == [5.0, 10.0]
    clone = Scaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(clone.transform(frame.to_numpy()), out.to_numpy())
    np.testing.assert_allclose(scaler.inverse_transform(out), frame)
    with pytest.raises(ValueError, match="not fitted"):
        Scaler().transform([[1.0]])
    with pytest.raises(ValueError, match="fitted on 2 feature"):
        scaler.transform([[1.0, 2.0, 3.0]])


# -- real data ----------------------------------------------------------------------------
def test_nab_series_and_windows(require_dataset):
    require_dataset("nab")
    nab = load_dataset("nab")
    sizes = {name: len(s.data) for name, s in nab.items()}
    assert sizes == {"ambient_temperature_system_failure": 7267,
                     "cpu_utilization_asg_misconfiguration": 18050,
                     "ec2_request_latency_system_failure": 4032,
                     "machine_temperature_system_failure": 22695, "nyc_taxi": 10320}
    taxi = nab["nyc_taxi"]
    assert len(taxi.windows) == 5 and len(taxi.labels) == 5
    assert all(start < label < end for (start, end), label in zip(taxi.windows, taxi.labels))
    assert taxi.data.index.is_monotonic_increasing and not taxi.data.isna().any().any()


def test_read_series_csv_refuses_infinite_values_with_their_count(tmp_path):
    path = _write(tmp_path, "date,v\n2015-01-01,1\n2015-01-02,inf\n2015-01-03,1e400\n2015-01-04,4\n")
    for nan in ("refuse", "interpolate"):
        with pytest.raises(DataError, match=r"2 infinite value\(s\) in column 'v', first on line 3 "
                                            r"\('inf'\)"):
            read_series_csv(path, nan=nan)


def test_scaler_refuses_infinite_data_and_bad_dicts():
    with pytest.raises(ValueError, match="cannot fit a Scaler on infinite values"):
        Scaler().fit([[np.inf], [1.0]])
    for data in ({"kind": "standard", "shift": [0], "scale": [0]},
                 {"kind": "standard", "shift": [np.nan], "scale": [1]},
                 {"kind": "minmax", "shift": [0]}):
        with pytest.raises(ValueError, match="Scaler data needs"):
            Scaler.from_dict(data)


def test_window_targets_and_split_fractions_are_checked():
    x = np.zeros((10, 2))
    for targets, pattern in (([0.7], "got 0.7"), ([True], "got True"), ([], "at least one column")):
        with pytest.raises(ValueError, match=pattern):
            WindowDataset(x, 3, 1, targets=targets)
    assert WindowDataset(x, 3, 1, targets=[np.int64(1)]).targets == [1]
    for fractions in ((float("nan"), 0.2), (0.1, float("nan"))):
        with pytest.raises(ValueError, match="need val_fraction, test_fraction >= 0"):
            split_series(x, *fractions)
