"""Shared test set-up: fixed seeds, and the data-set gate used by tests that need RNNKIT_DATA."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _fixed_seeds():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")
