"""Recipe: train a language model on a named data set or a text file, end to end.

Wires the layers together (data -> tokenizer -> streams -> :class:`LanguageModel` -> Trainer ->
bundle) so the CLI stays thin and a script can do the same in three lines::

    from rnnkit.recipes.lm import LMDataConfig, train_language_model
    from rnnkit.training import TrainerConfig
    result = train_language_model({"hidden_size": 256},  # the vocabulary's size comes from the tokenizer
                                  LMDataConfig(text="my.txt"), TrainerConfig(max_time=120))
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from rnnkit.errors import ConfigError, DataError
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.models.lm_ensemble import LanguageModelEnsemble

__all__ = ["LMDataConfig", "LMResult", "train_language_model", "build_tokenizer", "load_lm_text",
           "stateful_loss", "dynamic_loss"]

log = logging.getLogger(__name__)
TOKENIZERS = ("char", "word", "bpe", "unigram")


@dataclass(frozen=True)
class LMDataConfig:
    """Where the text comes from and how it is cut.

    ``dataset`` names a registered text data set (``rnnkit datasets``); ``text`` is a UTF-8 file
    instead (its last ``val_fraction`` becomes the validation text). ``tokenizer`` is ``char``,
    ``word`` (``vocab_size`` most frequent words, the rest ``<unk>``) or ``bpe``/``unigram``.
    """

    dataset: str = "pydocs"
    """Registered text data set to train on (``rnnkit datasets`` lists them); ignored with ``text``."""
    text: str = ""
    """A UTF-8 text file to train on instead; its last ``val_fraction`` is the validation text."""
    tokenizer: str = "char"
    """Tokens: ``char``, ``word`` (the rest ``<unk>``), or subwords: ``bpe`` or ``unigram``."""
    vocab_size: int = 10000
    """Word and subword tokenizers: the size of the vocabulary fitted on the training text."""
    val_fraction: float = 0.1
    """With ``text``: the share of the file, from its end, held out for validation."""
    batch_size: int = 32
    """Contiguous streams of the training text read side by side, the state carried between batches."""
    seq_len: int = 128
    """Tokens per stream per batch: back-propagation through time is truncated at this length."""
    max_chars: int = 0
    """Use only the first this many training characters (and the first max(max_chars // 9, 1000)
    validation characters); 0 = all."""

    def __post_init__(self) -> None:
        # types first: from TOML, seq_len = 2.5 failed deep in slicing and val_fraction = "0.1" in a comparison
        for name in ("dataset", "text", "tokenizer"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"data.{name}: expected a string, got {getattr(self, name)!r}")
        for name in ("vocab_size", "batch_size", "seq_len", "max_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"data.{name}: expected an integer, got {value!r}")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)):
            raise ConfigError(f"data.val_fraction: expected a number in (0, 0.5), got {self.val_fraction!r}")
        if self.max_chars < 0:
            raise ConfigError(f"data.max_chars: expected an integer >= 0 (0: all), got {self.max_chars!r}")
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"data.tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ConfigError(f"data.val_fraction must be in (0, 0.5), got {self.val_fraction!r}")
        for name in ("batch_size", "seq_len", "vocab_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be a positive int, got {getattr(self, name)!r}")


class LMResult(NamedTuple):
    model: LanguageModel
    bundle: Path
    val_loss: float
    metrics: dict[str, Any]


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """The first ``1 - val_fraction`` of the characters for training, the rest for validation."""
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]


def load_lm_text(data: LMDataConfig, split: str = "validation") -> tuple[str, str]:
    """(train text, held-out text) for the data config: the validation text, or with ``split="test"``
    a named data set's test text."""
    if data.text:
        if split != "validation":
            raise ConfigError(f"the bundle was trained on the text file {data.text}, which has no {split} "
                              "split (its last part was the validation text); give --text or --dataset")
        from rnnkit.data.text import read_text
        train, val = split_text(read_text(data.text), data.val_fraction)
    else:
        from rnnkit.data.registry import dataset_info, load_dataset
        info = dataset_info(data.dataset)
        if info.kind != "text":
            raise ConfigError(f"data set {data.dataset!r} is {info.kind} data, not text; "
                              "choose a text data set (rnnkit datasets) or a text file (--data.text to "
                              "train, --text to evaluate)")
        splits = load_dataset(data.dataset)  # local files only: RNNKIT_DATA or package data
        train, val = splits["train"], splits.get("val") or splits.get("valid")
        if split != "validation":
            if split not in splits:
                raise ConfigError(f"data set {data.dataset!r} has no {split} split (it has: "
                                  f"{', '.join(sorted(splits))})")
            val = splits[split]
    if data.max_chars:
        train, val = train[: data.max_chars], val[: max(data.max_chars // 9, 1000)]
    return train, val


def build_tokenizer(kind: str, train_text: str, vocab_size: int):
    """A tokenizer of ``kind`` fitted on the training text only."""
    from rnnkit.data.tokenizers import CharTokenizer, WordTokenizer
    if kind == "char":
        return CharTokenizer().fit(train_text)
    try:
        if kind == "word":
            tok = WordTokenizer(max_vocab=vocab_size, eos_token="<eos>")
        else:
            from rnnkit.data.subword import SubwordTokenizer
            tok = SubwordTokenizer(model=kind, vocab_size=vocab_size)
    except ValueError as exc:  # too small for the special tokens: name the option the user set
        raise ConfigError(f"data.vocab_size={vocab_size}: {exc}") from None
    tok = tok.fit(train_text)  # outside the try: a text without words is no vocab_size problem
    if kind == "word":
        return tok
    if tok.vocab_size > vocab_size:
        log.warning("data.vocab_size=%d: the %s vocabulary has %d tokens (it keeps every character of the "
                    "training text)", vocab_size, kind, tok.vocab_size)
    return tok


@torch.no_grad()
def stateful_loss(model, ids: torch.Tensor, seq_len: int = 256, batch_size: int = 1) -> float:
    """Mean next-token loss over ``ids`` read in order with the state carried (the natural measure
    for a recurrent model). ``batch_size > 1`` reads that many contiguous parts in parallel.

    ``model`` may be a :class:`~rnnkit.models.lm_ensemble.LanguageModelEnsemble` or a list of
    language models over the same vocabulary, scored as one: each token's probability the mean of
    the models' probabilities (each model carries its own state)."""
    if isinstance(model, (list, tuple)):
        model = LanguageModelEnsemble(model)
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):  # seq_len=-1 scored 0.0
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"stateful_loss: {name} must be an int >= 1, got {value!r}")
    ids = torch.as_tensor(ids).reshape(-1)  # a list of ids too, as dynamic_loss takes
    if ids.numel() < 2:
        raise DataError(f"the text has {ids.numel()} token(s); scoring needs at least 2 (one to predict from)")
    batch_size = min(batch_size, ids.numel() - 1)  # a short text: fewer parallel parts, none empty
    modes = [(m, m.training) for m in model.modules()]  # each member keeps its own mode
    model.eval()
    try:
        n = (ids.numel() - 1) // batch_size
        x = ids[: n * batch_size].view(batch_size, n)
        y = ids[1: n * batch_size + 1].view(batch_size, n)
        state, total = None, 0.0
        device = next(model.parameters()).device
        for t in range(0, n, seq_len):
            xs, ys = x[:, t:t + seq_len].to(device), y[:, t:t + seq_len].to(device)
            out = model(xs, ys, state=state)
            total += float(out.loss) * xs.numel()
            state = out.state
    finally:  # also when a call fails: the model was left in evaluation mode
        for m, mode in modes:  # parents first: each module ends in its own mode (layers pass theirs to their cells)
            m.train(mode)
    return total / (n * batch_size)


def dynamic_loss(model: LanguageModel | LanguageModelEnsemble, ids: torch.Tensor, seq_len: int = 64, lr: float = 0.01,
                 decay: float = 0.0) -> float:
    """Mean next-token loss over ``ids`` read in order with *dynamic evaluation* (Krause et al.
    2018): each segment of ``seq_len`` tokens is scored first, then the weights take one SGD step
    on that segment's loss, so later text is predicted by a model adapted to the text seen so far
    (as a keyboard adapts to its user). Each token is still scored before the model has seen it.
    ``decay`` pulls the weights back towards the trained ones after each step
    (``w += decay * (w0 - w)``, Krause et al.'s global prior). Works on a copy: ``model`` is left
    as it was. ``lr=0`` gives :func:`stateful_loss` with ``batch_size=1``. An ensemble adapts all of
    its members by the gradient of the mixture's loss.
    """
    import copy

    from rnnkit.training._tree import detach_tree

    if not (lr >= 0 and math.isfinite(lr)) or not 0.0 <= decay <= 1.0 or seq_len < 1:
        raise ConfigError(f"dynamic evaluation: expected lr >= 0, decay in [0, 1] and seq_len >= 1, "
                          f"got lr={lr}, decay={decay}, seq_len={seq_len}")
    work = copy.deepcopy(model).eval()
    params = [p for p in work.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params] if decay > 0 else []
    device = params[0].device
    ids = torch.as_tensor(ids).reshape(1, -1).to(device)
    n = ids.shape[1] - 1
    if n < 1:  # as stateful_loss: one token has nothing to predict (it divided by zero)
        raise DataError(f"the text has {n + 1} token(s); scoring needs at least 2")
    state, total = None, 0.0
    for t in range(0, n, seq_len):
        x, y = ids[:, t:min(t + seq_len, n)], ids[:, t + 1:min(t + seq_len, n) + 1]
        with torch.set_grad_enabled(lr > 0):  # lr 0 scores only: no graph to build
            out = work(x, y, state=state)
            total += float(out.loss.detach()) * x.numel()  # scored before this segment's update
            if lr > 0:
                grads = torch.autograd.grad(out.loss, params, allow_unused=True)
        state = detach_tree(out.state)
        if lr > 0:
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(params, grads)):
                    if g is not None:
                        p.sub_(g, alpha=lr)
                    if decay > 0:
                        p.add_(start[i] - p, alpha=decay)
    return total / n


