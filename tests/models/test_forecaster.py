"""Forecaster: leakage-free scaling, exact seasonal forecasts, calibrated intervals, bad input,
bundle round trips. Tiny models and few steps keep every test to a few seconds."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import rnnkit
from rnnkit.errors import ConfigError, DataError
from rnnkit.models.backtest import backtest
from rnnkit.models.forecaster import Forecaster

FAST = dict(hidden_size=8, ensemble=1, max_steps=40, max_time=20.0)


def monthly(values, start="2000-01-01") -> pd.Series:
    return pd.Series(np.asarray(values, dtype=float), pd.date_range(start, periods=len(values), freq="MS"))


def seasonal(n=96, level=10.0):
    t = np.arange(n)
    return monthly(level + np.sin(2 * np.pi * t / 12) + 0.5 * np.cos(4 * np.pi * t / 12))


def test_scaling_sees_only_the_training_part():
    rng = np.random.default_rng(0)
    y = monthly(50 + rng.normal(0, 1, 120))
    x = pd.DataFrame({"temp": rng.normal(0, 1, 120)}, index=y.index)
    y.iloc[-3], x.iloc[-2, 0] = 1e6, 1e6  # huge values in the held-out validation tail
    f = Forecaster(horizon=6, season_length=1, normalize="scale", log="never", val_size=12, **FAST)
    f.fit(y, x)
    es, past = f.scaling_[0]["es"][0], f.scaling_[0]["past"]
    train = y.to_numpy()[:-12]
    assert es["mean"] == pytest.approx(train.mean()) and es["sigma"] == pytest.approx(train.std())
    assert past["shift"][0] == pytest.approx(x["temp"].to_numpy()[:-12].mean())
    assert abs(es["mean"] - 50) < 1 and past["scale"][0] < 2


def test_es_normalisation_ignores_the_validation_tail():
    y = seasonal(120)
    spiked = y.copy()
    spiked.iloc[-5] = 1e6
    a = Forecaster(horizon=6, val_size=12, **FAST).fit(y).scaling_[0]["es"][0]
    b = Forecaster(horizon=6, val_size=12, **FAST).fit(spiked).scaling_[0]["es"][0]
    assert a == b  # alpha, gamma, sigma fitted on the first 108 rows only


def test_pure_seasonal_series_is_forecast_almost_exactly():
    y = seasonal(108)
    f = Forecaster(horizon=12, season_length=12, hidden_size=8, ensemble=1, max_steps=60).fit(y.iloc[:96])
    err = np.abs(f.predict() - y.to_numpy()[96:])
    assert err.max() < 0.02 * np.ptp(y.to_numpy())


@pytest.mark.parametrize("head", ["quantile", "gaussian"])
def test_prediction_intervals_cover_at_their_nominal_rate(head):
    rng = np.random.default_rng(1)
    n, y = 1400, np.zeros(1400)
    for t in range(1, n):
        y[t] = 0.6 * y[t - 1] + rng.normal()
    f = Forecaster(horizon=2, season_length=1, normalize="scale", log="never", head=head,
                   hidden_size=16, ensemble=1, max_steps=400, lr=3e-3, input_len=8).fit(y[:1000])
    inside = []
    for origin in range(1000, n - 2, 4):
        frame = f.predict_frame(y=y[:origin])
        truth = y[origin: origin + 2]
        inside += list((truth >= frame["q0.1"].to_numpy()) & (truth <= frame["q0.9"].to_numpy()))
    assert 0.7 <= np.mean(inside) <= 0.9, np.mean(inside)


def _bad(y, **kw):
    with pytest.raises((DataError, ConfigError)) as info:
        Forecaster(**{**FAST, **kw}).fit(y)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_inputs_each_raise_one_clear_line():
    y = seasonal(60)
    assert "missing timestamp" in _bad(y.drop(y.index[20]), horizon=6)
    assert "duplicate timestamp" in _bad(pd.concat([y, y.iloc[[5]]]).sort_index(), horizon=6)
    irregular = pd.Series(y.to_numpy(), pd.DatetimeIndex(np.sort(
        pd.Timestamp("2000-01-01") + pd.to_timedelta(np.random.default_rng(0).uniform(0, 9e3, 60), "h"))))
    assert "irregular" in _bad(irregular, horizon=6)
    nan = y.copy()
    nan.iloc[[3, 7]] = np.nan
    assert "2 NaN" in _bad(nan, horizon=6)
    assert "horizon=50" in _bad(y, horizon=50)
    assert "no column 'sales'" in _bad(y.to_frame("units"), horizon=6, target="sales")
    assert "constant" in _bad(monthly(np.full(60, 3.0)), horizon=6)
    assert "strategy" in _bad(y, horizon=6, strategy="sideways")
    with pytest.raises(ConfigError, match="unknown option 'hidden'; known options") as info:
        Forecaster(horizon=6, hidden=3)
    assert "ForecasterConfig" not in str(info.value)  # the internal class's TypeError was shown


def test_nan_interpolation_is_counted_and_forecasts_are_finite():
    y = seasonal(60)
    y.iloc[[3, 7]] = np.nan
    f = Forecaster(horizon=6, nan="interpolate", **FAST).fit(y.drop(y.index[30]))
    assert f.fill_counts_ == [3]  # two NaNs and one missing month
    assert np.isfinite(f.predict()).all()


def test_bundle_round_trip_gives_identical_forecasts(tmp_path):
    y = seasonal(80)
    f = Forecaster(horizon=6, hidden_size=8, ensemble=2, max_steps=30).fit(y)
    f.save(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["config.json", "model.safetensors"]
    g = rnnkit.load(tmp_path / "b")
    assert isinstance(g, Forecaster)
    np.testing.assert_array_equal(f.predict(), g.predict())
    pd.testing.assert_frame_equal(f.predict_frame(), g.predict_frame())
    assert g.predict_frame().index[0] == pd.Timestamp("2006-09-01")  # continues the months
    np.testing.assert_array_equal(f.predict(y=y.iloc[:70]), g.predict(y=y.iloc[:70]))


def test_recursive_strategy_round_trip_and_shapes(tmp_path):
    y = seasonal(80)
    f = Forecaster(horizon=5, strategy="recursive", n_samples=50, **FAST).fit(y)
    f.save(tmp_path / "r")
    frame = rnnkit.load(tmp_path / "r").predict_frame()
    pd.testing.assert_frame_equal(frame, f.predict_frame())
    assert (frame["q0.05"] <= frame["median"]).all() and (frame["median"] <= frame["q0.95"]).all()


def test_multivariate_global_and_covariates():
    y = seasonal(80)
    frame = pd.DataFrame({"a": y, "b": y * 2 + 1, "promo": np.arange(80) % 3}, index=y.index)
    f = Forecaster(horizon=4, target="a,b", future_covariates="promo", **FAST)
    f.fit(frame[["a", "b"]], frame[["promo"]])
    with pytest.raises(DataError, match="future rows"):
        f.predict()
    out = f.predict(pd.DataFrame({"promo": [0, 1, 2, 0]}))
    assert out.shape == (4, 2) and np.isfinite(out).all()
    g = Forecaster(horizon=4, **FAST).fit([y, y * 3], static=[[0.0], [1.0]])
    preds = g.predict()
    assert len(preds) == 2 and preds[1].shape == (4,)
    assert set(g.predict_frame()["series"]) == {0, 1}


def test_global_model_over_differently_named_series():
    """``[df["a"], df["b"]]``: one target per series may be named anything; several must match."""
    y = seasonal(80)
    f = Forecaster(horizon=4, **FAST).fit([y.rename("north"), (y * 2).rename("south")])
    assert [p.shape for p in f.predict()] == [(4,), (4,)]
    assert len(f.predict(y=[y.rename("east"), y.rename("west")])) == 2
    two = pd.DataFrame({"a": y, "b": y + 1}, index=y.index)
    with pytest.raises(DataError, match=r"y\[1\]: columns .* differ from the first series'"):
        Forecaster(horizon=4, **FAST).fit([two, two.rename(columns={"b": "c"})])


def test_backtest_scores_every_model_at_every_origin():
    y = seasonal(84)
    table = backtest(Forecaster(horizon=6, **FAST), y, n_origins=2, baselines=("naive", "seasonal_naive"))
    assert len(table) == 6 and table["mase"].notna().all()
    assert table.loc[table.model == "seasonal_naive", "mase"].max() < 1e-9


def test_interval_calibration_factors_are_stored_and_bounded():
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(size=600)) * 0.1 + 50
    f = Forecaster(horizon=4, season_length=1, calibrate=True, val_size=60, **FAST).fit(y)
    calib = f.fitted_["calibration"]
    assert len(calib) == 99 and all(0.5 <= c <= 3.0 for c in calib) and calib[49] == 1.0
    frame = f.predict_frame()
    assert (frame["q0.1"] <= frame["median"]).all() and (frame["median"] <= frame["q0.9"]).all()


def test_recipe_trains_saves_plots_and_forecasts_from_the_bundle(tmp_path):
    from rnnkit.recipes.forecast import (ForecastDataConfig, ForecastModelConfig, forecast_from_bundle,
                                         train_forecaster)
    csv = tmp_path / "sales.csv"
    seasonal(72).rename("units").rename_axis("date").to_csv(csv)
    model = ForecastModelConfig(hidden_size=8, ensemble=1, max_steps=20)
    data = ForecastDataConfig(csv=str(csv), time_col="date", target="units", horizon=6,
                              baselines="seasonal_naive")
    fc, bundle, metrics = train_forecaster(model, data, tmp_path / "runs", "sales")
    assert bundle == tmp_path / "runs" / "sales" / "bundle"
    assert {"rnnkit", "seasonal_naive"} <= set(metrics["holdout"]["units"])
    for png in ("forecast.png", "holdout.png"):
        assert (tmp_path / "runs" / "sales" / png).stat().st_size > 10_000
    frame = forecast_from_bundle(bundle, str(csv), "date", "units", plot=str(tmp_path / "f.png"))
    np.testing.assert_allclose(frame["median"].to_numpy(), fc.predict())
    assert (tmp_path / "f.png").is_file() and frame.index[0] == pd.Timestamp("2006-01-01")
    # the same name again without a holdout: the first run's holdout.png must not stay as if it were this one's
    train_forecaster(model, dataclasses.replace(data, holdout=False), tmp_path / "runs", "sales")
    assert not (tmp_path / "runs" / "sales" / "holdout.png").exists()
    assert "holdout" not in json.loads((tmp_path / "runs" / "sales" / "metrics.json").read_text())
    with pytest.raises(ConfigError, match="data.nan: expected 'refuse' or 'interpolate', got 'drop'"):
        ForecastDataConfig(csv=str(csv), nan="drop")


def test_recipe_refuses_a_column_in_two_roles_and_takes_a_duplicates_policy(tmp_path):
    """--target sales --covariates sales,units read the column twice and crashed with a pandas
    AttributeError (after creating the run folder); duplicate timestamps had no CLI option."""
    from rnnkit.recipes.forecast import ForecastDataConfig, ForecastModelConfig, train_forecaster
    for kw in (dict(target="sales", covariates="sales,units"), dict(covariates="units", future_covariates="units")):
        with pytest.raises(ConfigError, match="'(sales|units)' is named as .* expected each column in one role"):
            ForecastDataConfig(csv="x.csv", **kw)
    with pytest.raises(ConfigError, match="data.duplicates"):
        ForecastDataConfig(csv="x.csv", duplicates="keep")
    stamps = pd.date_range("2020-01-01", periods=48, freq="MS")
    csv = tmp_path / "d.csv"
    csv.write_text("date,sales\n" + "".join(f"{t:%Y-%m-%d},{10 + i % 3}\n" for i, t in enumerate(stamps))
                   + f"{stamps[-1]:%Y-%m-%d},99\n")
    data = ForecastDataConfig(csv=str(csv), time_col="date", horizon=6, holdout=False)
    with pytest.raises(DataError, match="duplicate timestamp .*--duplicates"):
        train_forecaster(ForecastModelConfig(max_steps=5, ensemble=1), data, tmp_path, "dup")
    fc, _, metrics = train_forecaster(ForecastModelConfig(max_steps=5, ensemble=1),
                                      ForecastDataConfig(csv=str(csv), time_col="date", horizon=6, holdout=False,
                                                         duplicates="last"), tmp_path, "dup")
    assert metrics["rows"] == 48


def test_defaults_work_on_a_40_point_monthly_series():
    y = monthly(100 + 10 * np.sin(2 * np.pi * np.arange(40) / 12) + np.arange(40) * 0.5)
    f = Forecaster(horizon=12, ensemble=2, max_steps=60).fit(y)
    assert f.fitted_["season_length"] == 12 and f.fitted_["val_size"] == 0
    out = f.predict_frame()
    assert np.isfinite(out.to_numpy()).all() and len(out) == 12
    assert np.abs(out["median"].to_numpy() - y.to_numpy()[-12:] - 6).max() < 8  # roughly on trend


def test_a_fit_without_validation_tail_saves_and_loads(tmp_path):
    """40 monthly points, horizon 12: no validation tail, so no validation loss (None, not inf,
    which config.json cannot hold); the recipe behind ``rnnkit train forecast`` writes the bundle."""
    from rnnkit.recipes.forecast import ForecastDataConfig, ForecastModelConfig, train_forecaster
    csv = tmp_path / "m40.csv"
    monthly(100 + 10 * np.sin(2 * np.pi * np.arange(40) / 12)).rename("units").rename_axis("date").to_csv(csv)
    model = ForecastModelConfig(hidden_size=8, ensemble=1, max_steps=30)
    data = ForecastDataConfig(csv=str(csv), time_col="date", horizon=12, holdout=False)
    fc, bundle, _ = train_forecaster(model, data, tmp_path / "runs", "m40")
    assert fc.fitted_["val_size"] == 0 and fc.fitted_["input_len"] == 13  # as docs/forecasting.md says
    assert fc.fitted_["train"][0]["val_loss"] is None
    again = rnnkit.load(bundle)
    np.testing.assert_array_equal(again.predict(), fc.predict())
    pd.testing.assert_frame_equal(again.predict_frame(), fc.predict_frame())


def test_target_and_columns_left_to_forecast():
    y = seasonal(60)
    frame = pd.DataFrame({"a": y, "b": y + 1}, index=y.index)
    with pytest.raises(ConfigError, match="target and future_covariates: expected different columns, got 'a'"):
        Forecaster(horizon=6, target="a", future_covariates=("a",), **FAST)
    assert "no target column left" in _bad(frame, horizon=6, future_covariates="a,b")
    assert "0 rows" in _bad(pd.Series([], dtype=float), horizon=6)


def test_recipe_refuses_a_csv_whose_every_column_is_a_covariate(tmp_path):
    from rnnkit.recipes.forecast import ForecastDataConfig, ForecastModelConfig, train_forecaster
    csv = tmp_path / "one.csv"
    seasonal(60).rename("sales").rename_axis("date").to_csv(csv)
    data = ForecastDataConfig(csv=str(csv), time_col="date", horizon=6, covariates="sales")
    with pytest.raises(DataError, match=r"no target column left: every column \(sales\) is a covariate"):
        train_forecaster(ForecastModelConfig(hidden_size=8, ensemble=1, max_steps=5), data, tmp_path / "runs")


def test_global_model_refuses_series_of_different_time_steps():
    y = seasonal(60)
    daily = pd.Series(np.random.default_rng(0).random(100) + 1, pd.date_range("2020-01-01", periods=100, freq="D"))
    assert "y[1]: frequency 'D' differs from y[0]'s frequency 'MS'" in _bad([y, daily], horizon=6)
    assert "y[1]: no time index (positions) differs" in _bad([y, y.to_numpy()], horizon=6)


def test_time_index_kinds_in_predict_frame():
    rng = np.random.default_rng(0)
    values = 100 + 10 * np.sin(2 * np.pi * np.arange(80) / 10) + rng.normal(size=80)
    years = pd.Series(values, pd.Index(np.arange(1900, 1980), name="year"))
    f = Forecaster(horizon=5, season_length=10, **FAST).fit(years)
    assert list(f.predict_frame().index) == [1980, 1981, 1982, 1983, 1984]  # continued by its step
    assert list(f.predict_frame(y=years.iloc[::2]).index) == [1980, 1982, 1984, 1986, 1988]
    irregular = pd.Series(values, np.arange(80) * 0.5)  # non-integer: positions
    frame = Forecaster(horizon=5, season_length=10, **FAST).fit(irregular).predict_frame()
    assert list(frame.index) == [80, 81, 82, 83, 84]
    y = seasonal(60)
    periods = Forecaster(horizon=3, **FAST).fit(pd.Series(y.to_numpy(), y.index.to_period("M")))
    assert periods.fitted_["season_length"] == 12
    assert list(periods.predict_frame().index) == list(pd.date_range("2005-01-01", periods=3, freq="MS"))


def test_season_of_business_days_is_five():
    from rnnkit.models._ts_input import season_from_index
    assert season_from_index(pd.bdate_range("2020-01-01", periods=200)) == 5
    assert season_from_index(pd.date_range("2020-01-01", periods=200, freq="D")) == 7


def test_calibrate_warns_when_the_validation_tail_is_too_short(caplog):
    with caplog.at_level("WARNING", logger="rnnkit.models.forecaster"):
        f = Forecaster(horizon=12, calibrate=True, **FAST).fit(seasonal(96))
    assert f.fitted_["calibration"] == [1.0] * 99
    assert any("calibrate=True needs at least 100 validation targets, got 12" in r.getMessage()
               for r in caplog.records)


def test_a_flat_list_of_numbers_is_one_series():
    f = Forecaster(horizon=6, season_length=1, **FAST).fit(list(range(1, 101)))
    out = f.predict()
    assert isinstance(out, np.ndarray) and out.shape == (6,) and np.isfinite(out).all()
    assert list(f.predict_frame().index) == list(range(100, 106))


def test_backtest_refuses_what_it_cannot_score_in_one_line():
    y = seasonal(84)
    frame = pd.DataFrame({"a": y, "b": y + 1})

    def bad(error, *args, **kw):
        with pytest.raises(error) as info:
            backtest(*args, **kw)
        assert "\n" not in str(info.value)
        return str(info.value)

    fc = Forecaster(horizon=6, **FAST)
    assert "got a DataFrame with 2 columns" in bad(DataError, fc, frame, n_origins=1)
    assert "got a list of 2 series" in bad(DataError, fc, [y, y], n_origins=1)
    assert "baselines: expected some of" in bad(ConfigError, fc, y, n_origins=1, baselines=("prophet",))
    fut = Forecaster(horizon=6, future_covariates=("promo",), **FAST)
    assert "future_covariates=('promo',)" in bad(ConfigError, fut, y, n_origins=1)
    assert "n_origins: expected a positive int, got 0" in bad(ConfigError, fc, y, n_origins=0)


def test_a_float64_forecaster_predicts_and_loads(tmp_path):
    """.double() saved and loaded as float64 but predict fed it float32 inputs (a dtype error)."""
    y = monthly(10 + 3 * np.sin(np.arange(60) / 1.9))
    fc = Forecaster(horizon=6, max_steps=20, ensemble=1).fit(y)
    before = fc.predict()
    fc.double()
    np.testing.assert_allclose(fc.predict(), before, atol=1e-5)
    fc.save(tmp_path / "f")
    from rnnkit.export import load
    np.testing.assert_allclose(load(tmp_path / "f").predict(), before, atol=1e-5)  # rnnkit.export.load too


def test_new_history_at_another_time_step_is_refused():
    """Weekly or quarterly history for a monthly model was forecast with the monthly season and
    calendar and indexed weekly; daily history failed inside the network ('expected input with 3
    features ... got 5'). Month-start and month-end data are the same step."""
    y = monthly(100 + 10 * np.sin(2 * np.pi * np.arange(60) / 12))
    f = Forecaster(horizon=6, ensemble=1, max_steps=5, hidden_size=8).fit(y)
    month_end = pd.Series(y.to_numpy(), pd.date_range("2010-01-31", periods=60, freq="ME"))
    assert f.predict(y=month_end).shape == (6,)
    for freq in ("W-SUN", "QS-JAN", "D"):
        other = pd.Series(y.to_numpy(), pd.date_range("2010-01-01", periods=60, freq=freq))
        with pytest.raises(DataError, match=f"its time step \\(frequency '{freq}'\\) differs from the fitted "
                                            "series' \\(frequency 'MS'\\)"):
            f.predict(y=other)
    with pytest.raises(DataError, match=r"its time step \(no time index \(positions\)\) differs"):
        f.predict(y=y.to_numpy())


def test_future_covariates_from_a_csv_must_cover_the_forecast_rows(tmp_path):
    """`rnnkit forecast --future-csv` took the file's rows in order whatever their dates (2030, daily,
    for a monthly forecast of 2006)."""
    from rnnkit.recipes.forecast import (ForecastDataConfig, ForecastModelConfig, forecast_from_bundle,
                                         train_forecaster)
    y = seasonal(72)
    frame = pd.DataFrame({"units": y.to_numpy(), "promo": np.arange(72) % 3 == 0}, index=y.index)
    csv = tmp_path / "sales.csv"
    frame.astype(float).rename_axis("date").to_csv(csv)
    data = ForecastDataConfig(csv=str(csv), time_col="date", target="units", future_covariates="promo",
                              horizon=4, holdout=False)
    _, bundle, _ = train_forecaster(ForecastModelConfig(hidden_size=8, ensemble=1, max_steps=5), data,
                                    tmp_path / "runs", "promo")
    ahead = pd.date_range(y.index[-1], periods=5, freq="MS")[1:]
    good, bad = tmp_path / "future.csv", tmp_path / "wrong.csv"
    pd.DataFrame({"promo": [1.0, 0, 0, 1]}, index=ahead).rename_axis("date").to_csv(good)
    pd.DataFrame({"promo": [1.0, 0, 0, 1]}, index=pd.date_range("2030-01-01", periods=4, freq="D")
                 ).rename_axis("date").to_csv(bad)
    assert len(forecast_from_bundle(bundle, str(csv), "date", future_csv=str(good))) == 4
    # a repeated row in the future file takes the --duplicates policy, as the history's rows do (it was
    # always refused)
    twice = tmp_path / "twice.csv"
    rows = pd.DataFrame({"promo": [1.0, 0, 0, 0, 1]}, index=ahead.insert(1, ahead[1])).rename_axis("date")
    rows.to_csv(twice)  # the second month twice, with the good file's value
    with pytest.raises(DataError, match="duplicate timestamp"):
        forecast_from_bundle(bundle, str(csv), "date", future_csv=str(twice))
    pd.testing.assert_frame_equal(forecast_from_bundle(bundle, str(csv), "date", future_csv=str(twice),
                                                       duplicates="last"),
                                  forecast_from_bundle(bundle, str(csv), "date", future_csv=str(good)))
    with pytest.raises(DataError, match=r"wrong.csv: no row for the forecast.s timestamp 2006-01-01 00:00:00 .*"
                                        r"the rows 2030-01-01 00:00:00 .. 2030-01-04"):
        forecast_from_bundle(bundle, str(csv), "date", future_csv=str(bad))


def test_step_keys_of_the_same_time_step_agree():
    """'7D' and 'W-SUN' (a weekly CSV read with and without pandas' anchor) were different steps; so were
    'h' and an older pandas' 'H' stored in a bundle, and '2M' lost its multiple."""
    from rnnkit.models._ts_input import step_key
    same = [("W-SUN", "7D"), ("W-MON", "W"), ("h", "H"), ("60min", "h"), ("T", "min"), ("MS", "ME"),
            ("ME", "M"), ("2MS", "2M"), ("YS", "YE")]
    for a, b in same:
        assert step_key(a) == step_key(b), (a, b)
    for a, b in (("MS", "2MS"), ("W", "14D"), ("D", "B"), ("h", "30min"), ("QS", "MS")):
        assert step_key(a) != step_key(b), (a, b)


@pytest.mark.parametrize("damage", [lambda f: f.update(series=None), lambda f: f["series"][0].pop("state"),
                                    lambda f: f.update(n_members="2"), lambda f: f["spec"].update(n_series=3)])
def test_a_damaged_fitted_record_is_refused_at_load(damage, tmp_path):
    """It loaded, then the first forecast failed on "object of type 'NoneType' has no len()"."""
    y = 10 + np.sin(np.arange(60) * 2 * np.pi / 12)
    Forecaster(horizon=6, season_length=12, **FAST).fit(y).save(tmp_path / "b")
    path = tmp_path / "b" / "config.json"
    data = json.loads(path.read_text())
    damage(data["config"]["fitted"])
    path.write_text(json.dumps(data))
    with pytest.raises(rnnkit.errors.CheckpointError, match="'fitted' record is damaged"):
        rnnkit.load(tmp_path / "b")


def test_a_bundle_saved_before_int_index_was_recorded_loads(tmp_path):
    y = 10 + np.sin(np.arange(60) * 2 * np.pi / 12)
    fc = Forecaster(horizon=6, season_length=12, **FAST).fit(y)
    fc.save(tmp_path / "b")
    path = tmp_path / "b" / "config.json"
    data = json.loads(path.read_text())
    for record in data["config"]["fitted"]["series"]:
        del record["int_index"]
    path.write_text(json.dumps(data))
    np.testing.assert_allclose(rnnkit.load(tmp_path / "b").predict(), fc.predict())


def test_values_at_or_below_zero_are_refused_where_the_model_works_in_logs():
    y = seasonal(80)
    f = Forecaster(horizon=6, **FAST).fit(y)
    assert f.scaling_[0]["es"][0]["log"]
    bad = y.copy()
    bad.iloc[[-5, -2]] = [0.0, -3.0]
    with pytest.raises(DataError, match="works in logs of target .* 2 value\\(s\\) are <= 0, first 0 at "
                                        "2006-04-01") as info:
        f.predict(y=bad)
    assert "\n" not in str(info.value)
    # a zero in the validation tail only: the smoothing is fitted without logs, not on log(1e-12)
    g = Forecaster(horizon=6, val_size=12, **FAST).fit(bad)
    assert not g.scaling_[0]["es"][0]["log"]
    assert np.isfinite(g.predict()).all() and g.predict().min() > 5


def test_default_rnn_weight_keeps_a_future_covariates_whole_effect(tmp_path):
    rng = np.random.default_rng(0)
    n = 240
    promo = (rng.random(n) < 0.3).astype(float)
    y = monthly(10 + np.sin(2 * np.pi * np.arange(n) / 12) + 3 * promo + 0.1 * rng.normal(size=n), "2005-01-01")
    cov = pd.DataFrame({"promo": promo}, index=y.index)
    f = Forecaster(6, 12, future_covariates="promo", ensemble=1, max_steps=400).fit(y, cov)
    future = pd.date_range("2025-01-01", periods=6, freq="MS")
    effect = f.predict(pd.DataFrame({"promo": [1.0] * 6}, future)) - f.predict(pd.DataFrame({"promo": [0.0] * 6}, future))
    assert f.fitted_["rnn_weight"] == 1.0 and abs(effect.mean() - 3.0) < 0.3  # was 2.0 with the 0.7 blend
    f.save(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["config"]["fitted"]["rnn_weight"] == 1.0
    # no covariates: the combination with the smoothing forecast as before; an explicit value is kept
    assert Forecaster(6, **FAST).fit(seasonal(80)).fitted_["rnn_weight"] == 0.7
    assert Forecaster(6, 12, future_covariates="promo", rnn_weight=0.5, **FAST).fit(y, cov).fitted_["rnn_weight"] == 0.5


def test_yyyymmdd_integers_are_read_as_dates_other_integers_as_positions(caplog):
    days = pd.date_range("2023-01-01", periods=70, freq="D")
    values = 10 + np.sin(2 * np.pi * np.arange(70) / 7)
    y = pd.Series(values, index=pd.Index(days.strftime("%Y%m%d").astype(int), name="when"))
    with caplog.at_level("INFO"):
        f = Forecaster(horizon=7, **FAST).fit(y)
    assert "YYYYMMDD integers (20230101 ... 20230311); read as dates" in caplog.text
    assert f.fitted_["season_length"] == 7 and f.fitted_["n_calendar"] > 0
    assert f.predict_frame().index[0] == pd.Timestamp("2023-03-12")
    years = pd.Series(values, index=np.arange(1900, 1970))  # counts in years: continued, not dates
    assert Forecaster(horizon=7, **FAST).fit(years).predict_frame().index[0] == 1970
    not_dates = pd.Series(values, index=np.arange(20230101, 20230171))  # 20230132 is no date
    g = Forecaster(horizon=7, **FAST).fit(not_dates)
    assert g.fitted_["season_length"] == 1 and g.predict_frame().index[0] == 20230171


def test_dated_covariates_are_matched_to_the_series_by_timestamp():
    y = seasonal(80)
    promo = pd.DataFrame({"promo": (np.arange(90) % 3 == 0).astype(float)},
                         index=pd.date_range(y.index[0], periods=90, freq="MS"))  # 10 rows beyond y: fine
    f = Forecaster(horizon=4, future_covariates="promo", **FAST).fit(y, promo)
    shifted = promo.set_axis(promo.index + pd.DateOffset(years=3))
    with pytest.raises(DataError, match=r"y covariates: no row for y's timestamp 2000-01-01 00:00:00 \(36 of 80 "
                                        r"missing") as info:
        Forecaster(horizon=4, future_covariates="promo", **FAST).fit(y, shifted)
    assert "\n" not in str(info.value)
    ahead = promo.iloc[80:84]  # the four months after y, by date
    np.testing.assert_array_equal(f.predict(ahead), f.predict(promo))  # the rows at the forecast's dates
    np.testing.assert_array_equal(f.predict(ahead), f.predict(ahead.to_numpy()))  # an array: in order
    with pytest.raises(DataError, match=r"covariates: no row for the forecast's timestamp 2006-09-01"):
        f.predict(ahead.set_axis(pd.date_range("2030-01-01", periods=4, freq="D")))


def test_a_season_longer_than_the_history_allows_is_refused():
    y = seasonal(40)
    with pytest.raises(DataError, match=r"y: season_length=100 needs at least two seasons \(200 rows\) to fit the "
                                        r"smoothing's seasonal indices on, got 34 \(40 rows less the validation "
                                        r"tail of 6\)") as info:
        Forecaster(6, 100, **FAST).fit(y)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="season_length=20 needs at least two seasons"):
        Forecaster(6, 20, val_size=6, **FAST).fit(y)  # 34 rows to fit on: one season and a half
    assert Forecaster(6, 17, val_size=6, **FAST).fit(y).scaling_[0]["es"][0]["season_length"] == 17


def test_static_covariates_that_are_not_numbers_are_one_data_error():
    a, b = seasonal(60), seasonal(60, level=20.0)
    with pytest.raises(DataError, match=r"static: expected static covariates as 2 row\(s\) of numbers .*could not "
                                        r"convert string to float: 'x'") as info:
        Forecaster(6, **FAST).fit([a, b], static=[[0.0], ["x"]])
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="static: expected static covariates as 2 row"):
        Forecaster(6, **FAST).fit([a, b], static=[[0.0], [1.0, 2.0]])  # ragged


