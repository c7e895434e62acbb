"""``LanguageModel``: token embedding -> stacked rnnkit recurrence -> softmax over the vocabulary.

With the regularisers of AWD-LSTM (Merity et al. 2018) where they are cheap: embedding dropout
(whole words dropped from the embedding matrix), locked (variational) dropout on the embeddings,
between layers and on the output (one mask per sequence, shared over time), weight tying (Press &
Wolf 2017; Inan et al. 2017), weight drop (DropConnect on the recurrent matrices) and recurrent
dropout / zoneout inside the layers. The state is carried
by the caller for truncated BPTT over contiguous text (``forward(..., state=...)``).

``softmax_cutoffs`` makes the output an adaptive softmax (Grave et al. 2017) that keeps weight tying:
the ids below the first cutoff and one logit per tail cluster form the head; a tail cluster's words
are scored only for the targets that fall in it. With a word vocabulary ordered by frequency (as
:class:`~rnnkit.data.tokenizers.WordTokenizer` orders it) most targets are head words, so the output
layer, most of a word model's arithmetic, costs a fraction of the full softmax in training. The loss
and the probabilities are exact (a factorised softmax, not an approximation of the full one).
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnkit.errors import ConfigError
from rnnkit.export.bundle import BundleMixin, register_model, save_bundle
from rnnkit.layers import GRU, LSTM, RNN, IndRNN, MinGRU, MinLSTM

__all__ = ["LanguageModelConfig", "LanguageModel", "LMOutput", "LMState", "CELLS", "TextMethods"]

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "indrnn": IndRNN, "mingru": MinGRU, "minlstm": MinLSTM}


@dataclass(frozen=True)
class LanguageModelConfig:
    """Configuration of a :class:`LanguageModel` (every field has a default but ``vocab_size``).

    ``zoneout`` is the zoneout rate of the layers' state; for the LSTM cell ``zoneout_cell`` (when
    set) gives its cell state ``c`` a rate of its own, ``zoneout`` then acting on ``h`` only.
    """

    vocab_size: int
    """Number of token ids (set from the tokenizer by the trainers)."""
    cell: str = "lstm"
    """Recurrence of every layer: ``rnn``, ``lstm``, ``gru``, ``indrnn``, ``mingru`` or ``minlstm``."""
    embedding_size: int = 256
    """Width of the token embedding (and of the output layer's input when weights are tied)."""
    hidden_size: int = 512
    """Hidden units of each recurrent layer."""
    num_layers: int = 1
    """Recurrent layers stacked on the embedding."""
    proj_size: int = 0
    """LSTM only: project each layer's output h to this width (LSTMP, Sak et al. 2014); 0 = none. With
    ``tie_weights`` and ``hidden_size > embedding_size`` the last layer projects to ``embedding_size``
    instead (the tied output layer reads that width)."""
    layer_norm: bool = False
    """Layer-normalised LSTM or GRU layers (Ba et al. 2016), run by rnnkit's fused kernels."""
    tie_weights: bool = False
    """Share the embedding matrix with the output layer (Press & Wolf 2017)."""
    embedding_dropout: float = 0.0
    """Drop whole tokens' embedding rows while training (the same row everywhere in a batch)."""
    input_dropout: float = 0.0
    """Locked dropout on the embeddings fed to the first layer (one mask per sequence)."""
    hidden_dropout: float = 0.0
    """Locked dropout between recurrent layers (one mask per sequence)."""
    output_dropout: float = 0.0
    """Locked dropout on the last layer's output before the softmax (one mask per sequence)."""
    recurrent_dropout: float = 0.0
    """Variational dropout of h where it enters the recurrent weights (Gal & Ghahramani 2016)."""
    zoneout: float = 0.0
    """Probability that a unit keeps its previous state at a step while training (Krueger et al. 2017)."""
    zoneout_cell: float | None = None
    """LSTM only: a zoneout rate of its own for the cell state c (zoneout then acts on h only)."""
    weight_drop: float = 0.0
    """DropConnect on the recurrent weight matrices while training, a new mask per call (AWD-LSTM)."""
    forget_bias: float = 0.0
    """LSTM only: added to the forget gate's bias at initialisation (Jozefowicz et al. 2015)."""
    softmax_cutoffs: tuple[int, ...] = ()
    """Adaptive softmax (Grave et al. 2017): token ids where the tail clusters start; () = full softmax."""

    def __post_init__(self) -> None:
        try:
            self._check()
        except ConfigError as exc:  # named as TrainerConfig's are: "LanguageModelConfig.hidden_size ..."
            raise ConfigError(f"{type(self).__name__}.{exc}") from None

    def _check(self) -> None:
        for f in dataclasses.fields(self):  # a JSON or TOML "false" is a true string
            if f.type == "bool" and not isinstance(getattr(self, f.name), bool):
                raise ConfigError(f"{f.name}: expected true or false, got {getattr(self, f.name)!r}")
        cutoffs = self.softmax_cutoffs
        if not isinstance(cutoffs, (tuple, list)) or not all(isinstance(c, int) for c in cutoffs):
            raise ConfigError(f"softmax_cutoffs must be a list of ints, got {cutoffs!r}")
        object.__setattr__(self, "softmax_cutoffs", tuple(cutoffs))
        if list(cutoffs) != sorted(set(cutoffs)) or (cutoffs and not 0 < cutoffs[0] <= cutoffs[-1] < self.vocab_size):
            raise ConfigError(f"softmax_cutoffs must increase strictly within (0, vocab_size={self.vocab_size}), "
                              f"got {list(cutoffs)}")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 2:
            raise ConfigError(f"vocab_size must be an int >= 2, got {self.vocab_size!r}")
        if self.cell not in CELLS:
            raise ConfigError(f"cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if self.layer_norm and self.cell not in ("lstm", "gru"):
            raise ConfigError(f"layer_norm is available for the lstm and gru cells, not {self.cell!r}")
        if self.proj_size and self.cell != "lstm":
            raise ConfigError(f"proj_size applies to the lstm cell only, not {self.cell!r}")
        if self.proj_size and self.layer_norm:  # the layer refused it only once the data was read
            raise ConfigError("proj_size: the layer-norm LSTM has no projection; set proj_size=0 or layer_norm=false")
        for name in ("embedding_size", "hidden_size", "num_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("embedding_dropout", "input_dropout", "hidden_dropout", "output_dropout",
                     "recurrent_dropout", "zoneout", "weight_drop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.zoneout_cell is not None:
            if self.cell != "lstm":
                raise ConfigError(f"zoneout_cell is the zoneout of an LSTM's cell state c; the {self.cell} cell has none")
            if isinstance(self.zoneout_cell, bool) or not isinstance(self.zoneout_cell, (int, float)) or \
                    not 0.0 <= self.zoneout_cell < 1.0:
                raise ConfigError(f"zoneout_cell must be in [0, 1) or None, got {self.zoneout_cell!r}")
        if self.weight_drop and self.cell in ("mingru", "minlstm"):
            raise ConfigError(f"weight_drop acts on recurrent weights, which the {self.cell} cell does not have")
        if self.recurrent_dropout and self.cell in ("mingru", "minlstm"):  # was accepted and ignored
            raise ConfigError(f"recurrent_dropout masks the recurrent input h, which the {self.cell} cell's gates "
                              "do not read; use dropout or zoneout")
        if self.forget_bias and self.cell != "lstm":
            raise ConfigError(f"forget_bias is the LSTM's forget-gate bias; the {self.cell} cell has none")


class LMState(NamedTuple):
    """The recurrent state of every layer, in order (each a tensor or an ``LSTMState``)."""

    layers: tuple

    def detach(self) -> LMState:
        """The same state cut from the autograd graph, as a truncated-BPTT loop needs between chunks::

            out = model(x, state=state, targets=y); out.loss.backward(); state = out.state.detach()
        """
        return LMState(tuple(layer.detach() for layer in self.layers))


class LMOutput(NamedTuple):
    """``logits`` (B, T, V); ``loss`` (mean cross-entropy per token) when targets were given.

    With an adaptive softmax (``softmax_cutoffs``) ``logits`` are the log-probabilities (the same
    distribution under softmax) and are ``None`` when targets are given: the loss never needs them.
    """

    logits: Tensor | None
    loss: Tensor | None
    state: LMState


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout with one mask per sequence shared by all time steps (x is (B, T, F))."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p)
    return x * mask


class TextMethods:
    """``stream``, ``generate`` and ``complete`` for a model whose ``forward`` returns next-token
    logits (or log-probabilities) and which carries a ``tokenizer``."""

    def stream(self, prompt: str, max_tokens: int = 200, *, seed: int | None = None, **sampling):
        """Yield generated text piece by piece (see :mod:`rnnkit.models.text_generation`)."""
        from rnnkit.models.sampling import SamplingConfig
        from rnnkit.models.text_generation import stream, warn_unknown
        config = SamplingConfig(**sampling)  # checked first: a bad option is an error, not a warning
        warn_unknown(self, prompt)  # read as <unk> and said (UnknownTokensWarning)
        return stream(self, prompt, max_tokens, config, seed)

    def generate(self, prompt: str, max_tokens: int = 200, *, seed: int | None = None, **sampling) -> str:
        """The continuation of ``prompt``: ``temperature``, ``top_k``, ``top_p``,
        ``repetition_penalty``, ``greedy`` as in :class:`~rnnkit.models.sampling.SamplingConfig`."""
        return "".join(self.stream(prompt, max_tokens, seed=seed, **sampling))

    def complete(self, prefix: str, k: int = 3, **kw):
        """The ``k`` most likely next words after ``prefix`` with their probabilities, best first."""
        from rnnkit.models.text_generation import complete, read_part, warn_unknown
        if isinstance(prefix, str):
            warn_unknown(self, read_part(self, prefix))
        return complete(self, prefix, k, **kw)


@register_model("LanguageModel")
class LanguageModel(TextMethods, BundleMixin, nn.Module):
    """Recurrent language model; ``forward(input_ids, targets=None, state=None) -> LMOutput``."""

    config_class = LanguageModelConfig

    def __init__(self, config: LanguageModelConfig | None = None, *, tokenizer: Any = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = LanguageModelConfig(**kwargs)
        elif kwargs:
            raise TypeError("give a LanguageModelConfig or keyword arguments, not both")
        self.config = config
        if tokenizer is not None:
            from rnnkit.export.bundle import vocab_mismatch

            problem = vocab_mismatch(self, tokenizer)
            if problem:  # accepted, it failed at the first generate on "index out of range in self"
                raise ConfigError(f"tokenizer: {problem}")
        self.tokenizer = tokenizer
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_size)
        self.layers = nn.ModuleList()
        for i in range(c.num_layers):
            self.layers.append(self._make_layer(i))
        out = self.layers[-1].output_size
        self.proj = nn.Linear(out, c.embedding_size, bias=False) if c.tie_weights and out != c.embedding_size \
            else None
        self.decoder = nn.Linear(c.embedding_size if c.tie_weights else out, c.vocab_size)
        if c.tie_weights:
            # The shared matrix is also the output layer: torch's N(0, 1) embedding init gives rows of
            # norm sqrt(E) (20 at E=400), logits of that scale and inputs that saturate the first
            # layer's gates. AWD-LSTM's U(-0.1, 0.1) instead (measured on PTB: docs/results.md).
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            self.decoder.weight = self.embedding.weight
        # adaptive softmax: one head logit per tail cluster (the words keep the decoder's rows)
        self.cluster_logits = nn.Linear(self.decoder.in_features, len(c.softmax_cutoffs)) \
            if c.softmax_cutoffs else None

    def _make_layer(self, i: int) -> nn.Module:
        c = self.config
        last = i == c.num_layers - 1
        in_size = c.embedding_size if i == 0 else self.layers[i - 1].output_size
        # zoneout: one rate, or an LSTM's (h, c) rates when zoneout_cell is set
        zoneout = c.zoneout if c.zoneout_cell is None else (c.zoneout, c.zoneout_cell)
        kw: dict[str, Any] = dict(batch_first=True, zoneout=zoneout)
        if c.cell not in ("mingru", "minlstm"):
            kw["recurrent_dropout"] = c.recurrent_dropout
            kw["weight_drop"] = c.weight_drop
        if c.cell in ("lstm", "gru"):
            kw["layer_norm"] = c.layer_norm
        if c.cell == "lstm":
            kw["forget_bias"] = c.forget_bias
            # a tied model's last LSTM projects straight to the embedding size (Sak et al. 2014)
            tie_proj = c.tie_weights and last and c.hidden_size > c.embedding_size and not c.layer_norm
            kw["proj_size"] = c.embedding_size if tie_proj else c.proj_size
        return CELLS[c.cell](in_size, c.hidden_size, **kw)

    @classmethod
    def from_config(cls, data: dict) -> "LanguageModel":
        return cls(LanguageModelConfig(**data))

    def save(self, directory, **kwargs):
        kwargs.setdefault("tokenizer", self.tokenizer)
        return save_bundle(self, directory, **kwargs)

    def init_state(self, batch_size: int, *, device=None) -> LMState:
        return LMState(tuple(layer.init_state(batch_size, device=device) for layer in self.layers))

    def _embed(self, input_ids: Tensor) -> Tensor:
        c, weight = self.config, self.embedding.weight
        if self.training and c.embedding_dropout > 0:
            mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - c.embedding_dropout)
            weight = weight * mask / (1 - c.embedding_dropout)
        try:
            return F.embedding(input_ids, weight)  # (B, T, E)
        except IndexError:  # torch's own: "index out of range in self" (checked only when it fails)
            low, high = int(input_ids.min()), int(input_ids.max())
            raise ValueError(f"input_ids: expected token ids in [0, {c.vocab_size}) (the vocabulary), got ids "
                             f"from {low} to {high}") from None

    def forward(self, input_ids: Tensor, targets: Tensor | None = None, state: LMState | None = None,
                **_: Any) -> LMOutput:
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            got = f"{tuple(input_ids.shape)} {input_ids.dtype}" if isinstance(input_ids, Tensor) else \
                type(input_ids).__name__
            raise ValueError(f"LanguageModel expects input_ids as an integer tensor (batch, seq), got {got}")
        if targets is not None and (not isinstance(targets, Tensor) or targets.shape != input_ids.shape):
            # the adaptive softmax's gather used the first rows of a (5, 12) for a (2, 6) input, silently
            got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise ValueError(f"targets: expected shape {tuple(input_ids.shape)} (as input_ids), got {got}")
        if state is not None and not isinstance(state, LMState):
            raise TypeError(f"state: expected the LMState a call returned (or None), got {type(state).__name__}")
        c = self.config
        x = locked_dropout(self._embed(input_ids), c.input_dropout, self.training)
        states = state.layers if state is not None else (None,) * c.num_layers
        new_states = []
        for i, (layer, s) in enumerate(zip(self.layers, states)):
            x, s_new = layer(x, s)
            new_states.append(s_new)
            p = c.output_dropout if i == c.num_layers - 1 else c.hidden_dropout
            x = locked_dropout(x, p, self.training)
        if self.proj is not None:
            x = self.proj(x)
        if self.cluster_logits is not None:
            if targets is not None:
                return LMOutput(None, self._adaptive_loss(x.reshape(-1, x.shape[-1]), targets.reshape(-1)),
                                LMState(tuple(new_states)))
            return LMOutput(self._adaptive_log_probs(x), None, LMState(tuple(new_states)))
        logits = self.decoder(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return LMOutput(logits, loss, LMState(tuple(new_states)))

    # -- adaptive softmax ----------------------------------------------------------------------
    def _clusters(self) -> list[tuple[int, int]]:
        bounds = [*self.config.softmax_cutoffs, self.config.vocab_size]
        return list(zip(bounds[:-1], bounds[1:]))

    def _head_log_probs(self, x: Tensor) -> Tensor:
        """``(..., c0 + K)``: log-probabilities of the head words and of each tail cluster."""
        c0, w, b = self.config.softmax_cutoffs[0], self.decoder.weight, self.decoder.bias
        head = torch.cat([F.linear(x, w[:c0], None if b is None else b[:c0]), self.cluster_logits(x)], -1)
        return torch.log_softmax(head, -1)

    def _tail_log_probs(self, x: Tensor, lo: int, hi: int) -> Tensor:
        w, b = self.decoder.weight, self.decoder.bias
        return torch.log_softmax(F.linear(x, w[lo:hi], None if b is None else b[lo:hi]), -1)

    def _adaptive_loss(self, x: Tensor, targets: Tensor) -> Tensor:
        """Mean negative log-likelihood of ``targets`` (N,) given ``x`` (N, D): the head for all
        tokens, each tail cluster for the tokens whose target is in it."""
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.config.vocab_size):
            raise ValueError(f"targets: expected ids in [0, {self.config.vocab_size}), got "
                             f"[{int(targets.min())}, {int(targets.max())}]")
        c0 = self.config.softmax_cutoffs[0]
        head = self._head_log_probs(x)
        # head words index themselves; a tail word first takes its cluster's head column
        column, members = targets.clone(), []
        for k, (lo, hi) in enumerate(self._clusters()):
            idx = ((targets >= lo) & (targets < hi)).nonzero().squeeze(1)  # once per cluster
            column[idx] = c0 + k
            members.append((lo, hi, idx))
        logp = head.gather(1, column.unsqueeze(1)).squeeze(1)
        for lo, hi, idx in members:
            if idx.numel():
                tail = self._tail_log_probs(x.index_select(0, idx), lo, hi)
                logp = logp.index_add(0, idx, tail.gather(1, (targets[idx] - lo).unsqueeze(1)).squeeze(1))
        return -logp.mean()

    def _adaptive_log_probs(self, x: Tensor) -> Tensor:
        """``(..., V)`` log-probabilities of every word (for generation and evaluation)."""
        c0 = self.config.softmax_cutoffs[0]
        head = self._head_log_probs(x)
        parts = [head[..., :c0]]
        for k, (lo, hi) in enumerate(self._clusters()):
            parts.append(head[..., c0 + k:c0 + k + 1] + self._tail_log_probs(x, lo, hi))
        return torch.cat(parts, -1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
