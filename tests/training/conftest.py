"""Shared fixtures: fixed seeds, a quiet config factory writing into the test's tmp folder."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tiny_models, also for subprocess scripts

from rnnkit.training import TrainerConfig  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def make_config(tmp_path):
    """``make_config(**overrides)``: a TrainerConfig under tmp_path, quiet, no TensorBoard or plots."""

    def make(**overrides) -> TrainerConfig:
        base = dict(run_dir=str(tmp_path / "runs"), name="t", quiet=True, tensorboard=False, plots=False,
                    batch_size=4, log_every=1, device="cpu")
        base.update(overrides)
        return TrainerConfig(**base)

    return make
