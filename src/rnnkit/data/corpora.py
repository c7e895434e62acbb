"""Labelled text (classification) and parallel text (translation) corpora.

Both are frozen dataclasses of tuples; ``corpus[i]`` is one example and ``len(corpus)`` the
number of examples. Readers raise :class:`~rnnkit.errors.DataError` naming the file, the
line and the fix.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnkit.data._io import decode_utf8, read_csv_rows, read_lines, read_text
from rnnkit.errors import DataError

__all__ = ["LabelledText", "ParallelCorpus"]

PathLike = str | os.PathLike


def _sort_classes(names: set[str]) -> list[str]:
    """Class names in order: numerically when all are integers, else as strings."""
    if names and all(re.fullmatch(r"-?[0-9]+", n) for n in names):  # int() takes each ('--1', '²' not)
        return sorted(names, key=int)
    return sorted(names)


def _split_indices(groups: list[list[int]], fraction: float, seed: int) -> tuple[list, list]:
    """Send ``round(fraction * len(g))`` shuffled members of each group to the second part."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    first: list[int] = []
    second: list[int] = []
    for group in groups:
        order = [group[int(i)] for i in torch.randperm(len(group), generator=gen)]
        k = round(fraction * len(group))
        second += order[:k]
        first += order[k:]
    return sorted(first), sorted(second)


def _column(path: PathLike, header: list[str], col: str | int) -> int:
    if isinstance(col, int):
        if not 0 <= col < len(header):
            raise DataError(f"{path}: column {col} is out of range ({len(header)} columns)")
        return col
    if col not in header:
        raise DataError(
            f"{path}: no column {col!r}; available columns: {', '.join(header)}"
        )
    return header.index(col)


