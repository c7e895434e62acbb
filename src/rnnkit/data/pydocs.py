"""``pydocs``: English text from Python's own documentation, available with every Python.

The text is the language-reference topics that ship with ``pydoc`` (``pydoc_data``: the
pages behind ``help("assert")``), followed by the docstrings of a fixed, sorted list of
standard-library modules: each module, then its public classes (with their public
methods) and functions, in name order. Only objects defined in the module itself are
taken, each docstring once. The result is about 1.3 MB and the same on every run of a
given Python version (a module that a Python build lacks is skipped).

Modules that open windows or a browser, print on import, or are deprecated are not on the
list (tkinter, turtle, idlelib, antigravity, this, ...). Building takes well under a second;
the text is kept in the process after the first build, and written to disk only where the
caller asks (``cache_dir``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from rnnkit._files import write_text_atomic

__all__ = ["PYDOCS_MODULES", "build_pydocs_text", "load_pydocs_text"]

logger = logging.getLogger(__name__)

PYDOCS_MODULES: tuple[str, ...] = (
    "abc", "argparse", "array", "ast", "base64", "bdb", "binascii", "bisect", "builtins",
    "calendar", "cmd", "code", "codecs", "codeop", "collections", "collections.abc",
    "colorsys", "compileall", "concurrent.futures", "configparser", "contextlib",
    "contextvars", "copy", "copyreg", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "dis", "doctest", "email.message", "email.utils", "enum", "filecmp", "fileinput",
    "fnmatch", "fractions", "ftplib", "functools", "gc", "getopt", "gettext", "glob",
    "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser", "http.client",
    "http.cookiejar", "http.server", "imaplib", "importlib", "inspect", "io", "ipaddress",
    "itertools", "json", "keyword", "linecache", "locale", "logging", "logging.handlers",
    "marshal", "math", "mimetypes", "modulefinder", "netrc", "numbers", "operator",
    "optparse", "pathlib", "pdb", "pickle", "pickletools", "pkgutil", "platform", "plistlib",
    "poplib", "posixpath", "pprint", "profile", "pstats", "py_compile", "pyclbr", "pydoc",
    "queue", "quopri", "random", "re", "reprlib", "runpy", "sched", "secrets", "selectors",
    "shelve", "shlex", "shutil", "smtplib", "socketserver", "statistics", "string",
    "stringprep", "struct", "subprocess", "symtable", "sys", "tabnanny", "tarfile",
    "tempfile", "textwrap", "threading", "time", "timeit", "token", "tokenize", "trace",
    "traceback", "tracemalloc", "types", "typing", "unicodedata", "unittest", "unittest.mock",
    "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "wsgiref",
    "xml.dom.minidom", "xml.etree.ElementTree", "xml.sax", "zipapp", "zipfile", "zipimport",
    "zoneinfo",
)


def _topics() -> Iterator[str]:
    """The language-reference topics behind ``help("keyword")``, in name order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        logger.warning("pydoc_data is missing; pydocs holds docstrings only")
        return
    for key in sorted(topics):
        yield topics[key].strip()


def _own_doc(obj: object) -> str | None:
    """The object's own docstring (not inherited), cleaned, or ``None``."""
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None


def _public_members(module: ModuleType) -> Iterator[tuple[str, object]]:
    """Classes and functions defined in ``module`` itself, by name."""
    names = getattr(module, "__all__", None) or dir(module)
    for name in sorted({n for n in names if not n.startswith("_")}):
        obj = getattr(module, name, None)
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) or inspect.isroutine(obj):
            yield name, obj


def _class_entries(name: str, cls: type) -> Iterator[tuple[str, str | None]]:
    yield name, _own_doc(cls)
    for attr, value in sorted(vars(cls).items()):
        if attr.startswith("_"):
            continue
        if inspect.isroutine(value) or isinstance(value, (property, classmethod, staticmethod)):
            yield f"{name}.{attr}", _own_doc(value)


def _module_entries(module: ModuleType) -> Iterator[tuple[str, str | None]]:
    """``(heading, docstring)`` pairs of a module, its classes, methods and functions."""
    yield f"module {module.__name__}", _own_doc(module)
    for name, obj in _public_members(module):
        qual = f"{module.__name__}.{name}"
        if inspect.isclass(obj):
            yield from _class_entries(qual, obj)
        else:
            yield qual, _own_doc(obj)


def _import(name: str) -> ModuleType | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except ImportError:
        logger.info("pydocs: %s is not available in this Python; skipped", name)
        return None


@functools.lru_cache(maxsize=1)
def build_pydocs_text() -> str:
    """Build the pydocs text (deterministic for a Python version; cached in the process)."""
    parts = list(_topics())
    seen: set[str] = set()
    for name in PYDOCS_MODULES:
        module = _import(name)
        if module is None:
            continue
        for heading, doc in _module_entries(module):
            if doc is None or doc in seen:
                continue
            seen.add(doc)
            parts.append(f"{heading}\n\n{doc}")
    return "\n\n\n".join(parts) + "\n"


def load_pydocs_text(cache_dir: str | os.PathLike | None = None) -> str:
    """The pydocs text, read from / written to ``cache_dir`` when one is given.

    The cache file is named after the Python version (``pydocs-3.11.7.txt``), so a cache
    shared between Python versions never serves the wrong text. Its first line holds the
    text's SHA-256: a cache file that was emptied, cut short or damaged is built again.
    """
    if cache_dir is None:
        return build_pydocs_text()
    v = sys.version_info
    path = Path(cache_dir) / f"pydocs-{v.major}.{v.minor}.{v.micro}.txt"
    if path.is_file():
        cached = _read_cache(path)
        if cached is not None:
            return cached
        logger.warning("%s: cache file empty, damaged, cut short or from an earlier rnnkit (no checksum); "
                       "building the text again", path)
    text = build_pydocs_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    # an interrupted run leaves no truncated cache
    write_text_atomic(path, f"{_CACHE_HEADER}{_sha256(text)}\n{text}")
    return text


_CACHE_HEADER = "rnnkit pydocs cache, sha256 "


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_cache(path: Path) -> str | None:
    """The text of a cache file whose first line holds its SHA-256, else ``None``."""
    try:
        header, _, text = path.read_bytes().decode("utf-8").partition("\n")
    except (OSError, UnicodeDecodeError):
        return None
    if header != _CACHE_HEADER + _sha256(text):
        return None
    return text
