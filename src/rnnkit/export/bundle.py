"""Model bundles: a folder with ``config.json``, ``model.safetensors`` and maybe ``tokenizer.json``.

``config.json`` holds ``{"format": "rnnkit-bundle", "format_version": 1, "rnnkit_version",
"model_class", "config", "extra", "dtype", "files"}``: ``model_class`` is the name given to
:func:`register_model`, ``config`` is ``dataclasses.asdict(model.config)`` and ``files`` maps each
data file to its SHA-256. Loading rebuilds the model from its config (``cls.from_config(dict)`` or
``cls(cls.config_class(**dict))``), loads the weights with safetensors and never unpickles.

``model.tokenizer`` is set when ``tokenizer.json`` exists: the object returned by
``rnnkit.data.tokenizers.load_tokenizer(path)`` when that function exists, else the raw JSON text.
``model.bundle_extra`` is set to the ``extra`` record, and saving the model again keeps it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import typing
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnkit.errors import CheckpointError
from rnnkit._files import (a_or_an, atomic_folder, load_weights, one_line, read_json, resolve_folder,
                           save_weights, sha256_file, write_json)

__all__ = ["register_model", "registered_name", "is_registered", "save_bundle", "load_bundle",
           "read_bundle_config", "write_bundle_files", "attach_tokenizer", "config_from_dict", "BundleMixin",
           "FORMAT", "FORMAT_VERSION"]

FORMAT, FORMAT_VERSION = "rnnkit-bundle", 1
_REGISTRY: dict[str, type] = {}


def register_model(name: str):
    """Class decorator: make ``cls`` loadable from bundles whose ``model_class`` is ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_model: expected a non-empty name, got {name!r}")

    def decorate(cls: type) -> type:
        known = _REGISTRY.get(name)
        same = known is not None and (known.__module__, known.__qualname__) == (cls.__module__, cls.__qualname__)
        if known is not None and not same:
            raise ValueError(f"register_model: name {name!r} already belongs to {known.__qualname__}, "
                             f"cannot register {cls.__qualname__}")
        if not (hasattr(cls, "from_config") or hasattr(cls, "config_class")):
            raise TypeError(f"register_model: {cls.__qualname__} needs a config_class attribute or a "
                            "from_config(dict) classmethod")
        cls._rnnkit_model_name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def registered_name(model: nn.Module | type) -> str | None:
    """The registered name of ``model``'s own class (not inherited from a base class), or None."""
    cls = model if isinstance(model, type) else type(model)
    name = cls.__dict__.get("_rnnkit_model_name")
    return name if name is not None and _REGISTRY.get(name) is cls else None


def is_registered(model: nn.Module | type) -> bool:
    """True when ``model``'s class was decorated with :func:`register_model`."""
    return registered_name(model) is not None


def _tokenizer_json(tokenizer: Any) -> str | None:
    if tokenizer is None or isinstance(tokenizer, str):
        return tokenizer
    if callable(getattr(tokenizer, "to_json", None)):
        return tokenizer.to_json()
    raise TypeError(f"tokenizer: expected an object with to_json() or a JSON string, got {type(tokenizer).__name__}")


def _config_dict(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"{type(model).__name__}.config: expected a dataclass instance, got {type(config).__name__}")
    return dataclasses.asdict(config)


def _dtype_of(model: nn.Module) -> str | None:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return str(tensor.dtype).removeprefix("torch.")
    return None


