"""Loaders of the data sets found under ``RNNKIT_DATA`` (files as laid out in its README).

Each loader takes the data root and returns ``{split name: data}``. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from rnnkit.data._io import read_text
from rnnkit.data.corpora import LabelledText, ParallelCorpus
from rnnkit.errors import DataError

__all__ = ["AnomalySeries", "NAB_SERIES", "FILES", "LOADERS", "split_90_10"]

NAB_SERIES = (
    "ambient_temperature_system_failure",
    "cpu_utilization_asg_misconfiguration",
    "ec2_request_latency_system_failure",
    "machine_temperature_system_failure",
    "nyc_taxi",
)
_MULTI30K_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}

# The files each data set needs, relative to RNNKIT_DATA (the first one is named in errors).
FILES: dict[str, tuple[str, ...]] = {
    "tinyshakespeare": ("tinyshakespeare/input.txt",),
    "ptb": tuple(f"ptb/ptb.{s}.txt" for s in ("train", "valid", "test")),
    "mr": ("mr_polarity/rt-polarity.pos", "mr_polarity/rt-polarity.neg"),
    "eng_fra": ("eng_fra/fra-eng.zip",),
    "eng_fra_5k": ("eng_fra/eng-fra-5k.txt",),
    "multi30k": tuple(f"multi30k/{f}.{lang}.gz" for f in _MULTI30K_SPLITS.values()
                      for lang in ("en", "de", "fr")),
    "nab": tuple(f"nab/realKnownCause/{s}.csv" for s in NAB_SERIES)
    + ("nab/labels/combined_windows.json", "nab/labels/combined_labels.json"),
}


class AnomalySeries(NamedTuple):
    """One NAB series with its labelled anomalies."""

    data: Any  # DataFrame: DatetimeIndex "timestamp" (a few repeat), float column "value"
    windows: list[tuple[Any, Any]]  # (start, end) pandas Timestamps of anomaly windows
    labels: list[Any]  # pandas Timestamps of the labelled anomalies


def split_90_10(text: str) -> dict[str, str]:
    """nanoGPT's split: the first 90% of the characters train, the last 10% validate."""
    n = int(len(text) * 0.9)
    return {"train": text[:n], "val": text[n:]}


def _tinyshakespeare(root: Path) -> dict[str, Any]:
    return split_90_10(read_text(root / "tinyshakespeare/input.txt"))


def _ptb(root: Path) -> dict[str, Any]:
    names = {"train": "train", "val": "valid", "test": "test"}
    return {split: read_text(root / f"ptb/ptb.{f}.txt") for split, f in names.items()}


def _mr(root: Path) -> dict[str, Any]:
    folder = root / "mr_polarity"
    files = {"neg": folder / "rt-polarity.neg", "pos": folder / "rt-polarity.pos"}
    return {"all": LabelledText.from_line_files(files)}


def _eng_fra(root: Path) -> dict[str, Any]:
    return {"all": ParallelCorpus.from_tsv(root / "eng_fra/fra-eng.zip", member="fra.txt")}


def _eng_fra_5k(root: Path) -> dict[str, Any]:
    return {"all": ParallelCorpus.from_tsv(root / "eng_fra/eng-fra-5k.txt")}


def _multi30k(root: Path, source: str = "en", target: str = "de") -> dict[str, Any]:
    langs = ("en", "de", "fr")
    if source not in langs or target not in langs or source == target:
        raise ValueError(f"multi30k languages are two of {langs}, got {source!r}, {target!r}")
    folder = root / "multi30k"
    return {
        split: ParallelCorpus.from_files(folder / f"{f}.{source}.gz", folder / f"{f}.{target}.gz")
        for split, f in _MULTI30K_SPLITS.items()
    }


def _nab_labels(path: Path) -> dict[str, list]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg}); "
                        "restore the file from the NAB repository") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of file -> labels")
    return data


def _nab_times(path: Path, key: str, entries: Any, pairs: bool) -> list:
    """The timestamps (``pairs``: ``[start, end]`` windows) of ``key`` in a NAB labels file."""
    import pandas as pd

    what = "a [start, end] pair of timestamps" if pairs else "a timestamp"
    if not isinstance(entries, list):
        raise DataError(f"{path}: {key!r} holds {entries!r}, not a list of "
                        f"{'[start, end] pairs' if pairs else 'timestamps'}; "
                        "restore the file from the NAB repository")
    out = []
    for entry in entries:
        items = entry if pairs else [entry]
        times = []
        size = 2 if pairs else 1
        if isinstance(items, list) and len(items) == size and all(isinstance(t, str) for t in items):
            try:
                times = [pd.Timestamp(t) for t in items]
            except ValueError:  # pandas' DateParseError
                pass
        if not times or any(pd.isna(t) for t in times):
            raise DataError(f"{path}: {key!r} holds {entry!r}, not {what}; "
                            "restore the file from the NAB repository")
        out.append(tuple(times) if pairs else times[0])
    return out


def _nab(root: Path) -> dict[str, Any]:
    from rnnkit.data.timeseries import read_series_csv

    folder = root / "nab"
    windows = _nab_labels(folder / "labels/combined_windows.json")
    labels = _nab_labels(folder / "labels/combined_labels.json")
    out = {}
    for series in NAB_SERIES:
        key = f"realKnownCause/{series}.csv"
        for path, table in (("combined_windows.json", windows), ("combined_labels.json", labels)):
            if key not in table:
                raise DataError(f"{folder / 'labels' / path}: no entry {key!r}; "
                                "restore the file from the NAB repository")
        # NAB scores rows as they are: keep the few repeated timestamps (clock changes).
        frame = read_series_csv(folder / key, time_col="timestamp", target="value",
                                duplicates="keep")
        spans = _nab_times(folder / "labels/combined_windows.json", key, windows[key], pairs=True)
        times = _nab_times(folder / "labels/combined_labels.json", key, labels[key], pairs=False)
        out[series] = AnomalySeries(frame, spans, times)
    return out


LOADERS = {
    "tinyshakespeare": _tinyshakespeare,
    "ptb": _ptb,
    "mr": _mr,
    "eng_fra": _eng_fra,
    "eng_fra_5k": _eng_fra_5k,
    "multi30k": _multi30k,
    "nab": _nab,
}