@dataclass(frozen=True)
class LabelledText:
    """Texts with class labels: ``texts[i]`` has class ``classes[labels[i]]``."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        bad = [y for y in self.labels if not 0 <= y < len(self.classes)]
        if bad:
            raise ValueError(f"label {bad[0]} is out of range for {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[i], self.labels[i]

    @classmethod
    def _from_pairs(cls, pairs: list[tuple[str, str]]) -> LabelledText:
        classes = _sort_classes({label for _, label in pairs})
        index = {c: i for i, c in enumerate(classes)}
        return cls(tuple(t for t, _ in pairs), tuple(index[y] for _, y in pairs), tuple(classes))

    @classmethod
    def from_csv(cls, path: PathLike, *, text_col: str | int = "text",
                 label_col: str | int = "label", delimiter: str | None = None) -> LabelledText:
        """Read a CSV (or, by suffix ``.tsv``, TSV) file with a header row.

        Classes are the distinct labels, sorted (numerically when all are integers).
        """
        for name, col in (("text_col", text_col), ("label_col", label_col)):
            if isinstance(col, bool) or not isinstance(col, (str, int)):
                raise TypeError(f"{name}: expected a column name or index, got {col!r}")
        header, rows = read_csv_rows(path, delimiter)
        ti, li = _column(path, header, text_col), _column(path, header, label_col)
        if ti == li:
            raise DataError(f"{path}: text and label are the same column {header[ti]!r}; name two columns")
        if len(set(header)) != len(header):
            twice = next(h for h in header if header.count(h) > 1)
            raise DataError(f"{path}: column {twice!r} appears twice in the header; name each column once")
        if not rows:
            raise DataError(f"{path}: no rows after the header; add one example per row")
        pairs = []
        for line, fields in rows:
            for j, what in ((ti, "text"), (li, "label")):
                if not fields[j].strip():
                    raise DataError(f"{path} line {line}: empty {what} in column "
                                    f"{header[j]!r}; fill it or remove the row")
            pairs.append((fields[ti], fields[li].strip()))
        return cls._from_pairs(pairs)

    @classmethod
    def from_folder(cls, path: PathLike) -> LabelledText:
        """Read ``path/<class>/<file>``: one subfolder per class, each file one example."""
        root = Path(path)
        if not root.is_dir():
            raise DataError(f"{root}: not a folder; pass a folder with one subfolder per class")
        pairs = []
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not subdirs:
            raise DataError(f"{root}: no class subfolders; lay it out as {root}/<class>/<file>")
        for sub in subdirs:
            files = sorted(f for f in sub.iterdir() if f.is_file() and not f.name.startswith("."))
            if not files:
                raise DataError(f"{sub}: class folder has no files; add examples or remove it")
            pairs += [(read_text(f), sub.name) for f in files]
        return cls._from_pairs(pairs)

    @classmethod
    def from_line_files(cls, files: Mapping[str, PathLike]) -> LabelledText:
        """One file per class, one example per line: ``{"neg": path, "pos": path}``.

        Classes are numbered in the mapping's order; blank lines are skipped.
        """
        texts: list[str] = []
        labels: list[int] = []
        for label, (_, path) in enumerate(files.items()):
            lines = [line for line in read_lines(path) if line.strip()]
            texts += lines
            labels += [label] * len(lines)
        return cls(tuple(texts), tuple(labels), tuple(files))

    def subset(self, indices: list[int]) -> LabelledText:
        """The examples at ``indices``, with the same classes."""
        return LabelledText(tuple(self.texts[i] for i in indices),
                            tuple(self.labels[i] for i in indices), self.classes)

    def split(self, fraction: float = 0.1, seed: int = 0) -> tuple[LabelledText, LabelledText]:
        """Seeded stratified split ``(rest, held_out)``: ``fraction`` of each class held out."""
        groups = [[i for i, y in enumerate(self.labels) if y == c]
                  for c in range(len(self.classes))]
        rest, held = _split_indices(groups, fraction, seed)
        return self.subset(rest), self.subset(held)


@dataclass(frozen=True)
class ParallelCorpus:
    """Sentence pairs: ``sources[i]`` translates to ``targets[i]``."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.targets):
            raise ValueError(f"{len(self.sources)} sources but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[str, str]:
        return self.sources[i], self.targets[i]

    @classmethod
    def from_tsv(cls, path: PathLike, *, src_col: int = 0, tgt_col: int = 1,
                 member: str | None = None) -> ParallelCorpus:
        """Read ``source<TAB>target[<TAB>...]`` lines (no header; blank lines skipped).

        ``path`` may be ``.gz``, or a ``.zip`` whose text file ``member`` is read (default:
        the only ``.txt`` file whose name does not start with ``_``).
        """
        if str(path).endswith(".zip"):
            name, text = _read_zip_member(path, member)
        else:
            name, text = str(path), read_text(path)
        need = max(src_col, tgt_col) + 1
        sources, targets = [], []
        # a lone "\r" (old Mac line ends) ends a line too, as in read_series_csv
        for n, line in enumerate(text.replace("\r", "\n").split("\n"), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < need:
                raise DataError(f"{name} line {n}: {len(fields)} tab-separated field(s), need "
                                f"{need}; separate source and target with a tab")
            sources.append(fields[src_col])
            targets.append(fields[tgt_col])
        return cls(tuple(sources), tuple(targets))

    @classmethod
    def from_files(cls, src_path: PathLike, tgt_path: PathLike) -> ParallelCorpus:
        """Read two line-aligned files (``.gz`` transparently): line ``i`` of one translates
        line ``i`` of the other."""
        src, tgt = read_lines(src_path), read_lines(tgt_path)
        if len(src) != len(tgt):
            raise DataError(
                f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; "
                "the files must be line-aligned (one sentence per line, same order)"
            )
        return cls(tuple(src), tuple(tgt))

    def subset(self, indices: list[int]) -> ParallelCorpus:
        """The pairs at ``indices``."""
        return ParallelCorpus(tuple(self.sources[i] for i in indices),
                              tuple(self.targets[i] for i in indices))

    def split(self, fraction: float = 0.1, seed: int = 0) -> tuple[ParallelCorpus, ParallelCorpus]:
        """Seeded random split: ``(rest, held_out)`` with ``fraction`` of the pairs held out."""
        rest, held = _split_indices([list(range(len(self)))], fraction, seed)
        return self.subset(rest), self.subset(held)


def _read_zip_member(path: PathLike, member: str | None) -> tuple[str, str]:
    """``(display name, text)`` of one member of a zip archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if member is None:
                txt = [n for n in names if n.endswith(".txt") and not Path(n).name.startswith("_")]
                if len(txt) != 1:
                    raise DataError(f"{path}: cannot tell which file to read among "
                                    f"{', '.join(names)}; pass member=<name>")
                member = txt[0]
            if member not in names:
                raise DataError(f"{path}: no member {member!r}; members: {', '.join(names)}")
            data = zf.read(member)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check the path") from None
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path}: not a valid zip archive ({exc}); re-create the archive") from None
    name = f"{path}:{member}"
    text = decode_utf8(data, name)
    if not text.strip():
        raise DataError(f"{name}: file is empty; pass a file with text in it")
    return name, text
