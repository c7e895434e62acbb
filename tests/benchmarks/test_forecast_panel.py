"""benchmarks/quality/forecast_panel.py: the panel's series and groups, the origins a short series
allows, the group means in the table, and an unknown --series name is one argparse line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.benchmarks._util import QUALITY, load_script

pytest.importorskip("statsmodels")
_PATH = QUALITY / "forecast_panel.py"


@pytest.fixture(scope="module")
def script():
    return load_script("forecast_panel")


def test_panel_has_both_groups_with_their_seasons_and_horizons(script):
    items = script.panel()
    assert list(items) == [*script.GROUPS["statsmodels"], *script.GROUPS["aeon"]]
    assert {name: items[name][1:] for name in ("co2", "airline", "lynx", "shampoo", "us_savings")} == {
        "co2": (12, 24), "airline": (12, 24), "lynx": (10, 10), "shampoo": (12, 12), "us_savings": (4, 8)}
    assert len(items["airline"][0]) == 144 and len(items["us_income"][0]) == 187


def test_short_series_get_only_the_origins_they_can_fit(script):
    items = script.panel()
    assert script.origins_for(*items["shampoo"], 3) == [0]  # 36 months: 24 train + 12 held out
    assert script.origins_for(*items["airline"], 3) == [0, 1, 2]


def test_table_has_a_mean_per_group(script):
    def scores(v):
        return {m: {"mase": v, "smape": v} for m in script.MODELS}

    table = script.markdown({"nile": scores(1.0), "airline": scores(3.0)}, "mase")
    assert "| **mean (2)** | 2.000" in table
    assert "| **mean, statsmodels (1)** | 1.000" in table and "| **mean, aeon (1)** | 3.000" in table


def test_unknown_series_is_one_line():
    out = subprocess.run([sys.executable, str(_PATH), "--series", "nile,airplane"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("forecast_panel.py: error: --series: unknown airplane")