def test_a_global_models_frame_names_its_series(tmp_path):
    north, south = seasonal(60).rename("north"), seasonal(60, level=20.0).rename("south")
    f = Forecaster(horizon=3, **FAST).fit([north, south])
    assert f.predict_frame()["series"].tolist() == ["north"] * 3 + ["south"] * 3
    f.save(tmp_path / "b")
    assert rnnkit.load(tmp_path / "b").predict_frame()["series"].tolist() == ["north"] * 3 + ["south"] * 3
    frames = Forecaster(horizon=3, **FAST).fit([north.to_frame(), south.to_frame("west")]).predict_frame()
    assert frames["series"].unique().tolist() == ["north", "west"]
    unnamed = Forecaster(horizon=3, **FAST).fit([north, south.rename("north")]).predict_frame()
    assert unnamed["series"].unique().tolist() == [0, 1]  # two alike: positions
    assert Forecaster(horizon=3, **FAST).fit([north.rename(None), south]).predict_frame()["series"].iloc[-1] == 1


def test_an_unfitted_model_is_not_saved(tmp_path):
    from rnnkit.models.anomaly import AnomalyDetector
    with pytest.raises(ConfigError, match=r"Forecaster is not fitted; call fit\(y\) first \(before predict or save\)"):
        Forecaster(horizon=6).save(tmp_path / "f")
    with pytest.raises(ConfigError, match="AnomalyDetector is not fitted"):
        AnomalyDetector().save(tmp_path / "d")
    assert not (tmp_path / "f").exists() and not (tmp_path / "d").exists()


