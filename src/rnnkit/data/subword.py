"""Learned subword tokenizers (BPE or unigram) trained with Hugging Face ``tokenizers``.

``tokenizers`` is an optional extra (``pip install 'rnnkit[text]'``); it is imported only
when a :class:`SubwordTokenizer` is fitted or loaded. Spaces are kept as a ``▁`` marker
before each word (the SentencePiece "metaspace" scheme, with nothing prepended), so
``decode(encode(text)) == text`` for any text made of known characters other than ``▁`` itself
(U+2581, which decodes as a space: the marker cannot be told from a literal one).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from rnnkit.data._tokenizer_base import Tokenizer, iter_texts
from rnnkit.errors import DataError

__all__ = ["SubwordTokenizer"]

_MODELS = ("bpe", "unigram")
_CHUNK = 1 << 16  # characters per training piece fed to the trainer


def _hf() -> Any:
    """Import Hugging Face ``tokenizers`` or explain how to install it."""
    try:
        import tokenizers
    except ImportError as exc:
        raise ImportError(
            "SubwordTokenizer needs the Hugging Face 'tokenizers' package; "
            "install it with: pip install 'rnnkit[text]'"
        ) from exc
    return tokenizers


def _pieces(texts: str | Iterable[str]) -> Iterator[str]:
    """Cut texts into lines grouped into pieces of about ``_CHUNK`` characters for training."""
    for text in iter_texts(texts):
        start = 0
        while start < len(text):
            end = text.find("\n", start + _CHUNK)
            end = len(text) if end < 0 else end + 1
            yield text[start:end]
            start = end


class SubwordTokenizer(Tokenizer):
    """Byte-pair-encoding or unigram subwords learned from text.

    Args:
        model: ``"bpe"`` or ``"unigram"``.
        vocab_size: the vocabulary size to learn (the trainer may stop short of it on small
            text, and BPE goes above it to keep every character of the text; :attr:`vocab_size`
            is the real size after fitting).
        min_freq: (BPE) the least count for a merge.
        unk_token: the unknown token, id 0.
        special_tokens: more special tokens, ids 1, 2, ... (e.g. ``["<pad>", "<bos>"]``).
        lower: lower-case the text first.
    """

    type_name = "subword"

    def __init__(
        self,
        *,
        model: str = "bpe",
        vocab_size: int = 8000,
        min_freq: int = 2,
        unk_token: str = "<unk>",
        special_tokens: Iterable[str] = (),
        lower: bool = False,
    ):
        if model not in _MODELS:
            raise ValueError(f"model must be one of {_MODELS}, got {model!r}")
        for name, value, least in (("vocab_size", vocab_size, 1), ("min_freq", min_freq, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if not isinstance(lower, bool):  # "no" would be taken as true
            raise ValueError(f"lower must be True or False, got {lower!r}")
        if isinstance(special_tokens, str):  # "<pad>" would be five one-character tokens
            raise ValueError(f"special_tokens must be a list of strings, got {special_tokens!r}")
        specials = [unk_token, *special_tokens]
        if not all(isinstance(t, str) and t for t in specials):
            raise ValueError(f"unk_token and special_tokens must be non-empty strings, got {specials!r}")
        if len(set(specials)) != len(specials):
            raise ValueError(f"unk_token and special_tokens must all differ, got {specials!r}")
        if vocab_size <= len(specials):
            raise ValueError(f"vocab_size must exceed the {len(specials)} special tokens")
        self.model, self.target_vocab_size, self.min_freq = model, vocab_size, min_freq
        self.unk_token, self.special_tokens, self.lower = unk_token, specials[1:], lower
        self._tok: Any = None

    def _new_hf(self) -> Any:
        hf = _hf()
        if self.model == "bpe":
            tok = hf.Tokenizer(hf.models.BPE(unk_token=self.unk_token))
        else:
            tok = hf.Tokenizer(hf.models.Unigram())
        if self.lower:
            tok.normalizer = hf.normalizers.Lowercase()
        tok.pre_tokenizer = hf.pre_tokenizers.Metaspace(prepend_scheme="never")
        tok.decoder = hf.decoders.Metaspace(prepend_scheme="never")
        return tok

    def _trainer(self) -> Any:
        hf = _hf()
        specials = [self.unk_token, *self.special_tokens]
        if self.model == "bpe":
            return hf.trainers.BpeTrainer(
                vocab_size=self.target_vocab_size, min_frequency=self.min_freq,
                special_tokens=specials, show_progress=False,
            )
        return hf.trainers.UnigramTrainer(
            vocab_size=self.target_vocab_size, special_tokens=specials,
            unk_token=self.unk_token, show_progress=False,
        )

    def fit(self, texts: str | Iterable[str]) -> SubwordTokenizer:
        """Learn the subword vocabulary from one text or an iterable of texts."""
        tok = self._new_hf()
        try:
            tok.train_from_iterator(_pieces(texts), trainer=self._trainer())
        except Exception as exc:  # the tokenizers library raises a bare Exception ("not large enough ...")
            raise DataError(f"{self.model} vocabulary of vocab_size={self.target_vocab_size}: {exc}; "
                            "give a larger vocab_size") from None
        if tok.get_vocab_size() <= 1 + len(self.special_tokens):
            raise DataError("no text to learn subwords from; pass non-empty training text")
        # Reload from JSON so the model equals what save/load gives (unigram scores can lose
        # a last digit in serialisation; this way a loaded tokenizer is the same one).
        self._tok = _hf().Tokenizer.from_str(tok.to_str())
        return self

    @property
    def vocab_size(self) -> int:
        return 0 if self._tok is None else int(self._tok.get_vocab_size())

    @property
    def unk_id(self) -> int | None:
        return None if self._tok is None else self._tok.token_to_id(self.unk_token)

    @property
    def hf_tokenizer(self) -> Any:
        """The underlying ``tokenizers.Tokenizer`` (``None`` before fitting)."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        self._check_text(text)
        self._check_fitted()
        return list(self._tok.encode(text).ids)

    def decode(self, ids: Iterable[int]) -> str:
        self._check_fitted()
        return str(self._tok.decode(self._check_ids(ids), skip_special_tokens=False))

    def unknown_tokens(self, text: str) -> set[str]:
        """Characters of ``text`` that encode to ``<unk>`` (whitespace included: a tab, or a space
        when the training text had none)."""
        self._check_text(text)
        self._check_fitted()
        unk = self.unk_id
        return {c for c in set(text) if unk in self._tok.encode(c).ids}

    unknown_chars = unknown_tokens

    def _state(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "model": self.model, "vocab_size": self.target_vocab_size, "min_freq": self.min_freq,
            "unk_token": self.unk_token, "special_tokens": self.special_tokens,
            "lower": self.lower, "hf": json.loads(self._tok.to_str()),
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any], source: str) -> SubwordTokenizer:
        keys = ("model", "vocab_size", "min_freq", "unk_token", "special_tokens", "lower")
        if not isinstance(state["special_tokens"], list):
            raise DataError(f"{source}: \"special_tokens\" must be a list of strings, "
                            f"got {state['special_tokens']!r}")
        try:
            tok = cls(**{k: state[k] for k in keys})
        except ValueError as exc:
            raise DataError(f"{source}: invalid subword tokenizer settings ({exc})") from None
        hf = _hf()  # a missing package is an ImportError saying what to install, not a bad file
        try:
            tok._tok = hf.Tokenizer.from_str(json.dumps(state["hf"]))
        except Exception as exc:  # tokenizers raises its own exception type
            raise DataError(
                f"{source}: the embedded Hugging Face tokenizer does not load ({exc}); "
                "re-save the tokenizer"
            ) from None
        missing = [t for t in (tok.unk_token, *tok.special_tokens) if tok._tok.token_to_id(t) is None]
        if missing:
            raise DataError(f"{source}: special token {missing[0]!r} is not in the embedded vocabulary; "
                            "re-save the tokenizer")
        return tok
