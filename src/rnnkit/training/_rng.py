"""Random-number generator states as tensors, so a checkpoint stores them without pickle.

Python's ``random``, NumPy's global generator, torch's CPU generator and every initialised CUDA
device's generator are captured into ``{name: Tensor}`` and restored from it.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor

__all__ = ["seed_everything", "capture_rng", "restore_rng"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Tensor]:
    """The current states of every generator the trainer restores, as CPU tensors."""
    version, words, gauss = random.getstate()
    states = {
        "python": torch.tensor([version, *words], dtype=torch.int64),
        "python_gauss": torch.tensor([gauss is not None, gauss or 0.0], dtype=torch.float64),
    }
    _, keys, pos, has_gauss, cached = np.random.get_state()
    states["numpy"] = torch.from_numpy(np.concatenate([keys.astype(np.int64), [pos, has_gauss]]))
    states["numpy_gauss"] = torch.tensor([cached], dtype=torch.float64)
    states["torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda{index}"] = state
    return states


def restore_rng(states: dict[str, Tensor]) -> None:
    """Set the generators to ``states`` from :func:`capture_rng`; raises ``KeyError`` if one is missing."""
    python = states["python"].tolist()
    has_gauss, gauss = states["python_gauss"].tolist()
    random.setstate((int(python[0]), tuple(int(w) for w in python[1:]), gauss if has_gauss else None))
    numpy = states["numpy"].numpy()
    np.random.set_state(("MT19937", numpy[:-2].astype(np.uint32), int(numpy[-2]), int(numpy[-1]),
                         float(states["numpy_gauss"][0])))
    torch.set_rng_state(states["torch"].to(torch.uint8))
    cuda = sorted((k for k in states if k.startswith("cuda")), key=lambda k: int(k[4:]))
    if cuda and torch.cuda.is_available():
        for key in cuda[: torch.cuda.device_count()]:
            torch.cuda.set_rng_state(states[key].to(torch.uint8), device=int(key[4:]))
