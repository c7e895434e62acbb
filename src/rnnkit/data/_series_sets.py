"""Time series that statsmodels ships (read offline from its package data).

Each loader returns ``{"all": DataFrame}``: a float64 frame with a ``DatetimeIndex`` named
``"time"``, rows in time order.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["SERIES", "load_series"]


def _module(name: str) -> Any:
    return importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data


def _co2() -> Any:
    """Weekly CO2 at Mauna Loa; its 59 missing weeks are interpolated in time."""
    df = _module("co2").astype("float64")
    return df.interpolate(method="time").ffill().bfill()


def _yearly(name: str, year_col: str, value_col: str) -> Any:
    import pandas as pd

    df = _module(name)
    index = pd.to_datetime(df[year_col].astype(int).astype(str), format="%Y")
    return pd.DataFrame({value_col.lower(): df[value_col].to_numpy("float64")}, index=index)


def _elnino() -> Any:
    """Monthly sea surface temperature: the 12 month columns laid out as one series."""
    import pandas as pd

    df = _module("elnino")
    months = df.columns[1:]
    values = df[months].to_numpy("float64").reshape(-1)  # row-major: year by year
    start = f"{int(df['YEAR'].iloc[0])}-01-01"
    index = pd.date_range(start, periods=len(values), freq="MS")
    return pd.DataFrame({"temperature": values}, index=index)


def _elec_equip() -> Any:
    df = _module("elec_equip")
    return df.set_axis(["orders"], axis=1).astype("float64")


def _macrodata() -> Any:
    import pandas as pd

    df = _module("macrodata")
    quarter_start = pd.DataFrame({"year": df["year"].astype(int),
                                  "month": df["quarter"].astype(int) * 3 - 2, "day": 1})
    frame = df.drop(columns=["year", "quarter"]).astype("float64")
    return frame.set_axis(pd.to_datetime(quarter_start), axis=0)


# name -> (loader, description)
SERIES: dict[str, tuple[Callable[[], Any], str]] = {
    "co2": (_co2, "weekly atmospheric CO2 at Mauna Loa, 1958-2001 (gaps interpolated)"),
    "elec_equip": (_elec_equip, "monthly euro-area electrical equipment orders index, 1995-2016"),
    "elnino": (_elnino, "monthly sea surface temperature of the El Nino region, 1950-2010"),
    "macrodata": (_macrodata, "quarterly US macroeconomic series (12 columns), 1959-2009"),
    "nile": (lambda: _yearly("nile", "year", "volume"),
             "yearly flow volume of the Nile at Aswan, 1871-1970"),
    "sunspots": (lambda: _yearly("sunspots", "YEAR", "SUNACTIVITY"),
                 "yearly sunspot activity, 1700-2008"),
}


def load_series(name: str) -> dict[str, Any]:
    """Load one statsmodels series as ``{"all": DataFrame}``."""
    frame = SERIES[name][0]()
    frame.index.name = "time"
    return {"all": frame.sort_index()}
