"""Fixtures for the data tests: fixed seeds and ``require_dataset``.

``require_dataset(name)`` returns the data set's :class:`~rnnkit.data.DatasetInfo` when it
can be loaded here. When it cannot (e.g. ``RNNKIT_DATA`` is not set), the test is skipped
with the reason, unless ``RNNKIT_REQUIRE_DATA=1``, in which case it fails: CI sets that, so
a missing data set can never pass silently. Other test folders may copy this fixture.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

from rnnkit.data.registry import DatasetInfo, dataset_info


@pytest.fixture(autouse=True)
def _fixed_seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def require_dataset() -> Callable[[str], DatasetInfo]:
    """A function ``require(name)``: skip (or, with RNNKIT_REQUIRE_DATA=1, fail) if missing."""

    def require(name: str) -> DatasetInfo:
        info = dataset_info(name)
        if not info.available:
            if os.environ.get("RNNKIT_REQUIRE_DATA") == "1":
                pytest.fail(f"RNNKIT_REQUIRE_DATA=1 but {info.reason}", pytrace=False)
            pytest.skip(info.reason)
        return info

    return require
