"""rnnkit.export: bundles (save/load), and later streaming sessions, ONNX and quantization."""

from __future__ import annotations

from rnnkit.export.bundle import (BundleMixin, is_registered, load_bundle, read_bundle_config,
                                  register_model, registered_name, save_bundle)

load = load_bundle

__all__ = ["BundleMixin", "register_model", "registered_name", "is_registered", "save_bundle",
           "load_bundle", "read_bundle_config", "load"]
