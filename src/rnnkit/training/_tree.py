"""Recurrent states as trees: a tensor, a NamedTuple of tensors, or any nesting of tuples.

Used to detach the carried state between chunks and batches, and to store it in a safetensors
file plus a JSON description of its structure (so that no pickle is ever needed).
"""

from __future__ import annotations

import sys
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["map_tree", "detach_tree", "flatten_tree", "unflatten_tree"]

log = logging.getLogger(__name__)


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(type(obj), "_fields")


def map_tree(fn: Callable[[Tensor], Any], tree: Any) -> Any:
    """Apply ``fn`` to every tensor of ``tree``, keeping its structure (NamedTuple types included)."""
    if tree is None:
        return None
    if isinstance(tree, Tensor):
        return fn(tree)
    if _is_namedtuple(tree):
        return type(tree)(*(map_tree(fn, item) for item in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(map_tree(fn, item) for item in tree)
    raise TypeError(f"recurrent state: expected a Tensor, a (Named)tuple of tensors or None, got {type(tree).__name__}")


def detach_tree(tree: Any) -> Any:
    """The state with every tensor detached from the autograd graph (values unchanged)."""
    return map_tree(Tensor.detach, tree)


def flatten_tree(tree: Any, prefix: str = "state") -> tuple[dict[str, Tensor], Any]:
    """Split ``tree`` into ``{name: tensor}`` and a JSON-able description of its structure."""
    tensors: dict[str, Tensor] = {}

    def walk(node: Any, name: str) -> Any:
        if node is None:
            return {"kind": "none"}
        if isinstance(node, Tensor):
            tensors[name] = node.detach().contiguous().cpu()
            return {"kind": "tensor", "key": name}
        if isinstance(node, (tuple, list)):
            cls = type(node)
            spec: dict[str, Any] = {"kind": "list" if isinstance(node, list) else "tuple",
                                    "items": [walk(item, f"{name}.{i}") for i, item in enumerate(node)]}
            if _is_namedtuple(node):
                spec["class"] = f"{cls.__module__}:{cls.__qualname__}"
            return spec
        raise TypeError(f"recurrent state: cannot store a {type(node).__name__}")

    return tensors, walk(tree, prefix)


def _namedtuple_class(path: str) -> type | None:
    """The NamedTuple class ``module:Qualname`` of a module this process has already imported (the
    model's own state classes are), else ``None``: a checkpoint never makes resume import anything
    (importing runs a module's code)."""
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = sys.modules[module_name]
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (KeyError, AttributeError):
        return None
    is_namedtuple = isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")
    return obj if is_namedtuple else None


def unflatten_tree(tensors: dict[str, Tensor], spec: Any, device: torch.device | str = "cpu") -> Any:
    """Rebuild the tree :func:`flatten_tree` described; a missing key raises ``KeyError``."""
    kind = spec["kind"]
    if kind == "none":
        return None
    if kind == "tensor":
        # a fresh copy: tensors read from a file may sit at any address, and CPU kernels (GEMM) can
        # round differently on unaligned memory, which would break bit-exact resume
        return tensors[spec["key"]].to(device).clone(memory_format=torch.contiguous_format)
    items = [unflatten_tree(tensors, item, device) for item in spec["items"]]
    if kind == "list":
        return items
    if "class" in spec:
        cls = _namedtuple_class(spec["class"])
        if cls is not None:
            return cls(*items)
        log.warning("state class %s is not loaded in this process; restoring a plain tuple", spec["class"])
    return tuple(items)
