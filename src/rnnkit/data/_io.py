"""Reading data files: UTF-8 checks, transparent ``.gz``, one-line errors.

Every reader here raises :class:`rnnkit.errors.DataError` with a one-line message that names
the file, the line where one applies, and the fix.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from pathlib import Path

from rnnkit.errors import DataError

__all__ = [
    "read_bytes", "decode_utf8", "read_text", "read_lines", "line_of_offset", "read_csv_rows", "read_csv_table", "sniff_delimiter",
]

PathLike = str | os.PathLike


def read_bytes(path: PathLike) -> bytes:
    """Read a file's bytes, decompressing it when the name ends with ``.gz``.

    Raises:
        DataError: the file is missing, is a folder, cannot be read, or is not valid gzip.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found; check the path")
    if p.is_dir():
        raise DataError(f"{p}: is a folder, not a file; pass the path of a file inside it")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror}); check the file's permissions") from exc
    if p.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{p}: not a valid gzip file ({exc}); re-compress it with gzip or pass the plain file"
        ) from exc


def line_of_offset(data: bytes | str, offset: int) -> int:
    """Return the 1-based line number that holds byte (or character) ``offset`` of ``data``."""
    newline = b"\n" if isinstance(data, bytes) else "\n"
    return data.count(newline, 0, offset) + 1  # type: ignore[arg-type]


def decode_utf8(data: bytes, name: str | os.PathLike) -> str:
    """Decode ``data`` as UTF-8 for the file called ``name``.

    A leading byte-order mark is dropped and Windows line ends (``\\r\\n``) become ``\\n``.

    Raises:
        DataError: naming the line, the offending byte and its offset, e.g.
            ``data.txt line 3: not UTF-8 (byte 0xff at offset 57); re-save the file as UTF-8``.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
        line = line_of_offset(data, offset)
        raise DataError(
            f"{name} line {line}: not UTF-8 (byte 0x{data[offset]:02x} at offset {offset}); "
            "re-save the file as UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n")


def read_text(path: PathLike, *, allow_empty: bool = False) -> str:
    """Read a UTF-8 text file (``.gz`` transparently) and return its text.

    The text is returned as is, except that a UTF-8 byte-order mark is dropped and ``\\r\\n``
    line ends become ``\\n``.

    Args:
        path: the file.
        allow_empty: accept a file that is empty or holds only whitespace.

    Raises:
        DataError: the file is missing, empty, or not UTF-8 (with line, byte and offset).
    """
    data = read_bytes(path)
    text = decode_utf8(data, path)
    if not allow_empty and not text.strip():
        what = "empty" if not data else "only whitespace"
        raise DataError(f"{path}: file is {what}; pass a file with text in it")
    return text


def read_lines(path: PathLike, *, allow_empty: bool = False) -> list[str]:
    """Read a UTF-8 text file (``.gz`` transparently) and return its lines, without line ends.

    Lines are split on ``\\n`` only (not on the other characters ``str.splitlines`` treats as
    line breaks), so line ``i`` here is line ``i + 1`` of any text editor or ``wc -l``.
    """
    lines = read_text(path, allow_empty=allow_empty).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def sniff_delimiter(header_line: str, name: str) -> str:
    """The field separator from a file's name and header line: a tab for ``.tsv``/``.tab``; else a
    comma, unless the header has none and splits on a semicolon, a tab or a bar (``;`` is what
    spreadsheets write where the comma is the decimal mark)."""
    if name.endswith((".tsv", ".tab")):
        return "\t"
    if "," not in header_line:
        for other in (";", "\t", "|"):
            if other in header_line:
                return other
    return ","


def read_csv_table(
    path: PathLike, delimiter: str | None = None
) -> tuple[list[str], list[tuple[int, list[str]]], str]:
    """Header, ``(line, fields)`` rows and the delimiter of a CSV/TSV file, refusing ragged rows.

    Without ``delimiter`` it is sniffed from the header (:func:`sniff_delimiter`). Tab-separated
    files are read without quoting. Blank lines are skipped.
    """
    text = read_text(path)
    name = Path(path).name.removesuffix(".gz")
    delim = delimiter or sniff_delimiter(text.split("\n", 1)[0], name)
    tsv = delim == "\t"
    # TSV files rarely quote: a stray '"' in a sentence must not swallow the next lines.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim,
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    rows = []
    try:
        header = next(reader)
        for fields in reader:
            if not fields or fields == [""]:
                continue
            if len(fields) != len(header):
                raise DataError(
                    f"{path} line {reader.line_num}: {len(fields)} fields but the header has "
                    f"{len(header)}; fix the row (quote fields that contain {delim!r})"
                )
            rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: {exc}; fix the CSV syntax") from None
    return header, rows, delim


def read_csv_rows(
    path: PathLike, delimiter: str | None = None
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line, fields)`` rows of a CSV/TSV file (see :func:`read_csv_table`)."""
    header, rows, _ = read_csv_table(path, delimiter)
    return header, rows