def write_bundle_files(model: nn.Module, folder: str | Path, *, tokenizer: Any = None,
                       extra: dict[str, Any] | None = None) -> None:
    """Write the bundle files into an existing ``folder`` (not atomic; see :func:`save_bundle`)."""
    import rnnkit

    name = registered_name(model)
    if name is None:
        raise TypeError(f"{type(model).__qualname__} is not registered; decorate it with @register_model('name')")
    if extra is None:  # a loaded bundle's record (data set, scores) stays with the model
        extra = getattr(model, "bundle_extra", None)
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra: expected a dict or None, got {type(extra).__name__}")
    folder = Path(folder)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "rnnkit_version": rnnkit.__version__,
            "model_class": name, "config": _config_dict(model), "extra": extra or {}, "dtype": _dtype_of(model)}
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"bundle config.json: model config and extra must be JSON values ({exc})") from exc
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    problem = None if tok is None or isinstance(tok, str) else vocab_mismatch(model, tok)
    if problem:  # ids the model samples would not decode, or encoded ids would overrun its embedding
        raise ValueError(f"tokenizer: {problem}; build the model with vocab_size=tokenizer.vocab_size")
    save_weights(model, folder / "model.safetensors")
    text = _tokenizer_json(tok)
    if text is not None:
        (folder / "tokenizer.json").write_text(text, encoding="utf-8")
    files = [p for p in ("model.safetensors", "tokenizer.json") if (folder / p).exists()]
    meta["files"] = {p: sha256_file(folder / p) for p in files}
    write_json(folder / "config.json", meta)


BUNDLE_FILES = ("config.json", "model.safetensors", "tokenizer.json")
"""What a bundle folder holds; :func:`save_bundle` replaces a folder with nothing else in it."""


def save_bundle(model: nn.Module, directory: str | Path, *, tokenizer: Any = None,
                extra: dict[str, Any] | None = None) -> Path:
    """Save ``model`` as a bundle folder, atomically (temporary folder, fsync, rename).

    ``tokenizer`` (an object with ``to_json()``, or a JSON string) defaults to ``model.tokenizer``;
    ``extra`` (a JSON-able dict kept in config.json) to ``model.bundle_extra``, which
    :func:`load_bundle` sets, so that loading and saving again keeps a bundle's record.
    An existing bundle at ``directory`` is replaced (refused if the folder also holds other files, which
    the replacement would delete); any other non-empty folder is refused.
    """
    directory = Path(directory).expanduser()
    here = Path.cwd().resolve()
    if directory.resolve() == here or directory.resolve() in here.parents:  # replaced by a rename: refused
        raise ValueError(f"{directory}: is the current folder (or holds it); save into a new subfolder, "
                         "e.g. model.save('bundle')")
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory}: expected a folder path, got an existing file")
    if directory.is_dir() and any(directory.iterdir()) and not _looks_like_bundle(directory):
        raise ValueError(f"{directory}: exists and is not an rnnkit bundle; expected a new or empty folder")
    others = sorted(p.name for p in directory.iterdir() if p.name not in BUNDLE_FILES) if directory.is_dir() else []
    if others:  # the folder is replaced whole: files a user added would go with it
        raise ValueError(f"{directory}: a bundle that also holds {', '.join(others[:3])}"
                         f"{' ...' if len(others) > 3 else ''}; replacing it would delete them: move them, or "
                         "save into another folder")
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    with atomic_folder(directory) as tmp:
        write_bundle_files(model, tmp, tokenizer=tokenizer, extra=extra)
    return directory


def _looks_like_bundle(directory: Path) -> bool:
    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_bundle_config(directory: str | Path) -> dict[str, Any]:
    """Read and check a bundle's ``config.json`` (format, version, model class, config)."""
    return _read_config(directory)[1]


def _read_config(directory: str | Path) -> tuple[Path, dict[str, Any]]:
    path = resolve_folder(directory)
    if path is None:
        what = "a file, not a bundle folder" if Path(directory).is_file() else "no such bundle folder"
        raise CheckpointError(f"{directory}: {what}")
    if not (path / "config.json").is_file() and (path / "bundle" / "config.json").is_file():
        path = path / "bundle"  # a run folder (runs/NAME) holds its bundle in bundle/
    elif not (path / "config.json").is_file() and (path / "checkpoints").is_dir():
        raise CheckpointError(f"{directory}: a training run without a bundle (rnnkit train writes one in "
                              "bundle/; after Trainer.fit, save the model with model.save(folder))")
    elif not (path / "config.json").exists() and not (path / "model.safetensors").exists():
        # a folder that is no bundle at all (the runs folder itself) said "runs/config.json: file not found"
        runs = sorted(p.name for p in path.iterdir() if (p / "bundle" / "config.json").is_file())[:5]
        hint = f"; it holds the runs {', '.join(runs)}: name one, e.g. {Path(directory) / runs[0]}" if runs else ""
        raise CheckpointError(f"{directory}: not a bundle folder (no config.json) nor a run folder (no "
                              f"bundle/config.json){hint}")
    file = path / "config.json"
    meta = read_json(file)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{file}: expected format {FORMAT!r}, got {meta.get('format')!r}")
    if type(meta.get("format_version")) is not int or meta.get("format_version") != FORMAT_VERSION:  # true == 1
        raise CheckpointError(f"{file}: expected format_version {FORMAT_VERSION}, got {meta.get('format_version')!r}")
    if not isinstance(meta.get("model_class"), str) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{file}: expected a string 'model_class' and an object 'config'")
    return path, meta


