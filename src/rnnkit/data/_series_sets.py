"""Time series that statsmodels ships (read offline from its package data), and four classic
series that rnnkit ships itself (``data/series/``: copied from aeon's package data, see the
README there).

Each loader returns ``{"all": DataFrame}``: a float64 frame with a ``DatetimeIndex`` named
``"time"``, rows in time order.
"""

from __future__ import annotations

import importlib
from importlib import resources
from typing import Any, Callable

__all__ = ["SERIES", "SHIPPED", "load_series"]


def _module(name: str) -> Any:
    return importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data


def _co2() -> Any:
    """Weekly CO2 at Mauna Loa; its 59 missing weeks are interpolated in time."""
    df = _module("co2").astype("float64")
    return df.interpolate(method="time").ffill().bfill()


def _yearly(df: Any, year_col: str, value_col: str, column: str = "") -> Any:
    """One yearly series from a frame's year and value columns (named ``column`` or the value's name)."""
    import pandas as pd

    index = pd.to_datetime(df[year_col].astype(int).astype(str), format="%Y")
    return pd.DataFrame({column or value_col.lower(): df[value_col].to_numpy("float64")}, index=index)


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


def _shipped_csv(name: str) -> Any:
    import pandas as pd

    with resources.files("rnnkit.data").joinpath("series").joinpath(f"{name}.csv").open("rb") as fh:
        return pd.read_csv(fh)


def _monthly(name: str, column: str, start: str) -> Any:
    """A one-column monthly CSV laid out from ``start`` (the dates are checked against it)."""
    import pandas as pd

    df = _shipped_csv(name)
    index = pd.date_range(start, periods=len(df), freq="MS")
    if list(pd.to_datetime(df.iloc[:, 0], format="%Y-%m")) != list(index):
        raise ValueError(f"{name}.csv: months are not consecutive from {start}")
    return pd.DataFrame({column: df.iloc[:, 1].to_numpy("float64")}, index=index)


def _uschange() -> Any:
    import pandas as pd

    df = _shipped_csv("uschange")
    year, quarter = df["Quarter"].str.split(" Q", expand=True).astype(int).T.to_numpy()
    index = pd.to_datetime(pd.DataFrame({"year": year, "month": quarter * 3 - 2, "day": 1}))
    values = df[["Consumption", "Income", "Production", "Savings", "Unemployment"]]
    return values.astype("float64").set_axis([c.lower() for c in values.columns], axis=1).set_axis(index)


# name -> (loader, description), read from statsmodels
SERIES: dict[str, tuple[Callable[[], Any], str]] = {
    "co2": (_co2, "weekly atmospheric CO2 at Mauna Loa, 1958-2001 (gaps interpolated)"),
    "elec_equip": (_elec_equip, "monthly euro-area electrical equipment orders index, 1995-2016"),
    "elnino": (_elnino, "monthly sea surface temperature of the El Nino region, 1950-2010"),
    "macrodata": (_macrodata, "quarterly US macroeconomic series (12 columns), 1959-2009"),
    "nile": (lambda: _yearly(_module("nile"), "year", "volume"),
             "yearly flow volume of the Nile at Aswan, 1871-1970"),
    "sunspots": (lambda: _yearly(_module("sunspots"), "YEAR", "SUNACTIVITY"),
                 "yearly sunspot activity, 1700-2008"),
}


# name -> (loader, description), shipped in rnnkit/data/series (from aeon's package data)
SHIPPED: dict[str, tuple[Callable[[], Any], str]] = {
    "airline": (lambda: _monthly("airline", "passengers", "1949-01-01"),
                "monthly international airline passengers (thousands), 1949-1960 (Box & Jenkins)"),
    "lynx": (lambda: _yearly(_shipped_csv("lynx").set_axis(["year", "trappings"], axis=1), "year", "trappings"),
             "yearly Canadian lynx trappings, 1821-1934"),
    "shampoo": (lambda: _monthly("shampoo", "sales", "1991-01-01"),
                "monthly shampoo sales over three years, 36 months (Makridakis et al. 1998)"),
    "uschange": (_uschange, "quarterly % changes of US consumption, income, production, savings and "
                 "unemployment, 1970-2016 (fpp2)"),
}


def load_series(name: str) -> dict[str, Any]:
    """Load one statsmodels or rnnkit-shipped series as ``{"all": DataFrame}``."""
    frame = (SERIES.get(name) or SHIPPED[name])[0]()
    frame.index.name = "time"
    return {"all": frame.sort_index()}
