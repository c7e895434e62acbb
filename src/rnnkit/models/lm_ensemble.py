"""``LanguageModelEnsemble``: several language models over one vocabulary used as one model.

Each next-token probability is the mean of the members' probabilities (each member carries its own
state), so ``forward`` returns the mixture's log-probabilities where a :class:`LanguageModel`
returns logits: everything that applies ``log_softmax`` to ``logits`` (generation, ``complete``,
predictive text, :func:`rnnkit.recipes.lm.stateful_loss`) works on an ensemble unchanged. It saves
as one bundle (every member's config and weights, one tokenizer) and loads with ``rnnkit.load``.

    ens = LanguageModelEnsemble([rnnkit.load("a"), rnnkit.load("b")])
    ens.save("ens")             # or: rnnkit ensemble a b --out ens
    ens.generate("ROMEO:", 200, seed=0)

Members are trained apart (``benchmarks/quality/lm_ensemble.py`` trains them side by side) and
joined afterwards; an ensemble given as a member contributes its members (the mean is over all of
them). ``forward(..., targets)`` gives the mixture's loss, which is differentiable, so dynamic
evaluation (:func:`rnnkit.recipes.lm.dynamic_loss`) adapts all members to the mixture's loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit._files import a_or_an
from rnnkit.errors import ConfigError
from rnnkit.export.bundle import BundleMixin, config_from_dict, register_model
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig, LMOutput, TextMethods

__all__ = ["LanguageModelEnsemble", "LanguageModelEnsembleConfig", "LMEnsembleState", "ensemble_members"]


@dataclass(frozen=True)
class LanguageModelEnsembleConfig:
    """The members' configurations, in order (all over the same vocabulary)."""

    members: tuple[LanguageModelConfig, ...]

    def __post_init__(self) -> None:
        members = tuple(self.members) if isinstance(self.members, (list, tuple)) else None
        if not members:
            raise ConfigError(f"an ensemble needs at least one language model, got {self.members!r}")
        if not all(isinstance(m, LanguageModelConfig) for m in members):
            raise ConfigError("LanguageModelEnsembleConfig.members: expected LanguageModelConfig instances, got "
                              + ", ".join(sorted({type(m).__name__ for m in members})))
        sizes = [m.vocab_size for m in members]
        if len(set(sizes)) > 1:
            raise ConfigError(f"ensemble members have different vocabulary sizes {sizes}: an ensemble averages "
                              "probabilities of the same tokens")
        object.__setattr__(self, "members", members)


class LMEnsembleState(NamedTuple):
    """One :class:`~rnnkit.models.language_model.LMState` (or ``None``) per member."""

    members: tuple

    def detach(self) -> LMEnsembleState:
        """Every member's state cut from the autograd graph (see ``LMState.detach``)."""
        return LMEnsembleState(tuple(None if m is None else m.detach() for m in self.members))


def ensemble_members(models: Sequence[nn.Module]) -> list[LanguageModel]:
    """``models`` checked and flattened: language models over one vocabulary (same size; the same
    tokens where both have a tokenizer); an ensemble contributes its members."""
    if not isinstance(models, (list, tuple)):
        raise ConfigError(f"an ensemble takes a list of language models, got {type(models).__name__}")
    flat: list[LanguageModel] = []
    for m in models:
        if isinstance(m, LanguageModelEnsemble):
            flat.extend(m.members)
        elif isinstance(m, LanguageModel):
            flat.append(m)
        else:
            raise ConfigError(f"expected LanguageModel instances, got {type(m).__name__}")
    if not flat:
        raise ConfigError("an ensemble needs at least one language model, got an empty list")
    first = flat[0]
    for i, m in enumerate(flat[1:], 1):
        vocab = [getattr(getattr(k, "tokenizer", None), "vocab", None) for k in (first, m)]
        if m.config.vocab_size != first.config.vocab_size or (None not in vocab and vocab[0] != vocab[1]):
            raise ConfigError(f"ensemble member {i} has a different vocabulary from member 0 "
                              f"({m.config.vocab_size} against {first.config.vocab_size} tokens, or other tokens): "
                              "an ensemble averages probabilities of the same tokens")
    return flat


