"""Windows and the small fit loop of the Forecaster (Adam, clipping, early stopping, refit).

A window at origin :math:`T` holds :math:`z_t = (u_t - \\ell_T - \\hat s_t) / \\sigma` for
:math:`t = T-L+1 .. T+H` (see :mod:`rnnkit.models._es`): the first ``L`` are the inputs, the last
``H`` the targets. Training windows have every target inside the training part; validation
windows have their targets in the held-out tail. Early stopping keeps the weights with the best
validation loss; with ``refit`` a fresh network is then trained on every window for the number
of steps that was best.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from rnnkit.models._es import EsParams, damped_sum, es_filter, to_u
from rnnkit.models._forecast_net import ForecastNet, NetSpec, head_loss

__all__ = ["Prepared", "Windows", "prepare_series", "horizon_offset", "origin_z", "make_windows",
           "fit_net", "FitPlan", "torch_threads"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """One series in model space: smoothing state and scaled covariates, all ``(n, .)``."""

    u: np.ndarray  # (n, C) targets in the smoothing space
    level: np.ndarray  # (n, C)
    trend: np.ndarray  # (n, C)
    season: np.ndarray  # (n, C)
    sigma: np.ndarray  # (C,)
    m: tuple[int, ...]  # season length used per channel
    phi: tuple[float, ...]  # trend damping per channel (0: no trend)
    past: np.ndarray  # (n, P) scaled
    future: np.ndarray  # (n + extra, K) scaled known-future covariates (calendar included)
    static: np.ndarray  # (S,)


@dataclass(frozen=True)
class Windows:
    """Tensors of many windows (all series)."""

    z: torch.Tensor  # (N, L + H, C)
    past: torch.Tensor  # (N, L, P)
    future: torch.Tensor  # (N, L + H, K)
    sid: torch.Tensor  # (N,)
    static: torch.Tensor  # (N, S)

    def __len__(self) -> int:
        return self.z.shape[0]

    def take(self, idx: torch.Tensor) -> Windows:
        return Windows(self.z[idx], self.past[idx], self.future[idx], self.sid[idx], self.static[idx])


@dataclass(frozen=True)
class FitPlan:
    """How to train one member."""

    lr: float = 3e-3
    batch_size: int = 32
    max_steps: int = 800
    eval_every: int = 25
    patience: int = 8
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    refit: bool = True


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (0: unchanged), restoring the setting afterwards.

    Tiny recurrent models train several times faster on one thread than on a busy pool.
    """
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prepare_series(target: np.ndarray, params: list[EsParams], past: np.ndarray,
                   future: np.ndarray, static: np.ndarray) -> Prepared:
    """Filter every channel with its fitted parameters (covariates already scaled)."""
    cols = [es_filter(p, target[:, c]) for c, p in enumerate(params)]
    u = np.stack([to_u(p, target[:, c]) for c, p in enumerate(params)], 1)
    level, trend, season = (np.stack([c[k] for c in cols], 1) for k in range(3))
    return Prepared(u, level, trend, season, np.array([p.sigma for p in params]),
                    tuple(p.season_length for p in params), tuple(p.phi for p in params),
                    past, future, static)


def horizon_offset(p: Prepared, origins: np.ndarray, H: int) -> np.ndarray:
    """:math:`\\sum_{i \\le h} \\phi^i b_T + s_{T+h-m\\lceil h/m \\rceil}` for ``h = 1..H``: (N, H, C)."""
    h = np.arange(1, H + 1)
    out = np.zeros((len(origins), H, p.u.shape[1]))
    for c, (m, phi) in enumerate(zip(p.m, p.phi)):
        if m > 1:
            out[..., c] = p.season[origins[:, None] + h - m * np.ceil(h / m).astype(int), c]
        out[..., c] += damped_sum(phi, H)[None] * p.trend[origins, c][:, None]
    return out


def origin_z(p: Prepared, origins: np.ndarray, L: int, H: int, known: int) -> np.ndarray:
    """Normalised values ``(N, L + H, C)`` around each origin (steps past ``known`` are 0)."""
    steps = origins[:, None] + np.arange(-L + 1, H + 1)  # (N, L + H)
    clipped = np.minimum(steps, known - 1)
    out = np.zeros((len(origins), L + H, p.u.shape[1]))
    ahead = horizon_offset(p, origins, H)  # (N, H, C)
    for c in range(p.u.shape[1]):
        offset = np.concatenate([p.season[clipped[:, :L], c], ahead[..., c]], 1)
        out[..., c] = (p.u[clipped, c] - p.level[origins, c][:, None] - offset) / p.sigma[c]
    out[steps >= known] = 0.0
    return out


