"""Named data sets: :func:`list_datasets` and :func:`load_dataset`.

Four sources, none downloaded at run time:

- ``python``: ``pydocs``, text of Python's own documentation (see :mod:`rnnkit.data.pydocs`).
- ``RNNKIT_DATA``: files in the folder named by the ``RNNKIT_DATA`` environment variable,
  laid out as ``tinyshakespeare/input.txt``, ``ptb/ptb.train.txt``, ... (see ``FILES`` in
  ``rnnkit.data._sets`` for the full list).
- ``statsmodels``: series shipped inside the statsmodels package.
- ``rnnkit``: four classic forecasting series shipped inside rnnkit (``airline``, ``lynx``,
  ``shampoo``, ``uschange``; copied from aeon's package data, see ``rnnkit/data/series``).

``load_dataset(name)`` returns ``{split: data}``; ``load_dataset(name, split)`` one split.
What ``data`` is depends on the kind:

==============  ============================================================================
kind            data of each split
==============  ============================================================================
text            ``str`` (``ptb``: encode with ``WordTokenizer(eos_token="<eos>")``, which
                adds ``<eos>`` at each line end)
classification  :class:`~rnnkit.data.corpora.LabelledText`
translation     :class:`~rnnkit.data.corpora.ParallelCorpus`
timeseries      ``pandas.DataFrame`` with a ``DatetimeIndex``
anomaly         :class:`~rnnkit.data._sets.AnomalySeries` (one split per series)
==============  ============================================================================
"""

from __future__ import annotations

import difflib
import importlib.util
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rnnkit.data import _sets
from rnnkit.data._series_sets import SERIES, SHIPPED, load_series
from rnnkit.data.pydocs import load_pydocs_text
from rnnkit.errors import DataError

__all__ = ["DatasetInfo", "list_datasets", "load_dataset", "dataset_info", "DATA_ENV"]

