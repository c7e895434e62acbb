"""Helpers shared by the layer tests."""

from __future__ import annotations

import torch

import rnnkit

# (torch class name, extra constructor kwargs)
TORCH_KINDS = [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}), ("LSTM", {"proj_size": 5}),
               ("GRU", {})]
KIND_IDS = ["rnn_tanh", "rnn_relu", "lstm", "lstm_proj", "gru"]


def pair(kind: str, kw: dict, dtype, backend: str = "auto", **common):
    """A torch.nn layer and the rnnkit layer with its weights loaded."""
    tm = getattr(torch.nn, kind)(6, 9, **kw, **common).to(dtype)
    rm = getattr(rnnkit, kind)(6, 9, **kw, **common, backend=backend).to(dtype)
    rm.load_state_dict(tm.state_dict())
    return tm, rm


def as_tuple(state):
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def assert_close_all(a, b, tol):
    for x, y in zip(as_tuple(a), as_tuple(b)):
        assert torch.allclose(x, y, atol=tol, rtol=0), (x - y).abs().max()


def loss_of(y, state):
    return y.square().sum() + sum(s.sin().sum() for s in as_tuple(state))
