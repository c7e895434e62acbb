"""Training checkpoints: a folder written atomically, verified by SHA-256, never unpickled.

Layout of ``runs/<name>/checkpoints/last/`` (and ``best/``)::

    model.safetensors       model weights (tied tensors stored once)
    config.json             bundle config when the model class is registered, so that
                            ``rnnkit.load(".../checkpoints/last")`` works as for a bundle
    optimizer.pt            optimizer, scheduler and grad-scaler state dicts (torch.save;
                            read back with ``torch.load(weights_only=True)`` only)
    rng.safetensors         RNG states per rank (python, numpy, torch, cuda) as tensors
    state.safetensors       the carried recurrent state per rank, if any (structure in JSON)
    trainer_state.json      step, epoch, batch and chunk position, best val loss, timers
    manifest.json           format, version and the SHA-256 of every other file

Any missing file, digest mismatch, bad safetensors header or unreadable optimizer file raises
:class:`rnnkit.errors.CheckpointError` with a one-line message naming the file.
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.errors import CheckpointError
from rnnkit._files import (atomic_folder, load_safetensors, one_line, read_json,
                                    resolve_folder, save_weights, sha256_file, write_json)

__all__ = ["FORMAT", "FORMAT_VERSION", "CheckpointData", "save_checkpoint", "load_checkpoint",
           "find_checkpoint"]

FORMAT, FORMAT_VERSION = "rnnkit-checkpoint", 1
REQUIRED = ("model.safetensors", "optimizer.pt", "rng.safetensors", "trainer_state.json")
log = logging.getLogger(__name__)


@dataclass
class CheckpointData:
    """What a checkpoint holds, checked and loaded (tensors on CPU)."""

    path: Path
    trainer_state: dict[str, Any]
    optim_state: dict[str, Any]
    rng: dict[str, Tensor]
    carry: dict[str, Tensor] = field(default_factory=dict)

    @property
    def weights_path(self) -> Path:
        """The model weights file, for :func:`rnnkit.training._files.load_weights`."""
        return self.path / "model.safetensors"


def _write_model(model: nn.Module, folder: Path) -> None:
    """Weights, plus the bundle's config.json when the model class is registered."""
    from rnnkit.export.bundle import is_registered, write_bundle_files

    if is_registered(model) and dataclass_config(model):
        write_bundle_files(model, folder)
    else:
        save_weights(model, folder / "model.safetensors")


def dataclass_config(model: nn.Module) -> bool:
    """True when ``model.config`` is a dataclass instance (so it can be written as a bundle)."""
    import dataclasses

    config = getattr(model, "config", None)
    return dataclasses.is_dataclass(config) and not isinstance(config, type)


def save_checkpoint(folder: str | Path, *, model: nn.Module, trainer_state: dict[str, Any],
                    optim_state: dict[str, Any], rng: dict[str, Tensor],
                    carry: dict[str, Tensor] | None = None) -> Path:
    """Write a checkpoint folder atomically (temporary folder, fsync, rename over ``folder``)."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        _write_model(model, tmp)
        torch.save(optim_state, tmp / "optimizer.pt")
        _save_tensors(rng, tmp / "rng.safetensors")
        if carry:
            _save_tensors(carry, tmp / "state.safetensors")
        write_json(tmp / "trainer_state.json", {"format": FORMAT, "format_version": FORMAT_VERSION,
                                                **trainer_state})
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        write_json(tmp / "manifest.json", {"format": FORMAT, "format_version": FORMAT_VERSION, "files": files})
    return folder


def _save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def find_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint folder to resume from (recovering an interrupted swap), or ``None``."""
    target = Path(folder).expanduser()
    if target.exists() and not target.is_dir():  # resume said "no checkpoint", the next save failed
        raise CheckpointError(f"{target}: expected a checkpoint folder, found a file; move it away")
    path = resolve_folder(folder)
    if path is None or (path / "manifest.json").exists():
        return path
    if any(path.iterdir()):  # files without the manifest written last: never start over on top of them
        raise CheckpointError(f"{path}: incomplete checkpoint (no manifest.json, which is written last); "
                              "restore it, or move the folder away to start a new run")
    return None


def _verify(folder: Path) -> dict[str, str]:
    """Check the manifest and every file's digest; return ``{file: sha256}``."""
    manifest = read_json(folder / "manifest.json")
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{folder / 'manifest.json'}: expected format {FORMAT!r}, got {manifest.get('format')!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{folder / 'manifest.json'}: expected format_version {FORMAT_VERSION}, "
                              f"got {manifest.get('format_version')!r}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"{folder / 'manifest.json'}: expected a 'files' object")
    for name in REQUIRED:
        if name not in files:
            raise CheckpointError(f"{folder / 'manifest.json'}: lists no {name}; the checkpoint is incomplete")
    for name, digest in files.items():
        path = folder / name
        if Path(name).name != name:
            raise CheckpointError(f"{folder / 'manifest.json'}: bad file name {name!r}")
        if not path.is_file():
            raise CheckpointError(f"{path}: missing file; the checkpoint is incomplete")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path}: SHA-256 does not match manifest.json; the file is truncated or corrupt")
    return files


def _load_optim(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's message goes on to suggest weights_only=False: not here
        found = re.search(r"unsupported (?:global: )?GLOBAL ([\w.:]+)", str(exc), re.IGNORECASE)  # the wording varies by version
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path}: holds an object other than tensors and plain containers{what}; refused, "
                              "since unpickling it could run code (not an optimizer state rnnkit wrote)") from None
    except Exception as exc:  # any other failure is a bad file
        raise CheckpointError(f"{path}: cannot be read with torch.load(weights_only=True) ({one_line(exc)})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of state dicts, got {type(state).__name__}")
    return state


def load_checkpoint(folder: str | Path) -> CheckpointData:
    """Verify and read a checkpoint written by :func:`save_checkpoint` (the weights are read later)."""
    requested = Path(folder)
    path = resolve_folder(requested)
    if path is None:
        raise CheckpointError(f"{requested}: no checkpoint folder here")
    files = _verify(path)
    load_safetensors(path / "model.safetensors")  # header and data checked before anything is changed
    state = read_json(path / "trainer_state.json")
    for key in ("step", "epoch", "batch", "chunk"):
        if not isinstance(state.get(key), int):
            raise CheckpointError(f"{path / 'trainer_state.json'}: expected an integer {key!r}, got {state.get(key)!r}")
    carry = load_safetensors(path / "state.safetensors") if "state.safetensors" in files else {}
    return CheckpointData(path=path, trainer_state=state, optim_state=_load_optim(path / "optimizer.pt"),
                          rng=load_safetensors(path / "rng.safetensors"), carry=carry)