DATA_ENV = "RNNKIT_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    """What a named data set is and whether it can be loaded here.

    Attributes:
        name: the name to pass to :func:`load_dataset`.
        kind: ``text``, ``classification``, ``translation``, ``timeseries`` or ``anomaly``.
        description: one line.
        source: ``python``, ``RNNKIT_DATA``, ``statsmodels`` or ``rnnkit``.
        splits: the split names :func:`load_dataset` returns.
        available: whether loading can work now.
        reason: why not, with the fix (empty when available).
    """

    name: str
    kind: str
    description: str
    source: str
    splits: tuple[str, ...]
    available: bool = True
    reason: str = ""


@dataclass(frozen=True)
class _Spec:
    kind: str
    description: str
    source: str
    splits: tuple[str, ...]
    load: Callable[..., dict[str, Any]]


def _pydocs(cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    return _sets.split_90_10(load_pydocs_text(cache_dir))


def _specs() -> dict[str, _Spec]:
    s = _sets.LOADERS
    specs = {
        "pydocs": _Spec("text", "English text of Python's documentation: reference topics "
                        "and stdlib docstrings (~1.3 MB; train/val 90/10)", "python",
                        ("train", "val"), _pydocs),
        "tinyshakespeare": _Spec("text", "Shakespeare, 1.1 MB of characters (nanoGPT split: "
                                 "first 90% train, last 10% val)", DATA_ENV, ("train", "val"),
                                 s["tinyshakespeare"]),
        "ptb": _Spec("text", "Penn Treebank, Mikolov's word-level version (10k words; encode "
                     "with WordTokenizer(eos_token='<eos>'))", DATA_ENV,
                     ("train", "val", "test"), s["ptb"]),
        "mr": _Spec("classification", "movie-review sentence polarity, 5,331 neg + 5,331 pos "
                    "(no official split)", DATA_ENV, ("all",), s["mr"]),
        "eng_fra": _Spec("translation", "Tatoeba English-French pairs, 142,787 (the zip)",
                         DATA_ENV, ("all",), s["eng_fra"]),
        "eng_fra_5k": _Spec("translation", "the first 5,000 Tatoeba English-French pairs",
                            DATA_ENV, ("all",), s["eng_fra_5k"]),
        "multi30k": _Spec("translation", "Multi30k image captions; options source='en', "
                          "target='de' (any two of en, de, fr)", DATA_ENV,
                          ("train", "val", "test"), s["multi30k"]),
        "nab": _Spec("anomaly", "5 NAB realKnownCause series with anomaly windows", DATA_ENV,
                     _sets.NAB_SERIES, s["nab"]),
    }
    for name, (_, description) in SERIES.items():
        specs[name] = _Spec("timeseries", description, "statsmodels", ("all",),
                            functools.partial(load_series, name))
    for name, (_, description) in SHIPPED.items():
        specs[name] = _Spec("timeseries", description, "rnnkit", ("all",),
                            functools.partial(load_series, name))
    return dict(sorted(specs.items()))


def _unavailable(name: str, spec: _Spec) -> str:
    """Why the data set cannot be loaded now (with the fix), or ``""``."""
    if spec.source == "statsmodels":
        if importlib.util.find_spec("statsmodels") is None:
            return (f"data set {name!r} needs statsmodels; install it with "
                    "pip install 'rnnkit[timeseries]'")
        return ""
    if spec.source == "rnnkit":
        if importlib.util.find_spec("pandas") is None:
            return f"data set {name!r} needs pandas; install it with pip install 'rnnkit[timeseries]'"
        return ""
    if spec.source != DATA_ENV:
        return ""
    needed = _sets.FILES[name]
    root = os.environ.get(DATA_ENV, "")
    if not root:
        return (f"data set {name!r} needs {needed[0]} under {DATA_ENV}, which is not set; "
                f"set {DATA_ENV} to a folder containing {needed[0]}")
    for rel in needed:
        path = _data_root() / rel
        if not path.is_file():  # name the file that is missing, not the first one the set needs
            return (f"data set {name!r}: {path} not found ({DATA_ENV}={root}); set {DATA_ENV} to a "
                    f"folder containing {rel}")
    if spec.kind == "anomaly" and importlib.util.find_spec("pandas") is None:
        return f"data set {name!r} needs pandas; install it with pip install 'rnnkit[timeseries]'"
    return ""


def _data_root() -> Path:
    """The folder ``RNNKIT_DATA`` names, ``~`` expanded (a shell leaves a quoted ``~/data`` as is)."""
    return Path(os.environ.get(DATA_ENV, "")).expanduser()


def _info(name: str, spec: _Spec) -> DatasetInfo:
    reason = _unavailable(name, spec)
    return DatasetInfo(name, spec.kind, spec.description, spec.source, spec.splits,
                       available=not reason, reason=reason)


def list_datasets() -> list[DatasetInfo]:
    """Every named data set, sorted by name, with whether it is available here and why not."""
    return [_info(name, spec) for name, spec in _specs().items()]


def _spec(name: str) -> _Spec:
    specs = _specs()
    if name not in specs:
        close = difflib.get_close_matches(name, specs, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(f"unknown data set {name!r}; {hint}known: {', '.join(specs)}")
    return specs[name]


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of one data set."""
    return _info(name, _spec(name))


def load_dataset(name: str, split: str | None = None, *,
                 cache_dir: str | os.PathLike | None = None, **options: Any) -> Any:
    """Load a named data set: ``{split: data}``, or the one ``split`` asked for, from local files
    only (never a download: the four sources of the module doc; tested with the network cut).

    Args:
        name: a name from :func:`list_datasets`.
        split: one split name (see ``DatasetInfo.splits``), or ``None`` for all.
        cache_dir: (``pydocs``) a folder to keep the built text in; nothing is written
            anywhere else.
        **options: data-set options, e.g. ``source="en", target="fr"`` for ``multi30k``.

    Raises:
        DataError: unknown name or split, or the data set is missing here (the message
            names the setting and the file it looked for).
    """
    spec = _spec(name)
    reason = _unavailable(name, spec)
    if reason:
        raise DataError(reason)
    if split is not None and split not in spec.splits:
        raise DataError(f"data set {name!r} has no split {split!r}; "
                        f"splits: {', '.join(spec.splits)}")
    import inspect
    params = inspect.signature(spec.load).parameters
    takes = [p for p in list(params)[1 if spec.source == DATA_ENV or name == "pydocs" else 0:]
             if params[p].kind in (params[p].POSITIONAL_OR_KEYWORD, params[p].KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(takes))
    if unknown:  # not the loader's own TypeError, which names a private function
        raise DataError(f"data set {name!r} has no option {unknown[0]!r}; "
                        + (f"its options: {', '.join(takes)}" if takes else "it takes none"))
    if spec.source == DATA_ENV:
        splits = spec.load(_data_root(), **options)
    elif name == "pydocs":
        splits = spec.load(cache_dir, **options)
    else:
        splits = spec.load(**options)
    return splits if split is None else splits[split]