_MODEL_MODULES = {"forecaster": "rnnkit.models.forecaster", "anomaly_detector": "rnnkit.models.anomaly"}
"""Registered models whose modules ``rnnkit.models`` does not import (they need pandas: the
``timeseries`` extra)."""


def _model_class(name: str, file: Path) -> type:
    if name not in _REGISTRY:
        try:  # registering happens when the model modules are imported
            importlib.import_module(_MODEL_MODULES.get(name, "rnnkit.models"))
        except ImportError as exc:
            if name in _MODEL_MODULES:
                raise CheckpointError(f"{file}: a {name} bundle needs pandas and statsmodels ({one_line(exc)}); "
                                      "install them with: pip install 'rnnkit[timeseries]'") from None
    if name not in _REGISTRY:
        known = sorted({*_REGISTRY, *_MODEL_MODULES})
        raise CheckpointError(f"{file}: unknown model_class {name!r}; expected one of {known}")
    return _REGISTRY[name]


def _coerce(value: Any, hint: Any, default: Any) -> Any:
    """JSON gives lists and dicts; turn them back into the tuples and dataclasses a config declares."""
    if isinstance(value, dict) and isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value)
    tuple_hint = hint is tuple or typing.get_origin(hint) is tuple
    if isinstance(value, list) and (tuple_hint or isinstance(default, tuple)):
        return tuple(value)
    return value


