"""Crash-safe folders (a low-level module shared by rnnkit.training and rnnkit.export, depending on
neither): write to a temporary folder, fsync, then rename it over the target.

Shared by checkpoints and bundles. A folder ``target`` is replaced in two renames, each atomic:
``target -> .target.old`` then ``.target.tmp-* -> target``; the previous copy is deleted only
after the new one is in place. A crash between the two renames leaves ``.target.old``, which
:func:`resolve_folder` finds. Readers check SHA-256 digests and turn every low-level failure into
a one-line :class:`rnnkit.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rnnkit.errors import CheckpointError

__all__ = ["atomic_folder", "resolve_folder", "sha256_file", "read_json", "write_json",
           "load_safetensors", "save_weights", "load_weights", "one_line", "output_file"]

log = logging.getLogger(__name__)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message squeezed onto one line (for error messages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def a_or_an(word: str) -> str:
    """``word`` after its indefinite article, for messages: "an AnomalyDetector", "a Forecaster"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def output_file(path: str | os.PathLike, suffix: str, what: str = "output") -> Path:
    """The file a writer will produce at ``path``, its folder created: ``suffix`` added when the name has
    none (matplotlib's own rule, so the name reported is the file written). Checked before any work, so
    that a long computation does not end in an error: a folder, an empty name, or a file where a folder
    of the path should be is refused with a :class:`~rnnkit.errors.ConfigError` naming ``what``."""
    from rnnkit.errors import ConfigError

    if str(path).strip() == "":
        raise ConfigError(f"{what}: expected a file name such as result{suffix}, got an empty path")
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{what}: {p} is a folder; expected a file name such as {p / ('result' + suffix)}")
    if not p.suffix:
        p = p.with_suffix(suffix)
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{what}: cannot write {p}: {parent} is a file, not a folder")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def sha256_file(path: Path) -> str:
    """Hex SHA-256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON (UTF-8, trailing newline)."""
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object; a missing, unreadable or non-object file is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({one_line(exc)})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_safetensors(path: Path, device: str = "cpu") -> dict[str, Any]:
    """Load a safetensors file into a dict of tensors, refusing truncated or corrupt files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({one_line(exc)})") from exc


def save_weights(model: Any, path: Path) -> None:
    """Write ``model.state_dict()`` as safetensors; tied (shared) tensors are stored once."""
    from safetensors.torch import save_model

    save_model(model, str(path))


def load_weights(model: Any, path: Path, device: str = "cpu") -> None:
    """Load :func:`save_weights` output into ``model`` (strict: names and shapes must match)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        load_model(model, str(path), strict=True, device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({one_line(exc)})") from exc
    except RuntimeError as exc:  # missing/unexpected names or shape mismatch
        raise CheckpointError(f"{path}: weights do not fit {type(model).__name__} ({_misfit(exc)}); was it saved "
                              "from a model of another configuration?") from exc


def _misfit(exc: RuntimeError, shown: int = 3) -> str:
    """torch's load_state_dict error in short: ``embedding.weight (28, 8) in the file, (107, 8) in the model;
    ...`` (its own text, cut at 200 characters, ended mid-shape before it named the second size)."""
    import re

    text = str(exc)
    sizes = re.findall(r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) "
                       r"from checkpoint, the shape in current model is torch\.Size\(\[([\d, ]*)\]\)", text)
    parts = [f"{name} ({a}) in the file, ({b}) in the model" for name, a, b in sizes[:shown]]
    if len(sizes) > shown:
        parts.append(f"{len(sizes) - shown} more of other sizes")
    for kind, what in (("Missing", "missing from the file"), ("Unexpected", "not in the model")):
        found = re.search(kind + r" key\(s\) in state_dict: ([^\n]*)", text)
        if found:
            names = re.findall(r'"([^"]+)"', found.group(1))
            listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
            parts.append(f"{what}: {listed}")
    return "; ".join(parts) if parts else one_line(exc)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename is still atomic
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            os.chmod(path, 0o644)  # some writers create 0600 files; bundles are meant to be shared
            _fsync_path(path)
    _fsync_path(root)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and one rename: a reader sees the
    old file or the whole new one, never a truncated one."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`write_text_atomic` for bytes."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        tmp.write_bytes(data)
        _fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _replace(src: Path, dst: Path) -> None:
    """One atomic rename (a function of its own so that tests can simulate a crash here)."""
    os.replace(src, dst)


def _old_name(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def _swap_in(tmp: Path, target: Path) -> None:
    old = _old_name(target)
    if target.exists():
        if old.is_dir():  # ``target`` is complete, so a leftover ``.old`` is stale
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
        _replace(target, old)
    _replace(tmp, target)
    _fsync_path(target.parent)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif old.exists() or old.is_symlink():  # what was there was a file (a folder is written over it)
        old.unlink()


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target``.

    If the body raises, the temporary folder is removed and ``target`` is left as it was.
    """
    target = Path(target).expanduser().resolve()  # "." and "~/x" name real folders (renaming "." failed)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # from a crash mid-write
            if not _writer_alive(stale):  # another process's save in progress is left alone
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    except OSError as exc:  # named by the folder asked for, not by the temporary one beside it
        raise OSError(exc.errno, f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        _fsync_tree(tmp)
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _writer_alive(tmp: Path) -> bool:
    """Whether the process that made temporary folder ``tmp`` (``.NAME.tmp-PID-xxxx``) still runs."""
    try:
        pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False  # an older name without a process id: stale
    if pid == os.getpid():
        return False  # this process is not writing it now: left by an earlier failure
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def resolve_folder(target: str | os.PathLike) -> Path | None:
    """``target`` if it exists, else the copy a crash mid-swap left behind, else ``None``."""
    target = Path(target).expanduser()
    if target.is_dir():
        return target
    old = _old_name(target)
    if old.is_dir():
        log.warning("%s is missing; using %s left by an interrupted write", target, old)
        return old
    return None
