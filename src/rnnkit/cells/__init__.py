"""Recurrences, one per file: the equations and the reference ``step`` every fast path must equal."""

from rnnkit.cells.base import LSTMState, RecurrentCell, State
from rnnkit.cells.elman import ElmanRNNCell
from rnnkit.cells.gru import GRUCell
from rnnkit.cells.indrnn import IndRNNCell
from rnnkit.cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell
from rnnkit.cells.lstm import LSTMCell
from rnnkit.cells.minimal import MinGRUCell, MinLSTMCell

__all__ = [
    "RecurrentCell", "LSTMState", "State",
    "ElmanRNNCell", "LSTMCell", "GRUCell", "LayerNormLSTMCell", "LayerNormGRUCell",
    "IndRNNCell", "MinGRUCell", "MinLSTMCell",
]