def make_windows(series: list[Prepared], L: int, H: int, ranges: list[tuple[int, int]]) -> Windows:
    """Windows at origins ``T`` in ``[lo, hi)`` of each series (its own range); origins start
    once a full input window and a full season of smoothing state exist."""
    parts = []
    for i, (p, (lo, hi)) in enumerate(zip(series, ranges)):
        origins = np.arange(max(lo, L - 1, max(p.m) - 1), hi)
        if len(origins) == 0:
            continue
        steps = origins[:, None] + np.arange(-L + 1, H + 1)
        z = origin_z(p, origins, L, H, len(p.u))
        fut = p.future[np.minimum(steps, len(p.future) - 1)]
        parts.append((z, p.past[steps[:, :L]], fut, np.full(len(origins), i),
                      np.repeat(p.static[None], len(origins), 0)))
    if not parts:
        raise ValueError("no windows fit in the given ranges")
    cat = [np.concatenate([part[k] for part in parts]) for k in range(5)]
    f = torch.float32
    return Windows(torch.tensor(cat[0], dtype=f), torch.tensor(cat[1], dtype=f),
                   torch.tensor(cat[2], dtype=f), torch.tensor(cat[3], dtype=torch.long),
                   torch.tensor(cat[4], dtype=f))


def window_loss(net: ForecastNet, w: Windows) -> torch.Tensor:
    """The head loss of ``net`` on windows ``w`` (direct: horizon only; recursive: every step)."""
    s = net.spec
    L = s.input_len
    if s.strategy == "recursive":
        x = w.z[:, :-1]
        params = net(x, x.new_zeros(x.shape[0], x.shape[1], 0), w.future[:, :-1], w.future[:, 1:],
                     w.sid, w.static)
        return head_loss(params, w.z[:, 1:], s)
    params = net(w.z[:, :L], w.past, w.future[:, :L], w.future[:, L:], w.sid, w.static)
    return head_loss(params, w.z[:, L:], s)


def _evaluate(net: ForecastNet, w: Windows) -> float:
    net.eval()
    with torch.no_grad():
        loss = float(window_loss(net, w))
    net.train()
    return loss


def _train(net: ForecastNet, train: Windows, val: Windows | None, plan: FitPlan, steps: int,
           gen: torch.Generator, deadline: float) -> tuple[int, float]:
    """Run up to ``steps`` Adam steps; with ``val``, keep the best weights. ``(best_step, loss)``."""
    opt = torch.optim.AdamW(net.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
    best, best_step, best_state, bad = float("inf"), steps, None, 0
    net.train()
    for step in range(1, steps + 1):
        idx = torch.randint(len(train), (min(plan.batch_size, len(train)),), generator=gen)
        loss = window_loss(net, train.take(idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), plan.max_grad_norm)
        opt.step()
        if val is not None and (step % plan.eval_every == 0 or step == steps):
            current = _evaluate(net, val)
            if current < best - 1e-6:
                best, best_step, best_state, bad = current, step, copy.deepcopy(net.state_dict()), 0
            else:
                bad += 1
            if bad >= plan.patience:
                break
        if time.monotonic() > deadline:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return best_step, best


def fit_net(spec: NetSpec, train: Windows, val: Windows | None, everything: Windows,
            plan: FitPlan, seed: int, deadline: float) -> tuple[ForecastNet, dict]:
    """Train one ensemble member: early stopping on ``val``, then (``plan.refit``) a refit."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = ForecastNet(spec)
    init = copy.deepcopy(net.state_dict())
    best_step, val_loss = _train(net, train, val, plan, plan.max_steps, gen, deadline)
    # without a validation tail there is no loss: None, not inf (config.json holds JSON values only)
    info = {"best_step": best_step, "val_loss": val_loss if np.isfinite(val_loss) else None}
    if plan.refit and val is not None and time.monotonic() < deadline:
        net.load_state_dict(init)
        steps = int(best_step * len(everything) / max(len(train), 1))  # same passes over data
        _train(net, everything, None, plan, max(steps, plan.eval_every), gen, deadline)
    return net, info
