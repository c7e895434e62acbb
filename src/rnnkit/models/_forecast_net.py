"""The recurrent half of the Forecaster: an rnnkit recurrence with a direct or recursive head.

Each step's input is :math:`[x_t, c^{past}_t, c^{future}_t, e_{id}, z]`: the normalised targets,
past covariates, known-future covariates (calendar), the series embedding and the static
covariates. With :math:`h_T` the last hidden state:

- ``direct`` (MQ-RNN style MLP head): all ``H`` steps at once,
  :math:`\\theta_{1..H} = \\mathrm{MLP}([h_T, e_{id}, z, c^{future}_{T+1..T+H}]) + W x_{T-L+1..T}`,
  the last term a linear autoregressive skip (LSTNet's highway) on the input window.
- ``recursive``: a one-step head on every hidden state, trained with teacher forcing over the
  whole window and rolled forward at prediction time on its own outputs.

Heads: ``quantile`` outputs quantiles kept in order by construction, :math:`q_{k+1} = q_k +
\\mathrm{softplus}(\\cdot)` away from the median, trained with the pinball loss; ``gaussian``
outputs :math:`\\mu` and :math:`\\sigma = \\mathrm{softplus}(\\cdot) + 10^{-3}`, trained with the
negative log-likelihood :math:`\\log\\sigma + (x-\\mu)^2 / 2\\sigma^2`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.layers import GRU, LSTM, RNN, MinGRU, MinLSTM

__all__ = ["NetSpec", "ForecastNet", "head_loss", "to_quantiles", "CELLS"]

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN, "mingru": MinGRU, "minlstm": MinLSTM}


@dataclass(frozen=True)
class NetSpec:
    """Shapes and options of one :class:`ForecastNet` (stored in the bundle's config)."""

    n_targets: int
    n_past: int
    n_future: int
    n_static: int
    n_series: int
    input_len: int
    horizon: int
    cell: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    embed_size: int = 4
    dropout: float = 0.0
    head: str = "quantile"
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    strategy: str = "direct"

    @property
    def n_params(self) -> int:
        """Distribution parameters per target and step."""
        return 2 if self.head == "gaussian" else len(self.quantiles)

    @property
    def step_inputs(self) -> int:
        embed = self.embed_size if self.n_series > 1 else 0
        return self.n_targets + self.n_past + self.n_future + embed + self.n_static


class ForecastNet(nn.Module):
    """Recurrence + head on normalised windows; outputs distribution parameters."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = s = spec
        self.embed = nn.Embedding(s.n_series, s.embed_size) if s.n_series > 1 else None
        self.rnn = CELLS[s.cell](s.step_inputs, s.hidden_size, num_layers=s.num_layers,
                                 batch_first=True, dropout=s.dropout if s.num_layers > 1 else 0.0)
        out_steps = s.horizon if s.strategy == "direct" else 1
        head_in = s.hidden_size + (s.embed_size if self.embed is not None else 0) + s.n_static
        if s.strategy == "direct":
            head_in += s.horizon * s.n_future
            self.skip = nn.Linear(s.input_len * s.n_targets, s.horizon * s.n_targets)
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)
        self.head = nn.Sequential(nn.Linear(head_in, s.hidden_size), nn.ReLU(), nn.Dropout(s.dropout),
                                  nn.Linear(s.hidden_size, out_steps * s.n_targets * s.n_params))

    def _context(self, sid: Tensor, static: Tensor) -> Tensor:
        parts = [static]
        if self.embed is not None:
            parts.insert(0, self.embed(sid))
        return torch.cat(parts, -1)  # (B, E + S)

    def _steps(self, x: Tensor, past: Tensor, fut: Tensor, ctx: Tensor) -> Tensor:
        T = x.shape[1]
        return torch.cat([x, past, fut, ctx.unsqueeze(1).expand(-1, T, -1)], -1)  # (B, T, F)

    def forward(self, x: Tensor, past: Tensor, fut_hist: Tensor, fut_next: Tensor, sid: Tensor,
                static: Tensor) -> Tensor:
        """Direct: ``(B, H, C, n_params)``; recursive: one-step params ``(B, L, C, n_params)``.

        ``x`` (B, L, C), ``past`` (B, L, P), ``fut_hist`` (B, L, K) at the window's steps and
        ``fut_next`` (B, H, K) at the horizon's (recursive: the window's next steps, (B, L, K)).
        """
        s, B = self.spec, x.shape[0]
        ctx = self._context(sid, static)
        if s.strategy == "recursive":
            h, _ = self.rnn(self._steps(x, past, fut_next, ctx))  # (B, L, hidden)
            raw = self.head(torch.cat([h, ctx.unsqueeze(1).expand(-1, h.shape[1], -1)], -1))
            return self._shape(raw.view(B, h.shape[1], s.n_targets, s.n_params), None)
        h, _ = self.rnn(self._steps(x, past, fut_hist, ctx))
        raw = self.head(torch.cat([h[:, -1], ctx, fut_next.reshape(B, -1)], -1))
        loc = self.skip(x.reshape(B, -1)).view(B, s.horizon, s.n_targets)
        return self._shape(raw.view(B, s.horizon, s.n_targets, s.n_params), loc)

    def step_params(self, x_t: Tensor, fut_t: Tensor, ctx: Tensor, state):
        """Recursive roll-out: one step, ``(params (B, C, n_params), state)``."""
        h, state = self.rnn.step(torch.cat([x_t, fut_t, ctx], -1), state)
        raw = self.head(torch.cat([h, ctx], -1)).view(x_t.shape[0], 1, self.spec.n_targets, -1)
        return self._shape(raw, None)[:, 0], state

    def _shape(self, raw: Tensor, loc: Tensor | None) -> Tensor:
        """Raw outputs -> ordered quantiles, or (mu, sigma); ``loc`` shifts the centre."""
        s = self.spec
        if s.head == "gaussian":
            mu = raw[..., 0] + (loc if loc is not None else 0.0)
            return torch.stack([mu, F.softplus(raw[..., 1]) + 1e-3], -1)
        k = s.quantiles.index(0.5)
        centre = raw[..., k] + (loc if loc is not None else 0.0)
        steps = F.softplus(raw)
        up = centre.unsqueeze(-1) + torch.cumsum(steps[..., k + 1:], -1)
        down = centre.unsqueeze(-1) - torch.cumsum(steps[..., :k].flip(-1), -1).flip(-1)
        return torch.cat([down, centre.unsqueeze(-1), up], -1)


def head_loss(params: Tensor, target: Tensor, spec: NetSpec) -> Tensor:
    """Pinball loss (quantile head) or Gaussian NLL; ``target`` shaped like ``params[..., 0]``."""
    if spec.head == "gaussian":
        mu, sigma = params[..., 0], params[..., 1]
        return (torch.log(sigma) + 0.5 * ((target - mu) / sigma) ** 2).mean()
    levels = torch.tensor(spec.quantiles, dtype=params.dtype, device=params.device)
    diff = target.unsqueeze(-1) - params
    return torch.maximum(levels * diff, (levels - 1.0) * diff).mean() * 2.0


def to_quantiles(params: Tensor, spec: NetSpec, levels: tuple[float, ...]) -> Tensor:
    """Distribution parameters -> quantiles at ``levels`` (last axis)."""
    if spec.head == "gaussian":
        z = torch.tensor([math.sqrt(2.0) * torch.erfinv(torch.tensor(2 * q - 1.0)).item()
                          for q in levels], dtype=params.dtype, device=params.device)
        return params[..., :1] + params[..., 1:2] * z
    return interp_quantiles(params, torch.tensor(spec.quantiles, dtype=params.dtype), levels)


def interp_quantiles(q: Tensor, known: Tensor, levels) -> Tensor:
    """Piecewise-linear quantile function through ``(known, q)`` at ``levels`` (clamped ends)."""
    want = torch.as_tensor(levels, dtype=q.dtype, device=q.device).clamp(known[0], known[-1])
    idx = torch.searchsorted(known, want.contiguous()).clamp(1, len(known) - 1)
    lo, hi = known[idx - 1], known[idx]
    w = ((want - lo) / (hi - lo)).clamp(0, 1)
    if want.dim() == 1:
        return q[..., idx - 1] * (1 - w) + q[..., idx] * w
    qi = torch.gather(q, -1, idx - 1) * (1 - w) + torch.gather(q, -1, idx) * w
    return qi