def train_language_model(model_cfg: LanguageModelConfig | dict, data: LMDataConfig, trainer_cfg) -> LMResult:
    """Train a language model and save its bundle in ``<run>/bundle``. Returns the model and figures."""
    from rnnkit.data.text import LMStream
    from rnnkit.training import Trainer
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    if data.batch_size % world:  # named before the text is read, not at the first batch by each process
        raise ConfigError(f"data.batch_size: {data.batch_size} streams do not split over {world} processes; "
                          f"give a multiple of {world}")
    train_text, val_text = load_lm_text(data)
    tok = build_tokenizer(data.tokenizer, train_text, data.vocab_size)
    fields = model_cfg if isinstance(model_cfg, dict) else dataclasses.asdict(model_cfg)
    cfg = LanguageModelConfig(**{**fields, "vocab_size": tok.vocab_size})
    torch.manual_seed(trainer_cfg.seed)
    model = LanguageModel(cfg, tokenizer=tok)
    train = LMStream(tok.encode(train_text), data.batch_size, data.seq_len)
    val_ids = tok.encode(val_text)
    val = LMStream(val_ids, _val_streams(len(val_ids), data.batch_size), data.seq_len, name="validation text")
    log.info("language model: %s parameters, %d train tokens, vocabulary %d",
             f"{model.num_parameters():,}", train.num_tokens, tok.vocab_size)
    # the text file as an absolute path: `rnnkit evaluate BUNDLE` and the run's config.toml find it
    # from any folder; recorded when the run starts, so a killed run's config.toml has its [data]
    record = {**dataclasses.asdict(data), "text": str(Path(data.text).resolve()) if data.text else ""}
    trainer = Trainer(model, trainer_cfg, record={"data": record})
    trainer.fit(train, val)
    val_loss = stateful_loss(model, torch.as_tensor(val_ids), data.seq_len, batch_size=8)
    bundle = trainer_cfg.out_dir / "bundle"
    if _is_main_process():
        model.save(bundle, extra={"data": record, "val_loss": val_loss})
    metrics = {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50)),
               "bits_per_token": val_loss / math.log(2), "params": model.num_parameters(),
               "steps": trainer.state.step}
    return LMResult(model, bundle, val_loss, metrics)


def _val_streams(n_tokens: int, batch_size: int) -> int:
    """Parallel streams of the validation text: up to ``min(batch_size, 8)``, a multiple of the process
    count (each process reads whole rows), and at most half the tokens (a short text: fewer streams);
    it was ``min(batch_size, 8)``, which three processes or a short validation text refused with a
    batch size the user never set."""
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    fit = min(batch_size, 8, n_tokens // 2) // world * world
    if fit < world:
        raise DataError(f"validation text: {n_tokens} tokens are too few for {world} process(es) (each "
                        f"reads at least 2); use a larger data.val_fraction or more text")
    return fit


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
