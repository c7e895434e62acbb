"""Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus, Holtzman et al.
2020) and the repetition penalty of CTRL (Keskar et al. 2019).

CTRL's rule divides a seen token's logit by the penalty when it is positive and multiplies it when
negative, which depends on where the logits happen to sit. Generation (:func:`~rnnkit.models.
text_generation.stream`) passes log-probabilities, which are all <= 0: the penalty then multiplies
each seen token's log-probability, so a token the model is sure of (log p near 0) is hardly
penalised and an unlikely one is pushed further down. :func:`filter_logits` on raw logits applies
CTRL's rule as written."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SamplingConfig", "filter_logits", "sample_next"]


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens. ``temperature=0`` or ``greedy=True`` takes the most likely token."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    greedy: bool = False

    def __post_init__(self) -> None:
        for name in ("temperature", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 1):
            raise ValueError(f"top_k must be an int >= 1, got {self.top_k!r}")
        if not isinstance(self.greedy, bool):  # "no" would be taken as true
            raise ValueError(f"greedy must be True or False, got {self.greedy!r}")
        if self.top_p is not None and (isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float))
                                       or not 0.0 < self.top_p <= 1.0):  # "0.5" raised a bare TypeError
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def filter_logits(logits: Tensor, cfg: SamplingConfig, history: Tensor | None = None) -> Tensor:
    """Return ``logits`` (V,) with the disallowed tokens at ``-inf`` and the temperature applied."""
    logits = logits.float().clone()
    if cfg.repetition_penalty != 1.0 and history is not None and history.numel():
        seen = history.unique()
        vals = logits[seen]
        logits[seen] = torch.where(vals > 0, vals / cfg.repetition_penalty, vals * cfg.repetition_penalty)
    if cfg.temperature > 0 and not cfg.greedy:
        # a temperature so small that float32 overflows (1e-40) is greedy: softmax(inf/nan) was
        # refused by multinomial; the largest logit takes all of the probability
        scaled = logits / cfg.temperature
        # only a temperature this small can overflow logits of any sensible size (a check on every
        # token cost 18 us at V=60, 400 us at V=50,000)
        if cfg.temperature < 1e-20 and not torch.isfinite(scaled[torch.isfinite(logits)]).all():
            scaled = torch.where(logits == logits.max(), 0.0, float("-inf"))
        elif cfg.temperature > 1e20:  # -inf / 1e39 (beyond float32) is nan: a banned token stays banned
            scaled = torch.where(torch.isfinite(logits), scaled, float("-inf"))
        logits = scaled
    if cfg.top_k is not None and cfg.top_k < logits.numel():
        kth = torch.topk(logits, cfg.top_k).values[-1]
        logits[logits < kth] = float("-inf")
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        # keep the smallest prefix whose mass reaches top_p: a token is dropped if the mass before it does
        drop = probs.cumsum(-1) - probs >= cfg.top_p
        logits[order[drop]] = float("-inf")
    return logits


def sample_next(logits: Tensor, cfg: SamplingConfig, history: Tensor | None = None,
                generator: torch.Generator | None = None) -> int:
    """One token id from ``logits`` (V,) under ``cfg``."""
    filtered = filter_logits(logits, cfg, history)
    if cfg.greedy or cfg.temperature == 0:
        return int(filtered.argmax())
    probs = torch.softmax(filtered, -1)
    if generator is not None and probs.device != generator.device:
        # a seed's generator lives on the CPU: draw there (a model on a GPU failed with "Expected a 'cuda'
        # device type for generator"), which also gives a seed the same tokens on any device
        probs = probs.cpu()
    return int(torch.multinomial(probs, 1, generator=generator))
