"""LSTM autoencoder for reconstruction-error anomaly scores (Malhotra et al. 2016, EncDec-AD).

An encoder recurrence reads a window :math:`x_{1..W}` (standard-scaled on the training part)
into its last hidden state :math:`h_W`; a decoder recurrence fed :math:`h_W` at every step
reconstructs the window, :math:`\\hat x_t = V d_t`. Training minimises
:math:`\\frac1W \\sum_t \\lVert x_t - \\hat x_t \\rVert^2`. The error of a row is the mean of its
squared errors over every window that contains it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.models._forecast_net import CELLS

__all__ = ["AESpec", "LSTMAutoencoder", "fit_autoencoder", "row_errors"]


@dataclass(frozen=True)
class AESpec:
    """Shapes of an :class:`LSTMAutoencoder`."""

    n_features: int
    window: int
    hidden_size: int = 32
    cell: str = "lstm"


class LSTMAutoencoder(nn.Module):
    """Encoder-decoder recurrence that reconstructs its input window."""

    def __init__(self, spec: AESpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = CELLS[spec.cell](spec.n_features, spec.hidden_size, batch_first=True)
        self.decoder = CELLS[spec.cell](spec.hidden_size, spec.hidden_size, batch_first=True)
        self.out = nn.Linear(spec.hidden_size, spec.n_features)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, W, F) -> reconstruction (B, W, F)."""
        h, _ = self.encoder(x)
        code = h[:, -1:].expand(-1, x.shape[1], -1)  # (B, W, hidden)
        d, _ = self.decoder(code)
        return self.out(d)


def _windows(x: np.ndarray, W: int, stride: int) -> Tensor:
    starts = np.arange(0, len(x) - W + 1, stride)
    return torch.tensor(x[starts[:, None] + np.arange(W)], dtype=torch.float32)  # (N, W, F)


def fit_autoencoder(x: np.ndarray, spec: AESpec, *, max_steps: int = 600, lr: float = 3e-3,
                    batch_size: int = 32, seed: int = 0, max_time: float = 60.0) -> LSTMAutoencoder:
    """Train on windows (stride ``W // 4``) of scaled ``x`` (n, F); the last 10% validate."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    W = spec.window
    cut = max(int(len(x) * 0.9), W)
    train = _windows(x[:cut], W, max(1, W // 4))
    val = _windows(x[cut - W // 2:], W, max(1, W // 4)) if len(x) - cut >= W // 2 else None
    net = LSTMAutoencoder(spec)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    best, best_state, bad, deadline = float("inf"), None, 0, time.monotonic() + max_time
    for step in range(1, max_steps + 1):
        batch = train[torch.randint(len(train), (min(batch_size, len(train)),), generator=gen)]
        loss = ((net(batch) - batch) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if val is not None and step % 25 == 0:
            with torch.no_grad():
                current = float(((net(val) - val) ** 2).mean())
            best, best_state, bad = (current, copy.deepcopy(net.state_dict()), 0) if current < best \
                else (best, best_state, bad + 1)
            if bad >= 8:
                break
        if time.monotonic() > deadline:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    return net.eval()


def row_errors(net: LSTMAutoencoder, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Mean squared reconstruction error of each row over the windows (stride 1) holding it."""
    W = net.spec.window
    total, count = np.zeros(len(x)), np.zeros(len(x))
    starts = np.arange(0, len(x) - W + 1)
    with torch.no_grad():
        for lo in range(0, len(starts), batch):
            s = starts[lo: lo + batch]
            win = torch.tensor(x[s[:, None] + np.arange(W)], dtype=torch.float32)
            err = ((net(win) - win) ** 2).mean(-1).double().numpy()  # (B, W)
            np.add.at(total, s[:, None] + np.arange(W), err)
            np.add.at(count, s[:, None] + np.arange(W), 1.0)
    return total / np.maximum(count, 1.0)
