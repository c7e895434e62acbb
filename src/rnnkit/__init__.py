"""rnnkit: recurrent neural networks on sequential data, built on PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"

from rnnkit.cells import LSTMState
from rnnkit.errors import CheckpointError, ConfigError, DataError, RnnkitError
from rnnkit.layers import GRU, LSTM, RNN, IndRNN, MinGRU, MinLSTM, Recurrent, from_torch

__all__ = [
    "__version__",
    "RNN", "LSTM", "GRU", "IndRNN", "MinGRU", "MinLSTM", "Recurrent", "LSTMState", "from_torch",
    "RnnkitError", "DataError", "CheckpointError", "ConfigError",
]
