"""The tasks of the long-range memory suite: data, loss, score and the bar that counts as solved.

The synthetic tasks come from :mod:`rnnkit.data.synthetic` (fresh training batches from a running
generator, a fixed evaluation set per length); the digits are scikit-learn's bundled 8x8 digits
(``sklearn.datasets.load_digits``, 1797 images, no download), read one pixel (64 steps) or one row
(8 steps) at a time, with a fixed split (1257 train / 180 validation / 360 test). Training batches of
the digits are augmented by shifting each image by up to one pixel in each direction (zero fill), the
usual recipe for a training set this small; validation and test images are never shifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnkit.data import synthetic

__all__ = ["MemoryTask", "TASKS", "EVAL_SIZE"]

EVAL_SIZE = 256
COPY_LEN, N_SYMBOLS, N_MEMORIZE = 10, 8, 16


@dataclass(frozen=True)
class MemoryTask:
    """One task: ``batch(n, length, generator)`` and ``eval_set(length)`` give ``(inputs, targets)``.

    A sequence of ``length`` has ``length + extra_steps`` steps (the copy tasks' symbols and recall
    steps). ``vocab`` is the number of token ids (0 for float inputs of ``input_size`` features); ``per_step``
    says whether the model predicts at every step or once after the last; ``score`` returns the
    reported metric (lower is better when ``lower_is_better``) and ``solved`` applies the bar.
    ``eval_set`` decides when to stop; where ``test_set`` is given, the score reported is the test score
    at the best evaluation point (the synthetic tasks' evaluation sets are fresh held-out data already).
    ``min_length``: the shortest ``length`` the task's data can take.
    """

    name: str
    description: str
    lengths: tuple[int, ...]
    extra_steps: int
    input_size: int
    vocab: int
    out_size: int
    per_step: bool
    metric: str
    lower_is_better: bool
    threshold: float
    batch: Callable[[int, int, torch.Generator], tuple[Tensor, Tensor]]
    eval_set: Callable[[int], tuple[Tensor, Tensor]]
    loss: Callable[[Tensor, Tensor], Tensor]
    score: Callable[[Tensor, Tensor], float]
    test_set: Callable[[int], tuple[Tensor, Tensor]] | None = None
    min_length: int = 1

    def solved(self, value: float) -> bool:
        """Whether a score meets the bar."""
        return value < self.threshold if self.lower_is_better else value >= self.threshold  # ">= 97%"


def _synthetic(fn, **kw):
    def batch(n: int, length: int, gen: torch.Generator):
        return tuple(fn(n, length, generator=gen, **kw))

    def eval_set(length: int):
        return tuple(fn(EVAL_SIZE, length, seed=10_000 + length, **kw))

    return batch, eval_set


def _mse(out: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(out, y)


def _token_ce(out: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(out.flatten(0, 1), y.flatten(), ignore_index=synthetic.IGNORE_INDEX)


def _copy_accuracy(out: Tensor, y: Tensor) -> float:
    """Accuracy on the recalled symbols (the last ``COPY_LEN`` steps)."""
    return (out[:, -COPY_LEN:].argmax(-1) == y[:, -COPY_LEN:]).double().mean().item()


def _scored_accuracy(out: Tensor, y: Tensor) -> float:
    """Accuracy where the target is not ignored (selective copy's recalled symbols)."""
    keep = y != synthetic.IGNORE_INDEX
    return (out.argmax(-1)[keep] == y[keep]).double().mean().item()


def _class_accuracy(out: Tensor, y: Tensor) -> float:
    return (out.argmax(-1) == y).double().mean().item()


_DIGITS: dict[str, Tensor] = {}


def _digits() -> dict[str, Tensor]:
    """The 8x8 digits scaled to [0, 1], split 1257 train / 180 validation / 360 test by a fixed permutation."""
    if not _DIGITS:
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("the sequential-digits tasks need scikit-learn (its bundled 8x8 digits): "
                              "pip install scikit-learn") from exc
        data = load_digits()
        images = torch.tensor(data.images, dtype=torch.float32) / 16.0  # (1797, 8, 8)
        labels = torch.tensor(data.target, dtype=torch.long)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        parts = {"train": order[:1257], "val": order[1257:1437], "test": order[1437:]}
        for name, idx in parts.items():
            _DIGITS.update({f"x_{name}": images[idx], f"y_{name}": labels[idx]})
    return _DIGITS


def shift_images(images: Tensor, gen: torch.Generator, max_shift: int = 1) -> Tensor:
    """Each (H, W) image of ``images`` (N, H, W) moved by a random whole number of pixels in
    [-max_shift, max_shift] along each axis, the uncovered border filled with zeros."""
    n, h, w = images.shape
    m = max_shift
    padded = F.pad(images, (m, m, m, m))
    dy = torch.randint(0, 2 * m + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * m + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None].expand(n, h, w)
    cols = (dx[:, None] + torch.arange(w))[:, None, :].expand(n, h, w)
    return padded[torch.arange(n)[:, None, None], rows, cols]


def _digits_task(name: str, steps: int, features: int, description: str) -> MemoryTask:
    def batch(n: int, length: int, gen: torch.Generator):
        d = _digits()
        idx = torch.randint(0, len(d["y_train"]), (n,), generator=gen)
        return shift_images(d["x_train"][idx], gen).reshape(n, steps, features), d["y_train"][idx]

    def split(name: str):
        d = _digits()
        return d[f"x_{name}"].reshape(-1, steps, features), d[f"y_{name}"]

    return MemoryTask(name, description, lengths=(steps,), extra_steps=0, input_size=features, vocab=0,
                      out_size=10, per_step=False, metric="test accuracy", lower_is_better=False,
                      threshold=0.97, batch=batch, eval_set=lambda length: split("val"), loss=F.cross_entropy,
                      score=_class_accuracy, test_set=lambda length: split("test"))


def _tasks() -> dict[str, MemoryTask]:
    adding = _synthetic(synthetic.adding_problem)
    copy = _synthetic(synthetic.copy_memory, n_symbols=N_SYMBOLS, copy_len=COPY_LEN)
    select = _synthetic(synthetic.selective_copy, n_symbols=N_SYMBOLS, n_memorize=N_MEMORIZE)
    vocab = N_SYMBOLS + 2
    tokens = dict(input_size=0, vocab=vocab, out_size=vocab, per_step=True, metric="recall accuracy",
                  lower_is_better=False, threshold=0.99, loss=_token_ce)
    return {
        "adding": MemoryTask("adding", "sum of the two marked values of T uniform numbers (baseline MSE 0.167)",
                             lengths=(100, 200, 500, 1000), extra_steps=0, input_size=2, vocab=0, out_size=1,
                             per_step=False, metric="MSE", lower_is_better=True, threshold=0.01,
                             batch=adding[0], eval_set=adding[1], loss=_mse, score=lambda o, y: _mse(o, y).item(),
                             min_length=2),
        "copy": MemoryTask("copy", f"repeat {COPY_LEN} symbols after T blanks", lengths=(50, 100, 200, 500),
                           extra_steps=2 * COPY_LEN, batch=copy[0], eval_set=copy[1], score=_copy_accuracy,
                           **tokens),
        "selective_copy": MemoryTask("selective_copy", f"recall {N_MEMORIZE} symbols scattered among T blanks",
                                     lengths=(50, 100, 200, 500), extra_steps=N_MEMORIZE, batch=select[0],
                                     eval_set=select[1], score=_scored_accuracy, min_length=N_MEMORIZE, **tokens),
        "digits_pixel": _digits_task("digits_pixel", 64, 1, "8x8 digits read one pixel per step"),
        "digits_row": _digits_task("digits_row", 8, 8, "8x8 digits read one row per step"),
    }


TASKS = _tasks()
