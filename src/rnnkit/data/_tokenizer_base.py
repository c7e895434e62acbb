"""The tokenizer interface, its plain-JSON file format, and word-boundary helpers.

A tokenizer file (``tokenizer.json``) is one JSON object: ``{"type": "char" | "word" |
"subword", "version": 1, ...}``. The fields after ``version`` belong to the type. Nothing is
ever pickled.
"""

from __future__ import annotations

import abc
import gzip
import json
import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from rnnkit._files import write_bytes_atomic, write_text_atomic
from rnnkit.data._io import read_text
from rnnkit.errors import DataError

__all__ = ["Tokenizer", "TOKENIZER_FILE", "is_word_char", "trailing_word", "iter_texts"]

TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1

T = TypeVar("T", bound="Tokenizer")

_WORD_PUNCT = frozenset("_'\u2019")


def is_word_char(ch: str) -> bool:
    """Whether ``ch`` can be part of a word: a letter, digit, combining mark, ``_`` or apostrophe.

    Apostrophes count so that ``don't`` is one word for predictive text.
    """
    if len(ch) != 1:
        raise ValueError(f"is_word_char expects one character, got {ch!r}")
    return ch in _WORD_PUNCT or unicodedata.category(ch)[0] in "LNM"


def trailing_word(text: str) -> str:
    """Return the word being typed at the end of ``text`` (empty after a space or punctuation).

    >>> trailing_word("the qui")
    'qui'
    """
    i = len(text)
    while i > 0 and is_word_char(text[i - 1]):
        i -= 1
    return text[i:]


def iter_texts(texts: str | Iterable[str]) -> Iterable[str]:
    """Yield the texts of ``texts``: one string, or an iterable of strings."""
    if isinstance(texts, str):
        yield texts
        return
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"expected str texts, got {type(text).__name__} at position {i}")
        yield text


def _as_id(i: Any) -> int:
    """A non-``int`` id (numpy or tensor integer, 2.0) as an int; 1.9 or True is no id (``int()``
    would make them 1); a string is no id either (``float("1")`` would read it)."""
    if isinstance(i, (bool, str, bytes)) or not float(i).is_integer():
        raise ValueError(f"token ids must be integers, got {i!r}")
    return int(i)


class Tokenizer(abc.ABC):
    """A reversible map between text and integer ids.

    Subclasses set ``type_name`` and implement :meth:`fit`, :meth:`encode`, :meth:`decode`,
    :attr:`vocab_size`, :attr:`unk_id`, ``_state`` and ``_from_state``.
    """

    type_name: ClassVar[str] = ""
    _types: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.type_name:
            Tokenizer._types[cls.type_name] = cls

    # -- the interface -------------------------------------------------------------------
    @abc.abstractmethod
    def fit(self: T, texts: str | Iterable[str]) -> T:
        """Build the vocabulary from one text or an iterable of texts; returns ``self``."""

    @classmethod
    def train(cls: type[T], texts: str | Iterable[str], **options: Any) -> T:
        """Construct with ``options`` and :meth:`fit` on ``texts``."""
        return cls(**options).fit(texts)

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Map ``text`` to a list of ids."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Map ids back to text."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (0 before fitting)."""

    @property
    @abc.abstractmethod
    def unk_id(self) -> int | None:
        """Id of the unknown token, or ``None`` when the tokenizer has none."""

    @abc.abstractmethod
    def unknown_tokens(self, text: str) -> set[str]:
        """The pieces of ``text`` (characters or words) that would map to ``<unk>``."""

    @abc.abstractmethod
    def _state(self) -> dict[str, Any]:
        """JSON-able fields of this tokenizer, without ``type`` and ``version``."""

    @classmethod
    @abc.abstractmethod
    def _from_state(cls: type[T], state: dict[str, Any], source: str) -> T:
        """Rebuild from :meth:`_state` output; ``source`` names the file for errors."""

    # -- shared behaviour ---------------------------------------------------------------
    def __len__(self) -> int:
        return self.vocab_size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tokenizer):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def _check_fitted(self) -> None:
        if self.vocab_size == 0:
            name = type(self).__name__
            raise ValueError(f"{name} is not fitted; call fit(texts) or {name}.train(texts) first")

    def _check_text(self, text: Any) -> None:
        if not isinstance(text, str):
            raise TypeError(f"{type(self).__name__}.encode expects a str, got {type(text).__name__}")

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        self._check_fitted()
        out = [i if type(i) is int else _as_id(i) for i in ids]  # ints as they are (generation's case)
        n = self.vocab_size
        for i in out:
            if not 0 <= i < n:
                raise ValueError(f"id {i} is out of range for a vocabulary of {n} (0..{n - 1})")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able description: ``{"type", "version", ...}``."""
        return {"type": self.type_name, "version": FORMAT_VERSION, **self._state()}

    def to_json(self, indent: int | None = None) -> str:
        """The tokenizer as a JSON string (see :meth:`from_json`)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = TOKENIZER_FILE) -> Tokenizer:
        """Rebuild a tokenizer from :meth:`to_dict` output, dispatching on its ``type``."""
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise DataError(
                f"{source}: not a tokenizer file (no \"type\" field); save it with Tokenizer.save"
            )
        kind = data["type"]
        if kind not in Tokenizer._types:
            known = ", ".join(sorted(Tokenizer._types))
            raise DataError(f"{source}: unknown tokenizer type {kind!r}; expected one of: {known}")
        if data.get("version") != FORMAT_VERSION:
            raise DataError(
                f"{source}: tokenizer format version {data.get('version')!r} is not supported "
                f"(expected {FORMAT_VERSION}); re-save it with this rnnkit"
            )
        target = Tokenizer._types[kind]
        if cls is not Tokenizer and not issubclass(target, cls):
            raise DataError(
                f"{source}: holds a {kind!r} tokenizer, not {cls.type_name!r}; "
                "use rnnkit.data.load_tokenizer to load any type"
            )
        state = {k: v for k, v in data.items() if k not in ("type", "version")}
        try:
            return target._from_state(state, source)
        except DataError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{source}: malformed {kind!r} tokenizer ({type(exc).__name__}: {exc}); "
                "re-save it with Tokenizer.save"
            ) from exc

    @classmethod
    def from_json(cls, text: str, *, source: str = TOKENIZER_FILE) -> Tokenizer:
        """Rebuild a tokenizer from :meth:`to_json` output (any type when called on the base)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{source} line {exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno}); "
                "re-save the tokenizer with Tokenizer.save"
            ) from None
        return cls.from_dict(data, source=source)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON file and return its path.

        ``path`` is the file to write (gzip-compressed when its name ends with ``.gz``, as
        :meth:`load` expects), or a folder (an existing one, e.g. a model bundle, or a path
        ending with ``/``) to write ``tokenizer.json`` into.
        """
        p = Path(path)
        if p.is_dir() or str(path).endswith(("/", os.sep)):
            p = p / TOKENIZER_FILE
        if not p.parent.is_dir():
            raise FileNotFoundError(f"{p.parent}: folder not found; create it before saving the tokenizer")
        text = self.to_json(indent=1) + "\n"
        if p.suffix == ".gz":
            return write_bytes_atomic(p, gzip.compress(text.encode("utf-8"), mtime=0))
        return write_text_atomic(p, text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a file written by :meth:`save` (``path`` may be the folder holding it)."""
        p = Path(path)
        if p.is_dir():
            p = p / TOKENIZER_FILE
        return cls.from_json(read_text(p), source=str(p))