@register_model("LanguageModelEnsemble")
class LanguageModelEnsemble(TextMethods, BundleMixin, nn.Module):
    """The mean of several language models' next-token distributions;
    ``forward(input_ids, targets=None, state=None) -> LMOutput`` with log-probabilities as ``logits``."""

    config_class = LanguageModelEnsembleConfig

    def __init__(self, members: Sequence[nn.Module] | LanguageModelEnsembleConfig, *, tokenizer: Any = None) -> None:
        super().__init__()
        if isinstance(members, LanguageModelEnsembleConfig):
            models = [LanguageModel(c) for c in members.members]
        else:
            models = ensemble_members(members)
        self.members = nn.ModuleList(models)
        self.config = LanguageModelEnsembleConfig(tuple(m.config for m in models))
        if tokenizer is None:
            tokenizer = next((m.tokenizer for m in models if getattr(m, "tokenizer", None) is not None), None)
        self.tokenizer = tokenizer

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        """One tokenizer for the ensemble and its members (a bundle stores it once)."""
        from rnnkit.export.bundle import vocab_mismatch

        problem = None if value is None or "members" not in self._modules else vocab_mismatch(self, value)
        if problem:  # it replaced the members' own and saved a bundle whose generate failed on an index
            raise ConfigError(f"tokenizer: {problem}")
        self._tokenizer = value
        for m in self.members:
            m.tokenizer = value

    @classmethod
    def from_config(cls, data: dict) -> "LanguageModelEnsemble":
        members = data.get("members") if isinstance(data, dict) else None
        if not isinstance(members, list) or set(data) != {"members"} or \
                not all(isinstance(m, dict) for m in members):
            raise ValueError("expected {'members': [LanguageModelConfig fields, ...]}")
        return cls(LanguageModelEnsembleConfig(tuple(config_from_dict(LanguageModelConfig, m) for m in members)))

    @classmethod
    def from_bundles(cls, paths: Sequence[str | Path], map_location: str | torch.device = "cpu"
                     ) -> "LanguageModelEnsemble":
        """Load language-model bundles (or ensemble bundles) and join them."""
        from rnnkit.export import load
        models = [load(p, map_location=map_location) for p in paths]
        for p, m in zip(paths, models):
            if not isinstance(m, (LanguageModel, LanguageModelEnsemble)):
                raise ConfigError(f"{p} holds {a_or_an(type(m).__name__)}, not a language model")
        return cls(models)

    def init_state(self, batch_size: int, *, device=None) -> LMEnsembleState:
        return LMEnsembleState(tuple(m.init_state(batch_size, device=device) for m in self.members))

    def forward(self, input_ids: Tensor, targets: Tensor | None = None, state: LMEnsembleState | None = None,
                **_: Any) -> LMOutput:
        n = len(self.members)
        states = state.members if state is not None else (None,) * n
        if len(states) != n:
            raise ValueError(f"LanguageModelEnsemble: expected a state for each of its {n} members, got {len(states)}")
        log_probs, new_states = [], []
        for m, s in zip(self.members, states):
            out = m(input_ids, state=s)
            log_probs.append(torch.log_softmax(out.logits.float(), -1))
            new_states.append(out.state)
        mixed = log_probs[0] if n == 1 else torch.logsumexp(torch.stack(log_probs), 0) - math.log(n)
        loss = None
        if targets is not None:
            loss = F.nll_loss(mixed.reshape(-1, mixed.shape[-1]), targets.reshape(-1))
        return LMOutput(mixed, loss, LMEnsembleState(tuple(new_states)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"members={len(self.members)}, vocab_size={self.config.members[0].vocab_size}"

