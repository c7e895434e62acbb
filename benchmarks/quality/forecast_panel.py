"""Forecast panel: rnnkit's Forecaster against naive, seasonal naive, ETS and ARIMA (statsmodels).

Eighteen real series: ten shipped with statsmodels (the panel fixed before any model was tuned)
and eight of aeon's classic forecasting series that rnnkit ships (airline, lynx, shampoo and the
five uschange columns; added later and never used for tuning). The last horizon of each is held
out; every model is fitted on the rest in the same run and scored with MASE (scaled by the
seasonal naive in-sample error) and sMAPE. Prints a Markdown table, the means over the whole
panel and over each group, and the two targets: rnnkit's mean MASE below ETS's and ARIMA's, and
never worse than seasonal naive by more than 10%. ``--origins K`` repeats this at the K last
forecast origins, one horizon apart (origin 0 is the last horizon), and reports the scores
averaged over the origins a series is long enough for.

    python benchmarks/quality/forecast_panel.py [--json] [--series co2,nile] [--origins 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from rnnkit.bench import positive, run_script, strict_json
from rnnkit.data.registry import load_dataset
from rnnkit.models import ts_metrics
from rnnkit.models._es import EsParams, from_u
from rnnkit.models._forecast_config import MIN_EXTRA
from rnnkit.models.baselines import BASELINES, baseline_forecast
from rnnkit.models.forecaster import Forecaster

MODELS = ("rnnkit",) + tuple(BASELINES)


GROUPS = {"statsmodels": ("co2", "elec_equip", "elnino", "nile", "sunspots", "realgdp", "realcons", "cpi",
                          "unemp", "tbilrate"),
          "aeon": ("airline", "lynx", "shampoo", "us_consumption", "us_income", "us_production",
                   "us_savings", "us_unemployment")}


def panel() -> dict:
    """name -> (series, season length, horizon); weekly CO2 averaged to months."""
    macro, us = load_dataset("macrodata", "all"), load_dataset("uschange", "all")
    out = {
        "co2": (load_dataset("co2", "all")["co2"].resample("MS").mean(), 12, 24),
        "elec_equip": (load_dataset("elec_equip", "all")["orders"], 12, 24),
        "elnino": (load_dataset("elnino", "all")["temperature"], 12, 24),
        "nile": (load_dataset("nile", "all")["volume"], 1, 10),
        "sunspots": (load_dataset("sunspots", "all")["sunactivity"], 11, 11),
    }
    for col in ("realgdp", "realcons", "cpi", "unemp", "tbilrate"):
        out[col] = (macro[col], 4, 8)
    out["airline"] = (load_dataset("airline", "all")["passengers"], 12, 24)
    out["lynx"] = (load_dataset("lynx", "all")["trappings"], 10, 10)  # the ~10-year cycle
    out["shampoo"] = (load_dataset("shampoo", "all")["sales"], 12, 12)
    for col in us.columns:
        out[f"us_{col}"] = (us[col], 4, 8)
    return out


def origins_for(series, m: int, h: int, wanted: int) -> list[int]:
    """The origins (of the first ``wanted``) that leave the Forecaster its minimum history."""
    return [k for k in range(wanted) if len(series) - (k + 1) * h >= h + MIN_EXTRA] or [0]


def ablations(f: Forecaster) -> dict[str, np.ndarray]:
    """The same fitted model with all of the network's correction (w=1) and with none of it
    (the smoothing part alone: level + trend + season of the horizon)."""
    full = Forecaster.from_config(dataclasses.asdict(f.config))
    full.options = dataclasses.replace(full.options, rnn_weight=1.0)
    full.load_state_dict(f.state_dict())
    rec = f.fitted_["series"][0]
    params = EsParams.from_dict(rec["transforms"]["es"][0])
    base = np.asarray(rec["state"]["level"])[0] + np.asarray(rec["state"]["s_hat"])[:, 0]
    return {"rnnkit w=1": full.predict(), "ES part only": from_u(params, base)}


def run_series(series, m: int, h: int, seed: int, origin: int = 0, ablation: bool = False) -> dict:
    """Scores of every model at the forecast origin ``origin`` horizons before the end."""
    cut = len(series) - (origin + 1) * h
    train, truth = series.iloc[:cut], series.to_numpy()[cut: cut + h]
    insample = train.to_numpy()
    out, extras = {}, {}
    for model in MODELS:
        start = time.perf_counter()
        if model == "rnnkit":
            f = Forecaster(horizon=h, season_length=m, seed=seed).fit(train)
            point = f.predict()
            for name, extra in (ablations(f) if ablation else {}).items():
                extras[name] = {"mase": ts_metrics.mase(truth, extra, insample, m),
                             "smape": ts_metrics.smape(truth, extra), "seconds": 0.0}
        else:
            point = baseline_forecast(model, insample, h, m)
        out[model] = {"mase": ts_metrics.mase(truth, point, insample, m),
                      "smape": ts_metrics.smape(truth, point), "seconds": time.perf_counter() - start}
    return {**out, **extras}


def average(runs: list[dict]) -> dict:
    """Per model, each score averaged over the origins (seconds summed)."""
    out = {}
    for model in runs[0]:
        out[model] = {k: float(np.mean([r[model][k] for r in runs])) for k in ("mase", "smape")}
        out[model]["seconds"] = float(sum(r[model]["seconds"] for r in runs))
    return out


def markdown(results: dict, metric: str) -> str:
    """Table of ``metric``: the best of rnnkit and the baselines in bold, ablations after them."""
    models = list(next(iter(results.values())))
    lines = [f"| series ({metric}) | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for name, res in results.items():
        best = min(res[m][metric] for m in MODELS)
        cells = [(f"**{res[m][metric]:.3f}**" if res[m][metric] == best else f"{res[m][metric]:.3f}") for m in models]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for group, names in [("", list(results)), *GROUPS.items()]:
        names = [n for n in names if n in results]
        if not names or (group and len(names) == len(results)):
            continue
        means = [np.mean([results[n][m][metric] for n in names]) for m in models]
        label = f"**mean, {group} ({len(names)})**" if group else f"**mean ({len(names)})**"
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in means) + " |")
    return "\n".join(lines)


def targets(results: dict, label: str) -> dict:
    """Print and return the two targets over ``results``."""
    mean = {m: float(np.mean([r[m]["mase"] for r in results.values()])) for m in next(iter(results.values()))}
    ratio = {n: r["rnnkit"]["mase"] / r["seasonal_naive"]["mase"] for n, r in results.items()}
    worst = max(ratio, key=ratio.get)
    print(f"{label} ({len(results)} series):")
    for model in ("ets", "arima"):
        theirs = {n: r[model]["mase"] / r["seasonal_naive"]["mase"] for n, r in results.items()}
        print(f"  {model}: worst ratio to seasonal naive {max(theirs.values()):.2f} x ({max(theirs, key=theirs.get)})")
    beats = mean["rnnkit"] < min(mean["ets"], mean["arima"])
    print(f"  target 1 (mean MASE below ETS and ARIMA): {'met' if beats else 'NOT met'} "
          f"(rnnkit {mean['rnnkit']:.3f}, ETS {mean['ets']:.3f}, ARIMA {mean['arima']:.3f})")
    print(f"  target 2 (never > 1.10 x seasonal naive): {'met' if ratio[worst] <= 1.10 else 'NOT met'} "
          f"(worst {worst}: {ratio[worst]:.2f} x)")
    return {"mean_mase": mean, "worst_ratio_to_snaive": [worst, ratio[worst]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line after the tables")
    parser.add_argument("--series", default="", help="comma-separated subset of the panel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--origins", type=positive(int), default=1, help="forecast origins per series (default: 1)")
    parser.add_argument("--ablation", action="store_true",
                        help="also score the same model with w=1 and its smoothing part alone")
    args = parser.parse_args()
    t0, items = time.perf_counter(), panel()
    wanted = [s for s in args.series.split(",") if s] or list(items)
    unknown = sorted(set(wanted) - set(items))
    if unknown:
        parser.error(f"--series: unknown {', '.join(unknown)}; the panel has {', '.join(items)}")
    origins = {name: origins_for(items[name][0], *items[name][1:], args.origins) for name in wanted}
    results = {name: average([run_series(*items[name], seed=args.seed, origin=k, ablation=args.ablation)
                              for k in origins[name]]) for name in wanted}
    wall = time.perf_counter() - t0
    if args.origins > 1:
        short = {n: len(o) for n, o in origins.items() if len(o) < args.origins}
        print(f"scores averaged over the {args.origins} last forecast origins, one horizon apart"
              + (f" (too short for all, averaged over fewer: {short})" if short else "") + "\n")
    print(markdown(results, "mase"), "\n")
    print(markdown(results, "smape"), "\n")
    summary = {"all": targets(results, "whole panel")}
    for group, names in GROUPS.items():
        part = {n: results[n] for n in names if n in results}
        if part and len(part) < len(results):
            summary[group] = targets(part, f"{group} group")
    seconds = {m: round(sum(r[m]["seconds"] for r in results.values()), 1) for m in MODELS}
    print(f"fit+forecast seconds per model: {seconds}; wall time {wall:.0f} s")
    if args.json:
        print(strict_json({"benchmark": "forecast_panel", "origins": args.origins, "wall_s": round(wall, 1),
                          **summary["all"], "groups": summary, "origins_used": origins, "seconds": seconds,
                          "results": results}, default=float))


if __name__ == "__main__":
    run_script(main)
