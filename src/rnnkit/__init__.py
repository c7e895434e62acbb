"""rnnkit: recurrent neural networks on sequential data, built on PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"

from rnnkit.cells import LSTMState
from rnnkit.errors import CheckpointError, ConfigError, DataError, RnnkitError
from rnnkit.layers import GRU, LSTM, RNN, IndRNN, MinGRU, MinLSTM, Recurrent, from_torch
from rnnkit.models import LanguageModel, LanguageModelConfig, LMOutput


def load(directory, map_location="cpu"):
    """Load a model bundle saved with ``model.save(directory)`` (never unpickles)."""
    from rnnkit.export.bundle import load_bundle
    return load_bundle(directory, map_location=map_location)


__all__ = [
    "__version__",
    "RNN", "LSTM", "GRU", "IndRNN", "MinGRU", "MinLSTM", "Recurrent", "LSTMState", "from_torch",
    "LanguageModel", "LanguageModelConfig", "LMOutput", "load",
    "RnnkitError", "DataError", "CheckpointError", "ConfigError",
]
