"""The contenders of the memory suite: each rnnkit recurrence and a small Transformer encoder.

Every model maps a task's inputs (float features or token ids) to a prediction at every step or after
the last one. Recurrences use 128 units; the classic cells one layer, IndRNN, MinGRU and MinLSTM two
(their recurrence is diagonal, resp. linear in the state, and they are meant to be stacked). The LSTM
starts with ``forget_bias=1`` (Jozefowicz et al. 2015). The ``*_chrono`` variants are the same gated
recurrences with chrono-initialised gate biases for time scales up to the sequence length
(:func:`rnnkit.chrono_init_`). The Transformer is a pre-norm
``torch.nn.TransformerEncoder`` (d_model 64, 4 heads, 2 layers, feed-forward 128) with learned
positional embeddings and a causal mask, so every model reads the sequence left to right.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

import rnnkit
from rnnkit.analysis._memory_tasks import MemoryTask

__all__ = ["MODELS", "SequenceModel", "build_model"]

HIDDEN = 128
EMBED = 16

MODELS: dict[str, Callable[[int, int], nn.Module]] = {  # (input features, sequence length) -> core
    "rnn": lambda i, T: rnnkit.RNN(i, HIDDEN, batch_first=True),
    "lstm": lambda i, T: rnnkit.LSTM(i, HIDDEN, batch_first=True, forget_bias=1.0),
    "gru": lambda i, T: rnnkit.GRU(i, HIDDEN, batch_first=True),
    "indrnn": lambda i, T: rnnkit.IndRNN(i, HIDDEN, num_layers=2, batch_first=True),
    "mingru": lambda i, T: rnnkit.MinGRU(i, HIDDEN, num_layers=2, batch_first=True),
    "minlstm": lambda i, T: rnnkit.MinLSTM(i, HIDDEN, num_layers=2, batch_first=True),
    # the gated recurrences again, with their gate biases chrono-initialised for time scales up to T
    # (Tallec & Ollivier 2018; rnnkit.chrono_init_) instead of torch's default initialisation
    "lstm_chrono": lambda i, T: rnnkit.chrono_init_(rnnkit.LSTM(i, HIDDEN, batch_first=True), max(T, 3)),
    "gru_chrono": lambda i, T: rnnkit.chrono_init_(rnnkit.GRU(i, HIDDEN, batch_first=True), max(T, 3)),
    "mingru_chrono": lambda i, T: rnnkit.chrono_init_(rnnkit.MinGRU(i, HIDDEN, num_layers=2, batch_first=True),
                                                      max(T, 3)),
    "minlstm_chrono": lambda i, T: rnnkit.chrono_init_(rnnkit.MinLSTM(i, HIDDEN, num_layers=2, batch_first=True),
                                                       max(T, 3)),
    "transformer": lambda i, T: CausalTransformer(i, max_len=T),
}


class CausalTransformer(nn.Module):
    """A small causal Transformer encoder with learned positions; ``forward(x) -> (y, None)``."""

    def __init__(self, input_size: int, max_len: int, d_model: int = 64, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int = 128) -> None:
        super().__init__()
        self.inp = nn.Linear(input_size, d_model)
        self.pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.output_size = d_model

    def forward(self, x: Tensor):
        T = x.shape[1]
        if T > self.pos.shape[0]:
            raise ValueError(f"CausalTransformer: sequence of {T} steps exceeds max_len {self.pos.shape[0]}")
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=x.device)
        h = self.encoder(self.inp(x) + self.pos[:T], mask=mask, is_causal=True)
        return self.norm(h), None


class SequenceModel(nn.Module):
    """Embedding (token tasks) -> sequence model -> linear head, at every step or at the last."""

    def __init__(self, core: nn.Module, task: MemoryTask) -> None:
        super().__init__()
        self.embed = nn.Embedding(task.vocab, EMBED) if task.vocab else None
        self.core = core
        width = getattr(core, "output_size", HIDDEN)
        self.head = nn.Linear(width, task.out_size)
        self.per_step = task.per_step

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.core(self.embed(x) if self.embed is not None else x)
        return self.head(h if self.per_step else h[:, -1])


def build_model(name: str, task: MemoryTask, length: int) -> SequenceModel:
    """The model ``name`` sized for ``task`` at sequence ``length`` (the Transformer's positions)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    features = EMBED if task.vocab else task.input_size
    return SequenceModel(MODELS[name](features, length + task.extra_steps), task)
