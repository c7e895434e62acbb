"""Named data sets (a short import path for :mod:`rnnkit.data.registry`).

>>> from rnnkit.datasets import list_datasets, load_dataset
>>> text = load_dataset("pydocs", "train")  # doctest: +SKIP
"""

from __future__ import annotations

from rnnkit.data.registry import DatasetInfo, dataset_info, list_datasets, load_dataset

__all__ = ["DatasetInfo", "dataset_info", "list_datasets", "load_dataset"]
