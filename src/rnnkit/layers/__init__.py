"""torch.nn-compatible sequence layers over the cells."""

from rnnkit.layers.modules import GRU, LSTM, RNN, IndRNN, MinGRU, MinLSTM, from_torch
from rnnkit.layers.recurrent import BACKENDS, Recurrent
from rnnkit.layers.init import chrono_init_

__all__ = ["Recurrent", "BACKENDS", "RNN", "LSTM", "GRU", "IndRNN", "MinGRU", "MinLSTM", "from_torch", "chrono_init_"]
