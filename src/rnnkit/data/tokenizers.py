"""Tokenizers: characters, words (PTB style) and learned subwords (BPE / unigram).

All share the :class:`Tokenizer` interface: ``fit`` / ``train``, ``encode``, ``decode``,
``vocab_size``, ``unk_id``, ``to_json`` / ``from_json`` and ``save`` / ``load`` of a plain-JSON
``tokenizer.json``. :func:`load_tokenizer` reads any of them.

>>> tok = CharTokenizer.train("hello")
>>> tok.decode(tok.encode("hole"))
'hole'
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from rnnkit.data._tokenizer_base import (
    TOKENIZER_FILE,
    Tokenizer,
    is_word_char,
    iter_texts,
    trailing_word,
)
from rnnkit.data.subword import SubwordTokenizer
from rnnkit.errors import DataError

__all__ = [
    "Tokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "SubwordTokenizer",
    "load_tokenizer",
    "is_word_char",
    "trailing_word",
    "TOKENIZER_FILE",
]

REPLACEMENT_CHAR = "\ufffd"


def _check_vocab(vocab: Any, specials: list[str], source: str) -> list[str]:
    """Validate a stored vocabulary: strings, no duplicates, the specials first."""
    if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
        raise DataError(f"{source}: \"vocab\" must be a list of strings; re-save the tokenizer")
    if len(set(vocab)) != len(vocab):
        dup = next(t for t, c in Counter(vocab).items() if c > 1)
        raise DataError(f"{source}: token {dup!r} appears twice in \"vocab\"; remove the duplicate")
    if vocab[: len(specials)] != specials:
        raise DataError(
            f"{source}: \"vocab\" must start with the special tokens {specials}; "
            "re-save the tokenizer"
        )
    return vocab


class CharTokenizer(Tokenizer):
    """One id per character.

    By default id 0 is ``<unk>``: characters never seen in :meth:`fit` encode to it, and it
    decodes to U+FFFD (the replacement character) so output stays one character per id.
    Use :meth:`unknown_chars` to report them. With ``unk_token=None`` such characters raise
    :class:`~rnnkit.errors.DataError` instead.

    Args:
        chars: a ready vocabulary (in id order, after ``<unk>``), instead of calling :meth:`fit`.
        unk_token: name of the unknown token, or ``None`` for no unknown token.
    """

    type_name = "char"

    def __init__(self, chars: Iterable[str] | None = None, *, unk_token: str | None = "<unk>"):
        if unk_token is not None and len(unk_token) == 1:  # it could be a character of the text too
            raise ValueError(f"unk_token must not be a single character, got {unk_token!r}; use e.g. '<unk>'")
        self.unk_token = unk_token
        self._specials = [] if unk_token is None else [unk_token]
        chars = list(chars or [])
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]  # as loading checks
        if bad:
            raise ValueError(f"chars must be single characters, got {bad[0]!r}")
        self._set_vocab(self._specials + list(dict.fromkeys(chars)))  # each character once

    def _set_vocab(self, itos: list[str]) -> None:
        self._itos = list(itos)  # a copy: nothing the caller holds can change the tokenizer
        self._stoi = {c: i for i, c in enumerate(itos) if i >= len(self._specials)}
        self._decode_table = [REPLACEMENT_CHAR] * len(self._specials) + itos[len(self._specials) :]

    def fit(self, texts: str | Iterable[str]) -> CharTokenizer:
        """Use the sorted set of characters of ``texts`` as the vocabulary."""
        chars: set[str] = set()
        for text in iter_texts(texts):
            chars.update(text)
        self._set_vocab(self._specials + sorted(chars))
        return self

    @property
    def vocab(self) -> list[str]:
        """Tokens in id order."""
        return list(self._itos)

    @property
    def vocab_size(self) -> int:
        return len(self._itos) if len(self._itos) > len(self._specials) else 0

    @property
    def unk_id(self) -> int | None:
        return 0 if self.unk_token is not None else None

    def unknown_chars(self, text: str) -> set[str]:
        """Characters of ``text`` that are not in the vocabulary."""
        return set(text).difference(self._stoi)

    unknown_tokens = unknown_chars

    def encode(self, text: str) -> list[int]:
        self._check_text(text)
        self._check_fitted()
        unk = self.unk_id
        if unk is not None:
            get = self._stoi.get
            return [get(c, unk) for c in text]
        try:
            return [self._stoi[c] for c in text]
        except KeyError as exc:
            pos = text.index(exc.args[0])
            raise DataError(
                f"character {exc.args[0]!r} (U+{ord(exc.args[0]):04X}) at position {pos} is not in "
                "the vocabulary; fit on text that contains it or use unk_token='<unk>'"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        table = self._decode_table
        return "".join(table[i] for i in self._check_ids(ids))

    def _state(self) -> dict[str, Any]:
        return {"unk_token": self.unk_token, "vocab": list(self._itos)}

    @classmethod
    def _from_state(cls, state: dict[str, Any], source: str) -> CharTokenizer:
        try:
            tok = cls(unk_token=state["unk_token"])
        except ValueError as exc:
            raise DataError(f"{source}: invalid char tokenizer settings ({exc})") from None
        vocab = _check_vocab(state["vocab"], tok._specials, source)
        bad = [c for c in vocab[len(tok._specials) :] if len(c) != 1]
        if bad:
            raise DataError(f"{source}: char vocabulary holds {bad[0]!r}, not one character")
        tok._set_vocab(vocab)
        return tok


_SPLITTERS = {
    "whitespace": str.split,
    "words": re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]").findall,
}


class WordTokenizer(Tokenizer):
    """One id per word, Penn Treebank style.

    The vocabulary is the special tokens (``<unk>`` = id 0, then ``<eos>`` = id 1 when used)
    followed by the words seen at least ``min_freq`` times, most frequent first (ties in
    string order), cut to ``max_vocab`` ids in all. With ``eos_token`` set, every line break
    is the ``<eos>`` token: ``encode("a b\\nc\\n")`` is ``a b <eos> c <eos>`` as in PTB, and
    decode turns ``<eos>`` back into a line break.

    Args:
        max_vocab: the most ids, special tokens included (``None``: no limit).
        min_freq: the least count for a word to get its own id.
        unk_token: token for out-of-vocabulary words, or ``None`` to raise on them.
        eos_token: end-of-line token (e.g. ``"<eos>"``), or ``None`` to treat line breaks
            as spaces.
        lower: lower-case the text first.
        split: ``"whitespace"`` (PTB; decode then restores the text up to spacing) or
            ``"words"`` (words and punctuation marks as separate tokens).
    """

    type_name = "word"

    def __init__(
        self,
        *,
        max_vocab: int | None = None,
        min_freq: int = 1,
        unk_token: str | None = "<unk>",
        eos_token: str | None = None,
        lower: bool = False,
        split: str = "whitespace",
    ):
        if split not in _SPLITTERS:
            raise ValueError(f"split must be one of {sorted(_SPLITTERS)}, got {split!r}")
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1, got {min_freq!r}")
        if not isinstance(lower, bool):  # "no" would be taken as true
            raise ValueError(f"lower must be True or False, got {lower!r}")
        for name, token in (("unk_token", unk_token), ("eos_token", eos_token)):
            if token is not None and not isinstance(token, str):
                raise ValueError(f"{name} must be a string or None, got {token!r}")
        if unk_token is not None and unk_token == eos_token:
            raise ValueError(f"unk_token and eos_token must differ, got {unk_token!r} for both")
        self._specials = [t for t in (unk_token, eos_token) if t is not None]
        if max_vocab is not None and (isinstance(max_vocab, bool) or not isinstance(max_vocab, int)):
            raise ValueError(f"max_vocab must be an integer or None, got {max_vocab!r}")
        if max_vocab is not None and max_vocab <= len(self._specials):
            raise ValueError(f"max_vocab must exceed the {len(self._specials)} special tokens")
        self.max_vocab, self.min_freq, self.lower, self.split = max_vocab, min_freq, lower, split
        self.unk_token, self.eos_token = unk_token, eos_token
        self._set_vocab(list(self._specials))

    def _set_vocab(self, itos: list[str]) -> None:
        self._itos = list(itos)  # a copy: nothing the caller holds can change the tokenizer
        self._stoi = {t: i for i, t in enumerate(itos)}

    def _words(self, line: str) -> list[str]:
        return _SPLITTERS[self.split](line.lower() if self.lower else line)

    def _lines(self, text: str) -> list[str]:
        # With <eos>, each "\n" is a token; without, line breaks are plain whitespace.
        return text.split("\n") if self.eos_token is not None else [text]

    def fit(self, texts: str | Iterable[str]) -> WordTokenizer:
        """Count the words of ``texts`` and keep the most frequent ones."""
        counts: Counter[str] = Counter()
        for text in iter_texts(texts):
            for line in self._lines(text):
                counts.update(self._words(line))
        for special in self._specials:
            counts.pop(special, None)
        ranked = sorted((w for w, c in counts.items() if c >= self.min_freq),
                        key=lambda w: (-counts[w], w))
        if self.max_vocab is not None:
            ranked = ranked[: self.max_vocab - len(self._specials)]
        if not counts:
            raise DataError("no word in the training text; give text with words in it")
        if not ranked:  # else vocab_size 0 and encode says "not fitted" after a fit
            raise DataError(f"no word occurs at least min_freq={self.min_freq} times in the training text; "
                            "lower min_freq or give more text")
        self._set_vocab(self._specials + ranked)
        return self

    @property
    def vocab(self) -> list[str]:
        """Tokens in id order."""
        return list(self._itos)

    @property
    def vocab_size(self) -> int:
        return len(self._itos) if len(self._itos) > len(self._specials) else 0

    @property
    def unk_id(self) -> int | None:
        return None if self.unk_token is None else self._stoi[self.unk_token]

    @property
    def eos_id(self) -> int | None:
        """Id of the end-of-line token, or ``None``."""
        return None if self.eos_token is None else self._stoi[self.eos_token]

    def unknown_words(self, text: str) -> set[str]:
        """Words of ``text`` that are not in the vocabulary."""
        return {w for line in self._lines(text) for w in self._words(line) if w not in self._stoi}

    unknown_tokens = unknown_words

    def _word_id(self, word: str) -> int:
        i = self._stoi.get(word, self.unk_id)
        if i is None:
            raise DataError(
                f"word {word!r} is not in the vocabulary; fit on text that contains it "
                "or use unk_token='<unk>'"
            )
        return i

    def encode(self, text: str) -> list[int]:
        self._check_text(text)
        self._check_fitted()
        ids: list[int] = []
        lines = self._lines(text)
        for n, line in enumerate(lines):
            ids.extend(self._word_id(w) for w in self._words(line))
            if n < len(lines) - 1:
                ids.append(self._stoi[self.eos_token])  # type: ignore[index]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        lines: list[list[str]] = [[]]
        for i in self._check_ids(ids):
            token = self._itos[i]
            if token == self.eos_token:
                lines.append([])
            else:
                lines[-1].append(token)
        return "\n".join(" ".join(line) for line in lines)

    def _state(self) -> dict[str, Any]:
        keys = ("max_vocab", "min_freq", "unk_token", "eos_token", "lower", "split")
        return {**{k: getattr(self, k) for k in keys}, "vocab": list(self._itos)}

    @classmethod
    def _from_state(cls, state: dict[str, Any], source: str) -> WordTokenizer:
        keys = ("max_vocab", "min_freq", "unk_token", "eos_token", "lower", "split")
        if not isinstance(state["lower"], bool):  # "no" would be taken as true
            raise DataError(f"{source}: \"lower\" must be true or false, got {state['lower']!r}")
        try:
            tok = cls(**{k: state[k] for k in keys})
        except ValueError as exc:
            raise DataError(f"{source}: invalid word tokenizer settings ({exc})") from None
        vocab = _check_vocab(state["vocab"], tok._specials, source)
        if tok.max_vocab is not None and len(vocab) > tok.max_vocab:
            raise DataError(f"{source}: \"vocab\" holds {len(vocab)} tokens, more than "
                            f"max_vocab={tok.max_vocab}; re-save the tokenizer")
        tok._set_vocab(vocab)
        return tok


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load any tokenizer saved with :meth:`Tokenizer.save` (dispatching on its ``"type"``).

    ``path`` is the ``tokenizer.json`` file or the folder (e.g. a model bundle) holding it.
    """
    return Tokenizer.load(path)
