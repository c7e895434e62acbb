"""Named data sets (a short import path for :mod:`rnnkit.data.registry`).

>>> from rnnkit.datasets import list_datasets, load_dataset
>>> text = load_dataset("pydocs", "train")  # doctest: +SKIP

``load_dataset`` reads local files only (Python's own docs, package data, ``RNNKIT_DATA``) and has no
network code (``tests/data/test_registry.py`` loads every set with the network cut).
"""

from __future__ import annotations

from rnnkit.data.registry import DatasetInfo, dataset_info, list_datasets, load_dataset

__all__ = ["DatasetInfo", "dataset_info", "list_datasets", "load_dataset"]
