"""rnnkit: recurrent neural networks on sequential data, built on PyTorch."""

from __future__ import annotations

import importlib.util

__version__ = "0.1.0"

from rnnkit.cells import LSTMState
from rnnkit.errors import CheckpointError, ConfigError, DataError, RnnkitError
from rnnkit.layers import GRU, LSTM, RNN, IndRNN, MinGRU, MinLSTM, Recurrent, chrono_init_, from_torch
from rnnkit.models import LanguageModel, LanguageModelConfig, LanguageModelEnsemble, LMOutput


_LAZY = {"Forecaster": "rnnkit.models.forecaster", "AnomalyDetector": "rnnkit.models.anomaly"}


def __getattr__(name: str):
    """``rnnkit.Forecaster`` and ``rnnkit.AnomalyDetector`` import pandas only when first used."""
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")


def load(directory, map_location="cpu"):
    """Load a model bundle saved with ``model.save(directory)`` (never unpickles)."""
    from rnnkit.export.bundle import load_bundle  # imports the time-series models when a bundle needs them
    return load_bundle(directory, map_location=map_location)


__all__ = [
    "__version__",
    "RNN", "LSTM", "GRU", "IndRNN", "MinGRU", "MinLSTM", "Recurrent", "LSTMState", "from_torch", "chrono_init_",
    "LanguageModel", "LanguageModelConfig", "LanguageModelEnsemble", "LMOutput", "Forecaster", "AnomalyDetector", "load",
    "RnnkitError", "DataError", "CheckpointError", "ConfigError",
]
