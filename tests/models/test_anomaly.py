"""AnomalyDetector and the window/NAB metrics: tiny models, a few seconds each."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import rnnkit
from rnnkit.errors import ConfigError, DataError
from rnnkit.models.anomaly import AnomalyDetector
from rnnkit.models.anomaly_metrics import nab_normalized, nab_raw_score, scaled_sigmoid, window_metrics

FAST = dict(window=24, hidden_size=16, max_steps=150)


def sine(n=900, seed=0) -> pd.Series:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = np.sin(2 * np.pi * t / 40) + 0.05 * rng.standard_normal(n)
    return pd.Series(values, pd.date_range("2024-01-01", periods=n, freq="h"), name="value")


@pytest.mark.parametrize("method", ["forecast", "reconstruction"])
def test_flags_an_injected_spike_and_nothing_on_a_clean_sine(method):
    clean = sine()
    det = AnomalyDetector(method=method, **FAST).fit(clean.iloc[:400])
    assert det.detect(clean) == []
    spiky = clean.copy()
    spiky.iloc[700] += 2.5
    windows = det.detect(spiky)
    assert len(windows) == 1
    start, end, score = windows[0]
    assert start <= spiky.index[700] <= end + pd.Timedelta("3h") and score > 4


def test_thresholds_fixed_quantile_adaptive():
    y = sine()
    det = AnomalyDetector(threshold="fixed", value=2.5, **FAST).fit(y.iloc[:400])
    scores = det.score(y)
    assert (det.thresholds(scores) == 2.5).all()
    q = AnomalyDetector(threshold="quantile", quantile=0.9, **FAST).fit(y.iloc[:400])
    assert q.thresholds(scores)[0] == pytest.approx(q.fitted_["train_quantile"])
    adaptive = AnomalyDetector(**FAST).fit(y.iloc[:400]).thresholds(scores)
    assert (adaptive >= 4.0).all()


def test_bundle_round_trip_and_bad_input(tmp_path):
    y = sine(600)
    det = AnomalyDetector(**FAST).fit(y)
    det.save(tmp_path / "d")
    again = rnnkit.load(tmp_path / "d")
    np.testing.assert_array_equal(det.score(y), again.score(y))
    with pytest.raises(DataError, match="NaN"):
        det.score(y.where(y.index != y.index[5]))
    with pytest.raises(DataError, match="constant"):
        AnomalyDetector(**FAST).fit(pd.Series(np.ones(200)))
    with pytest.raises(ConfigError, match="threshold"):
        AnomalyDetector(threshold="magic")
    with pytest.raises(ConfigError, match=r"cell: expected one of \('lstm'"):
        AnomalyDetector(method="reconstruction", cell="transformer")
    with pytest.raises(ConfigError, match="history: expected 0 .* at least window=48"):
        AnomalyDetector(history=5)  # pandas' rolling window would fail inside detect()


def test_window_metrics_count_overlaps_and_delay():
    labelled = [(10, 20), (50, 60), (80, 90)]
    detected = [(15, 16, 5.0), (30, 31, 5.0), (45, 52, 6.0)]
    m = window_metrics(detected, labelled)
    assert (m["found"], m["recall"], m["precision"]) == (2, pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert m["delay"] == pytest.approx(2.5)  # 5 steps late, and 0 for the early detection


def test_nab_score_of_perfect_null_and_noisy_detectors():
    times = list(range(1000))
    windows = [(400, 449), (700, 749)]
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5) and scaled_sigmoid(0.0) == 0.0
    none = nab_raw_score(times, np.zeros(1000, bool), windows)
    perfect = np.zeros(1000, bool)
    perfect[[400, 700]] = True
    best = nab_raw_score(times, perfect, windows)
    assert nab_normalized([none["raw"]], [none["windows"]]) == pytest.approx(0.0)
    assert nab_normalized([best["raw"]], [best["windows"]]) == pytest.approx(100.0)
    late = perfect.copy()
    late[[400, 700]], late[[449, 749]] = False, True  # at the windows' last rows
    assert nab_raw_score(times, late, windows)["raw"] < best["raw"]
    noisy = perfect.copy()
    noisy[200] = True  # a false positive before any window costs A_FP = 0.11
    assert nab_raw_score(times, noisy, windows)["raw"] == pytest.approx(best["raw"] - 0.11)


def test_detector_recipe_and_detect_from_bundle(tmp_path):
    from rnnkit.recipes.forecast import DetectDataConfig, DetectorConfig, detect_from_bundle, train_detector
    y = sine(600)
    y.iloc[500] += 3.0
    csv = tmp_path / "sensor.csv"
    y.rename_axis("timestamp").to_csv(csv)
    det, bundle, summary = train_detector(DetectorConfig(**FAST), DetectDataConfig(csv=str(csv), train_fraction=0.5),
                                          tmp_path / "runs", "sensor")
    assert len(summary["windows"]) == 1 and (tmp_path / "runs" / "sensor" / "detection.png").is_file()
    windows = detect_from_bundle(bundle, str(csv), plot=str(tmp_path / "d.png"))
    assert windows == det.detect(y) and (tmp_path / "d.png").is_file()
    # summary.json keeps each window as [ISO start, ISO end, score] with the score a number (it was a string)
    stored = json.loads((tmp_path / "runs" / "sensor" / "summary.json").read_text())["windows"]
    (start, end, score), = windows
    assert stored == [[start.isoformat(), end.isoformat(), pytest.approx(score)]]
    assert isinstance(stored[0][2], float) and pd.Timestamp(stored[0][0]) == start
    # a CSV trained with nan=interpolate is read the same way when detecting from the bundle
    gappy = y.copy()
    gappy.iloc[[100, 550]] = np.nan
    gappy.rename_axis("timestamp").to_csv(csv)
    _, bundle, _ = train_detector(DetectorConfig(**FAST), DetectDataConfig(csv=str(csv), nan="interpolate"),
                                  tmp_path / "runs", "gappy")
    assert isinstance(detect_from_bundle(bundle, str(csv)), list)
    with pytest.raises(ConfigError, match="data.nan: expected 'refuse' or 'interpolate', got 'drop'"):
        DetectDataConfig(csv=str(csv), nan="drop")
    with pytest.raises(ConfigError, match="expected csv or dataset, got both"):
        DetectDataConfig(csv=str(csv), dataset="nab/nyc_taxi")


@pytest.mark.parametrize("method", ["forecast", "reconstruction"])
def test_constant_data_is_scored_and_timestamps_are_asked_for(method):
    y = sine(400)
    det = AnomalyDetector(method=method, **{**FAST, "max_steps": 30}).fit(y)
    flat = pd.Series(0.3, y.index)  # a flat-lining sensor: refused by fit, scored by score/detect
    assert np.isfinite(det.score(flat)).all()
    assert isinstance(det.detect(flat), list)
    if method == "forecast":  # fitted with calendar features of the DatetimeIndex
        with pytest.raises(DataError, match="the detector was fitted with timestamps .* pass y with its DatetimeIndex"):
            det.score(y.to_numpy())


@pytest.mark.parametrize("method", ["forecast", "reconstruction"])
def test_a_spike_beyond_float32_is_flagged_not_skipped(method):
    """A spike of 1e20 made the float32 error inf, which pandas' EWMA skips as missing: the row
    scored like the one before and no window was reported (1e3 and 1e6 were flagged)."""
    clean = sine(500)
    det = AnomalyDetector(method=method, **{**FAST, "max_steps": 40}).fit(clean.iloc[:300])
    for spike in (1e6, 1e20, 1e200):
        y = clean.copy()
        y.iloc[400] = spike
        scores = det.score(y)
        assert np.isfinite(scores).all() and scores[400] > 1e3
        assert any(w.start <= y.index[400] <= w.end for w in det.detect(y))


def test_columns_are_matched_by_name_and_the_time_step_is_checked():
    """Columns were matched by position (swapped columns scored 300x higher, silently) and data at
    another time step (daily for an hourly fit) scored with the wrong calendar features."""
    rng = np.random.default_rng(1)
    idx = pd.date_range("2024-01-01", periods=400, freq="h")
    t = np.arange(400)
    frame = pd.DataFrame({"temp": 20 + np.sin(t / 6) + 0.05 * rng.standard_normal(400),
                          "load": 500 + 50 * np.cos(t / 9) + rng.standard_normal(400)}, index=idx)
    det = AnomalyDetector(**{**FAST, "max_steps": 30}).fit(frame)
    np.testing.assert_array_equal(det.score(frame[["load", "temp"]]), det.score(frame))
    with pytest.raises(DataError, match=r"columns \['temp', 'power'\] differ from the fitted \['temp', 'load'\]"):
        det.score(frame.rename(columns={"load": "power"}))
    with pytest.raises(DataError, match=r"its time step \(1 day\) differs from the fitted one \(1 hour\)"):
        det.score(frame.set_axis(pd.date_range("2024-01-01", periods=400, freq="D")))
    # one row: too short to tell its time step, scored with the fitted one (it said "has no timestamps")
    assert det.score(frame.iloc[:1]).shape == (1,)


def test_detector_options_are_checked():
    for bad in (dict(value=float("nan")), dict(k=float("inf")), dict(smooth=True), dict(max_time=0),
                dict(quantile=float("nan")), dict(merge=1.5)):
        with pytest.raises(ConfigError, match=f"{next(iter(bad))}: expected"):
            AnomalyDetector(**bad)


def test_the_forecast_scores_placeholder_rows_do_not_lower_the_adaptive_threshold():
    """The first `window` rows of the forecast score are 0 (no forecast there); they entered the
    EWMA and the trailing mean and deviation, so the threshold jumped after them."""
    y = sine(600)
    det = AnomalyDetector(**{**FAST, "max_steps": 40}).fit(y.iloc[:400])
    scores = det.score(y)
    assert (scores[:24] == 0).all() and scores[24] > 0.05  # the EWMA starts at the first real score
    thr = det.thresholds(scores)
    assert np.isinf(thr[:48]).all()  # the trailing statistics need `window` real scores
    assert thr[48] == pytest.approx(max(4.0, scores[24:48].mean() + 4 * scores[24:48].std(ddof=1)))


def test_window_metrics_on_timestamps_without_a_unit_and_reversed_windows():
    """window_metrics(det.detect(series), labels) failed on timestamps ('float() argument must be
    ... not Timedelta'); a labelled window ending before it starts was taken silently."""
    t = pd.date_range("2024-01-01", periods=100, freq="h")
    m = window_metrics([(t[12], t[14], 5.0)], [(t[10], t[20])])
    assert m["recall"] == 1.0 and m["delay"] == pytest.approx(2.0)  # hours
    assert window_metrics([(t[12], t[14])], [(t[10], t[20])], unit=pd.Timedelta("30min"))["delay"] == 4.0
    with pytest.raises(ValueError, match="a labelled window ends before it starts"):
        window_metrics([], [(20, 10)])


def test_the_recipe_scores_only_the_rows_after_the_fitted_ones(tmp_path, monkeypatch):
    """`rnnkit train detect --dataset nab/...` counted labelled windows inside the training rows (the
    model learnt them as normal) and detections there in its recall and precision."""
    from rnnkit.recipes import forecast as recipe
    y = sine(600)
    y.iloc[500] += 3.0
    labels = [(y.index[100], y.index[110]), (y.index[495], y.index[505])]
    monkeypatch.setattr(recipe, "_detect_data", lambda data: (y, labels))
    _, _, summary = recipe.train_detector(recipe.DetectorConfig(**{**FAST, "max_steps": 60}),
                                          recipe.DetectDataConfig(dataset="nab/x", train_fraction=0.5),
                                          tmp_path, "lab")
    assert summary["evaluated_from"] == str(y.index[300])
    m = summary["metrics"]
    assert m["windows"] == 1 and m["found"] == 1 and m["recall"] == 1.0


def test_detect_from_bundle_reads_the_fitted_columns_and_names_what_is_wrong(tmp_path):
    """`rnnkit detect` on a CSV with more columns said 'expected 1 column(s) as in fit, got 2' without
    naming --target; with a multi-column fit, the columns it was fitted on are read by default."""
    from rnnkit.recipes.forecast import DetectDataConfig, DetectorConfig, detect_from_bundle, train_detector
    y = sine(400)
    frame = pd.DataFrame({"value": y, "other": np.cos(np.arange(400) / 7.0)}, index=y.index)
    csv = tmp_path / "two.csv"
    frame.rename_axis("timestamp").to_csv(csv)
    one = tmp_path / "one.csv"
    y.rename_axis("timestamp").to_csv(one)
    _, bundle, _ = train_detector(DetectorConfig(**{**FAST, "max_steps": 20}), DetectDataConfig(csv=str(one)),
                                  tmp_path / "runs", "one")
    with pytest.raises(DataError, match=r"2 value column\(s\) \(value, other\), the detector was fitted on 1; "
                                        "name the column.* with --target"):
        detect_from_bundle(bundle, str(csv))
    assert isinstance(detect_from_bundle(bundle, str(csv), target="value"), list)
    _, both, _ = train_detector(DetectorConfig(**{**FAST, "max_steps": 20}),
                                DetectDataConfig(csv=str(csv), target="other,value"), tmp_path / "runs", "two")
    assert detect_from_bundle(both, str(csv)) == detect_from_bundle(both, str(csv), target="value,other")
    with pytest.raises(rnnkit.errors.ConfigError, match="holds an AnomalyDetector, expected a Forecaster"):
        from rnnkit.recipes.forecast import forecast_from_bundle
        forecast_from_bundle(both)


def test_a_csv_with_gaps_names_where_the_nan_policy_is_set(tmp_path):
    """`rnnkit detect` said "pass nan='interpolate'", an option it does not have: the policy is the
    detector's, set when it was trained."""
    from rnnkit.recipes.forecast import DetectDataConfig, DetectorConfig, detect_from_bundle, train_detector
    y = sine(300)
    csv = tmp_path / "s.csv"
    y.rename_axis("timestamp").to_csv(csv)
    _, bundle, _ = train_detector(DetectorConfig(**{**FAST, "max_steps": 10}), DetectDataConfig(csv=str(csv)),
                                  tmp_path / "runs", "s")
    y.where(y.index != y.index[50]).rename_axis("timestamp").to_csv(csv)
    with pytest.raises(DataError, match=r"use a model trained with --nan interpolate \(rnnkit train detect\)"):
        detect_from_bundle(bundle, str(csv))


def test_yyyymmdd_integer_timestamps_are_dates():
    s = sine(300)
    days = pd.date_range("2023-01-01", periods=300, freq="D")
    y = pd.Series(s.to_numpy(), index=days.strftime("%Y%m%d").astype(int))
    det = AnomalyDetector(window=24, hidden_size=8, max_steps=20).fit(y)
    assert det.fitted_["n_calendar"] > 0 and det.fitted_["step_seconds"] == 86400.0


def test_text_values_are_refused_as_the_forecaster_refuses_them():
    from rnnkit.models.forecaster import Forecaster
    text = sine(200).astype(str)  # numbers written as text
    with pytest.raises(DataError, match=r"y: column 'value' is not numeric \((object|str)\); convert or drop it"):
        AnomalyDetector(window=24, max_steps=5).fit(text)
    with pytest.raises(DataError, match=r"y: column 'value' is not numeric \((object|str)\); convert or drop it"):
        Forecaster(horizon=6, max_steps=5).fit(text)
