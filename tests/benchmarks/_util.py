"""Load a script of benchmarks/quality as a module, for the tests of its functions."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

QUALITY = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "quality"


def load_script(name: str) -> ModuleType:
    """``benchmarks/quality/<name>.py`` imported under ``<name>_script`` (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", QUALITY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