def test_plots_keep_the_legend_off_the_data_and_name_target_run_and_time_column(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from rnnkit.recipes._forecast_plots import plot_detection, plot_forecast
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep each figure to look at
    y = seasonal(60).rename_axis("date").to_frame("sales")
    ahead = pd.date_range("2005-01-01", periods=6, freq="MS")
    frame = pd.DataFrame({"median": 10.0, "q0.05": 9.0, "q0.1": 9.5, "q0.9": 10.5, "q0.95": 11.0}, index=ahead)
    plot_forecast(y, frame, tmp_path / "f.png", source="run sales")
    plot_detection(y["sales"], [], tmp_path / "d.png", title="sales: anomaly detection (run x)",
                   scores=np.ones(60), thresholds=np.full(60, 4.0))
    for fig in figures:
        fig.canvas.draw()
        for ax in fig.axes:
            legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
            assert legend.x0 >= box.x1 or legend.y1 <= box.y0  # beside or below the axes, never on the data
    forecast, detection = figures[0].axes[0], figures[1].axes
    assert forecast.get_title() == "sales: 6-step forecast (run sales)" and forecast.get_xlabel() == "date"
    assert detection[0].get_title() == "sales: anomaly detection (run x), 0 window(s) detected"
    assert detection[-1].get_xlabel() == "date"


def test_a_time_zone_is_kept_in_forecasts_and_bundles(tmp_path):
    hours = pd.date_range("2024-03-28", periods=120, freq="h", tz="Europe/Paris")  # across the DST change
    y = pd.Series(10 + np.sin(2 * np.pi * np.arange(120) / 24), hours)
    f = Forecaster(horizon=4, season_length=24, **FAST).fit(y)
    index = f.predict_frame().index
    assert str(index.tz) == "Europe/Paris" and index[0] == hours[-1] + pd.Timedelta("1h")
    f.save(tmp_path / "b")
    assert str(rnnkit.load(tmp_path / "b").predict_frame().index.tz) == "Europe/Paris"
    across = Forecaster(horizon=4, season_length=24, **FAST).fit(y.iloc[:75])  # the last two stamps: +01:00, +02:00
    assert [t.utcoffset().seconds // 3600 for t in hours[73:75]] == [1, 2]
    assert across.predict_frame().index[0] == hours[75]
