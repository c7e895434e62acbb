"""Per-feature scaling of time series, fitted on the training part only.

>>> s = Scaler("minmax").fit([[0.0], [10.0]])
>>> s.transform([[5.0]]).tolist()
[[0.5]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["Scaler", "as_array"]

_KINDS = ("standard", "minmax")


def _to_numpy(values: Any) -> np.ndarray:
    """``values`` (DataFrame, Series, array, tensor, nested lists) as a float64 array."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().to(torch.float64).numpy()
    if hasattr(values, "to_numpy"):
        return values.to_numpy(dtype=np.float64)
    return np.asarray(values, dtype=np.float64)


def as_array(values: Any) -> np.ndarray:
    """``values`` (DataFrame, Series, array, tensor, nested lists) as a float64 ``(N, F)`` array."""
    x = _to_numpy(values)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"expected (N, F) or (N,) values, got shape {x.shape}")
    return x


def _like(result: np.ndarray, shape: tuple[int, ...], like: Any) -> Any:
    """Return ``result`` with ``shape`` in the container type of ``like``."""
    result = result.reshape(shape)
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(result, dtype=like.dtype if like.is_floating_point() else None,
                               device=like.device)
    if hasattr(like, "columns") and result.ndim == 2:
        return type(like)(result, index=like.index, columns=like.columns)
    if hasattr(like, "to_numpy") and hasattr(like, "index"):  # a pandas Series
        return type(like)(result, index=like.index, name=getattr(like, "name", None))
    return result


class Scaler:
    """Standard (zero mean, unit variance) or min-max ([0, 1]) scaling per feature.

    Fit it on the training part only, then transform every part with the same statistics,
    so nothing about validation or test data leaks into training. A constant feature is
    left unscaled (scale 1) rather than divided by zero.

    ``transform`` and ``inverse_transform`` work on the last axis, so they accept ``(N, F)``
    data as well as ``(B, T, F)`` model outputs, and return the input's type (tensor, array
    or DataFrame).

    Args:
        kind: ``"standard"`` or ``"minmax"``.
    """

    def __init__(self, kind: str = "standard"):
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        self.kind = kind
        self.shift: np.ndarray | None = None  # subtracted: mean or minimum
        self.scale: np.ndarray | None = None  # divided by: std or range

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self.shift is not None

    def fit(self, values: Any) -> Scaler:
        """Learn per-feature statistics from ``values`` (``(N, F)``, NaNs ignored)."""
        x = as_array(values)
        if x.shape[0] == 0 or np.isnan(x).all(axis=0).any():
            raise ValueError("cannot fit a Scaler on data with no values in some feature")
        if np.isinf(x).any():
            raise ValueError(f"cannot fit a Scaler on infinite values ({int(np.isinf(x).sum())} in the "
                             "data); remove or replace them first")
        if self.kind == "standard":
            shift, scale = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        else:
            shift = np.nanmin(x, axis=0)
            scale = np.nanmax(x, axis=0) - shift
        self.shift, self.scale = shift, np.where(scale > 0, scale, 1.0)
        return self

    def _stats(self, n_features: int, features: Sequence[int] | None) -> tuple:
        if self.shift is None or self.scale is None:
            raise ValueError("Scaler is not fitted; call fit(train_values) first")
        idx = list(range(len(self.shift))) if features is None else list(features)
        if len(idx) != n_features:
            raise ValueError(f"Scaler was fitted on {len(idx)} feature(s), got {n_features}")
        return self.shift[idx], self.scale[idx]

    def transform(self, values: Any, features: Sequence[int] | None = None) -> Any:
        """Scale ``values`` (last axis = features; ``features`` picks a subset of them)."""
        x = _to_numpy(values)
        x2 = x[:, None] if x.ndim == 1 else x  # (..., F)
        shift, scale = self._stats(x2.shape[-1], features)
        return _like((x2 - shift) / scale, x.shape, values)

    def inverse_transform(self, values: Any, features: Sequence[int] | None = None) -> Any:
        """Undo :meth:`transform`, e.g. on forecasts of the features ``features``."""
        x = _to_numpy(values)
        x2 = x[:, None] if x.ndim == 1 else x  # (..., F)
        shift, scale = self._stats(x2.shape[-1], features)
        return _like(x2 * scale + shift, x.shape, values)

    def to_dict(self) -> dict[str, Any]:
        """The fitted scaler as JSON-able data."""
        if self.shift is None or self.scale is None:
            raise ValueError("Scaler is not fitted; call fit(train_values) first")
        return {"kind": self.kind, "shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scaler:
        """Rebuild a scaler from :meth:`to_dict` output."""
        if not isinstance(data, dict) or not {"kind", "shift", "scale"} <= set(data):
            raise ValueError("Scaler data needs 'kind', 'shift' and 'scale'")
        scaler = cls(data["kind"])
        shift = np.asarray(data["shift"], dtype=np.float64)
        scale = np.asarray(data["scale"], dtype=np.float64)
        if shift.shape != scale.shape or shift.ndim != 1:
            raise ValueError("Scaler data needs 'shift' and 'scale' lists of the same length")
        if not (np.isfinite(shift).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("Scaler data needs finite 'shift' values and finite 'scale' values above 0")
        scaler.shift, scaler.scale = shift, scale
        return scaler