def config_from_dict(config_class: type, data: dict[str, Any]) -> Any:
    """Build a (possibly nested) dataclass config from ``dataclasses.asdict`` output read from JSON."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for {config_class.__name__}")
    try:
        hints = typing.get_type_hints(config_class)
    except Exception:  # unresolvable annotations: fall back to the defaults' types
        hints = {}
    values = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else None
        values[name] = _coerce(value, hints.get(name), default)
    return config_class(**values)


def _build(cls: type, config: dict[str, Any], file: Path) -> nn.Module:
    try:
        if hasattr(cls, "from_config"):
            model = cls.from_config(config)
        else:
            model = cls(config_from_dict(cls.config_class, config))
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{file}: config does not fit {cls.__name__} ({one_line(exc)})") from exc
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"{file}: {cls.__name__} built a {type(model).__name__}, expected an nn.Module")
    return model


def _verify_files(path: Path, meta: dict[str, Any]) -> None:
    files = meta.get("files", {"model.safetensors": None})
    if not isinstance(files, dict) or "model.safetensors" not in files:
        raise CheckpointError(f"{path / 'config.json'}: expected 'files' to list model.safetensors")
    for name, digest in files.items():
        file = path / str(name)
        if Path(str(name)).name != name or not file.is_file():
            raise CheckpointError(f"{file}: missing file; the bundle is incomplete")
        if digest is not None and sha256_file(file) != digest:
            raise CheckpointError(f"{file}: SHA-256 does not match config.json; the file is truncated or corrupt")


def attach_tokenizer(model: nn.Module, path: Path) -> None:
    """Set ``model.tokenizer`` from ``path/tokenizer.json`` if that file exists."""
    file = path / "tokenizer.json"
    if not file.is_file():
        return
    try:
        from rnnkit.data.tokenizers import load_tokenizer
    except ImportError:
        model.tokenizer = file.read_text(encoding="utf-8")
        return
    try:
        tokenizer = load_tokenizer(file)
    except ImportError as exc:  # a valid file whose library is missing: say what to install
        raise CheckpointError(f"{file}: {exc}") from None
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise CheckpointError(f"{file}: not a valid tokenizer ({one_line(exc)})") from exc
    problem = vocab_mismatch(model, tokenizer)
    if problem:
        raise CheckpointError(f"{file}: {problem}; tokenizer.json and the weights belong to different models")
    model.tokenizer = tokenizer


def vocab_mismatch(model: nn.Module, tokenizer: Any) -> str | None:
    """Why ``tokenizer`` cannot serve ``model`` (their vocabulary sizes differ), or None. A model
    without ``config.vocab_size`` or a tokenizer without ``vocab_size`` is not checked."""
    config = getattr(model, "config", None)
    want = getattr(config, "vocab_size", None)
    members = getattr(config, "members", None)
    if want is None and members:  # an ensemble's members share one vocabulary
        want = getattr(members[0], "vocab_size", None)
    have = getattr(tokenizer, "vocab_size", None)
    if isinstance(want, int) and isinstance(have, int) and want != have:
        return f"the tokenizer has {have:,} tokens but the model's vocabulary has {want:,}"
    return None


def _device(map_location: str | torch.device) -> torch.device:
    """``map_location`` as a device this torch can load onto, else one CheckpointError line."""
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"map_location: expected a device such as 'cpu' or 'cuda:0', got {map_location!r}") from exc
    if device.type == "meta":
        raise CheckpointError("map_location: 'meta' holds no values; load onto 'cpu' or a GPU")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"map_location={str(device)!r}, but this torch sees no CUDA device; use 'cpu'")
    return device


def _check_size(cls: type, config: dict[str, Any], file: Path, weights: Path) -> None:
    """Refuse a config that describes more values than the weights file holds, before building it:
    an edited vocab_size of 10**12 failed in the allocator (or took minutes and gigabytes first).
    The model is built on the meta device (no memory); a class that cannot be is not checked here."""
    try:
        from safetensors import safe_open

        with torch.device("meta"):
            probe = _build(cls, config, file)
        want = sum(t.numel() for t in {id(t): t for t in probe.state_dict(keep_vars=True).values()}.values())
        with safe_open(str(weights), framework="pt") as f:
            have = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    except CheckpointError:
        raise
    except Exception:  # noqa: BLE001 - the real load reports what is wrong
        return
    if want > have:
        raise CheckpointError(f"{file}: the config describes a model of {want:,} values but {weights.name} holds "
                              f"{have:,}; config.json was edited or belongs to other weights")


def load_bundle(directory: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved by :func:`save_bundle`, on ``map_location``, in eval mode.

    Raises:
        CheckpointError: missing folder or file, invalid config.json, unknown model class, digest
            mismatch, truncated or corrupt safetensors, or weights whose names/shapes do not fit.
    """
    device = _device(map_location)
    path, meta = _read_config(directory)
    file = path / "config.json"
    _verify_files(path, meta)
    cls = _model_class(meta["model_class"], file)
    _check_size(cls, meta["config"], file, path / "model.safetensors")
    model = _build(cls, meta["config"], file)
    dtype = getattr(torch, str(meta.get("dtype")), None)
    if meta.get("dtype") is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise CheckpointError(f"{file}: expected a floating-point 'dtype' such as 'float32', got {meta.get('dtype')!r}")
    if isinstance(dtype, torch.dtype):
        model = model.to(dtype)
    model = model.to(device)
    load_weights(model, path / "model.safetensors", device=str(device))
    attach_tokenizer(model, path)
    extra = meta.get("extra")
    model.bundle_extra = dict(extra) if isinstance(extra, dict) else {}
    return model.eval()


class BundleMixin:
    """Gives a registered model ``save(directory)`` and ``Model.load(directory)``."""

    def save(self, directory: str | Path, **kwargs: Any) -> Path:
        """Save this model as a bundle (see :func:`save_bundle` for ``tokenizer`` and ``extra``)."""
        return save_bundle(self, directory, **kwargs)

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
        """Load a bundle and check that it holds a ``cls``."""
        model = load_bundle(directory, map_location=map_location)
        if not isinstance(model, cls):
            raise CheckpointError(f"{directory}: holds {a_or_an(type(model).__name__)}, expected {a_or_an(cls.__name__)}")
        return model
