"""``ForecasterConfig``: the Forecaster's options, validated on construction, and window sizes."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rnnkit.data.timeseries import NAN_POLICIES
from rnnkit.errors import ConfigError, DataError
from rnnkit.models._forecast_net import CELLS

__all__ = ["ForecasterConfig", "auto_sizes", "MIN_EXTRA"]

log = logging.getLogger(__name__)
MIN_EXTRA = 12  # history beyond the horizon needed to cut at least a few training windows
_CHOICES = {"normalize": ("es", "scale"), "trend": ("auto", "damped", "none"), "log": ("auto", "always", "never"),
            "strategy": ("direct", "recursive"), "head": ("quantile", "gaussian"),
            "nan": NAN_POLICIES, "cell": tuple(CELLS)}


def _names(value: object) -> tuple[str, ...]:
    """A column list from a tuple/list or a comma-separated string."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in (value or ()))


@dataclass(frozen=True)
class ForecasterConfig:
    """Options of :class:`~rnnkit.models.forecaster.Forecaster` (every field has a default).

    Data: ``horizon``; ``season_length`` (0: from the time index); ``target`` (DataFrame
    columns to predict, "a,b" allowed; default all columns that are not covariates);
    ``future_covariates`` (covariate columns known in advance); ``calendar`` (add sine/cosine
    calendar features of a DatetimeIndex); ``nan`` (``refuse`` or ``interpolate`` NaNs and
    missing timestamps).

    Model: ``normalize`` (``es``: exponential-smoothing level and season, the ES hybrid;
    ``scale``: plain standard scaling); ``trend`` (the smoothing's damped trend: ``auto`` keeps
    it when it lowers the AIC, ``damped``, ``none``); ``log`` (model positive series in logs: ``auto`` when
    every value of the fitted series is positive; values <= 0 given later are refused); ``strategy`` (``direct`` MLP head for all steps, or
    ``recursive`` one-step head rolled forward); ``head`` (``quantile`` or ``gaussian``);
    ``quantiles`` (levels with two decimals, must include 0.5); ``cell``, ``hidden_size``,
    ``num_layers``, ``embed_size`` (series-id embedding of a global model), ``dropout``;
    ``input_len`` (0: auto, ``max(horizon, 2m, 8)`` shortened to fit short series).

    Training: ``val_size`` (0: auto, the last ``max(horizon, min(n/10, 20 horizon))`` rows
    hold out for early stopping); ``ensemble`` (seeds averaged; 0: 5 for small data, 2 for
    large); ``lr``, ``batch_size``, ``max_steps`` (per member), ``patience`` (evaluations of
    25 steps without improvement), ``max_time`` (seconds for the whole fit), ``refit`` (retrain
    on all rows for the best number of steps), ``rnn_weight`` (the share of the network's
    correction of the smoothing forecast kept in the point forecast; ``None``: auto, 0.7 — a
    forecast combination with the smoothing model — for a series without covariates, 1.0 with
    past or future covariates, whose effect the smoothing model lacks and the 0.7 would shrink
    by 30%; the resolved value is kept in ``fitted_["rnn_weight"]``; ``normalize="scale"``
    keeps all of it), ``calibrate``
    (rescale the direct strategy's quantiles around the median so that they cover the
    validation targets at their nominal rates; needs 100+ validation targets, not with
    ``refit`` or ``recursive``: else a warning is logged and nothing changes; off by default:
    the validation tail also picks the early-stopping step, which biases it), ``n_samples``
    (recursive sample paths),
    ``threads`` (torch CPU threads while fitting, restored afterwards; 0 leaves them), ``seed``.
    """

    horizon: int = 24
    season_length: int = 0
    target: tuple[str, ...] = ()
    future_covariates: tuple[str, ...] = ()
    calendar: bool = True
    nan: str = "refuse"
    normalize: str = "es"
    trend: str = "auto"
    log: str = "auto"
    strategy: str = "direct"
    head: str = "quantile"
    quantiles: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
    cell: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    embed_size: int = 4
    dropout: float = 0.0
    input_len: int = 0
    val_size: int = 0
    ensemble: int = 0
    lr: float = 1e-3
    batch_size: int = 32
    max_steps: int = 600
    patience: int = 8
    max_time: float = 120.0
    refit: bool = False
    calibrate: bool = False
    n_samples: int = 200
    rnn_weight: float | None = None
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", _names(self.target))
        object.__setattr__(self, "future_covariates", _names(self.future_covariates))
        object.__setattr__(self, "quantiles", tuple(sorted(float(q) for q in self.quantiles)))
        both = [c for c in self.target if c in self.future_covariates]
        if both:
            raise ConfigError(f"target and future_covariates: expected different columns, got {both[0]!r} "
                              "in both (a target's future is what is forecast, it cannot be given)")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name}: expected one of {choices}, got {getattr(self, name)!r}")
        for name in ("horizon", "hidden_size", "num_layers", "embed_size", "batch_size",
                     "max_steps", "patience", "n_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}: expected a positive int, got {value!r}")
        for name in ("season_length", "input_len", "val_size", "ensemble", "threads", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name}: expected an int >= 0, got {value!r}")
        self._check_numbers()

    def _check_numbers(self) -> None:
        qs = self.quantiles
        if 0.5 not in qs or any(not 0 < q < 1 or round(q, 2) != q for q in qs):
            raise ConfigError(f"quantiles: expected levels in (0, 1) with two decimals including "
                              f"0.5, got {qs}")
        if self.rnn_weight is not None and (isinstance(self.rnn_weight, bool) or not 0.0 < self.rnn_weight <= 1.0):
            raise ConfigError(f"rnn_weight: expected a value in (0, 1], got {self.rnn_weight!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: expected a value in [0, 1), got {self.dropout!r}")
        if not self.lr > 0 or not self.max_time > 0:
            raise ConfigError(f"lr and max_time: expected positive numbers, got {self.lr!r}, "
                              f"{self.max_time!r}")

    @property
    def log_flag(self) -> bool | None:
        """``None`` (auto), True or False for :func:`rnnkit.models._es.fit_es`."""
        return {"auto": None, "always": True, "never": False}[self.log]


def auto_sizes(lengths: list[int], o: ForecasterConfig, m: int) -> tuple[int, int]:
    """``(input_len, val_size)`` that leave at least 16 (else 8) training windows per series.

    Raises:
        DataError: the shortest series is shorter than ``horizon + 12`` rows, or an explicit
            ``input_len`` does not fit.
    """
    n, H = min(lengths), o.horizon
    if n < H + MIN_EXTRA:
        raise DataError(f"y has {n} rows but horizon={H} needs at least {H + MIN_EXTRA} (horizon + "
                        f"{MIN_EXTRA}); shorten the horizon or give more history")
    want = o.input_len or max(H, 2 * m if m > 1 else 0, 8)
    val = o.val_size or max(H, min(n // 10, 20 * H))
    for V, windows in ((val, 16), (0, 16), (0, 8)):
        room = n - V - H - windows + 1  # the longest input that leaves `windows` windows
        if room >= min(want, 4):
            L = min(want, room)
            break
    else:
        L, V = max(2, n - H - 7), 0
    if o.input_len and L < o.input_len:
        raise DataError(f"input_len={o.input_len} is too long for a series of {n} rows with "
                        f"horizon={H}; use input_len <= {L} or 0 (auto)")
    if L < want:
        log.info("forecaster: input_len shortened to %d (series of %d rows)", L, n)
    return L, V
