"""Whether a graph is being captured, in which case the C++ kernels must not run.

``torch.jit.trace`` records only torch operations (a C++ kernel's result would be frozen into the trace
as a constant, or the trace fails), and ``torch.export`` runs the module on fake tensors, which have no
data for a C++ kernel to read (and which the kernels' buffer pool must never keep: a later real call
would write into them). Under capture, ``backend="auto"`` therefore takes the cells' own loop (torch
operations only) and the one-step path stands aside. ``torch.compile`` alone is not capture here: it
runs a fused kernel's autograd Function eagerly at a graph break, on real tensors. Transforms of
``torch.func`` (``grad``, ``vmap``, ``jacrev``: per-sample gradients) count as capture too: the kernels'
autograd Functions, with a hand-written backward over preallocated buffers, have no functorch rule.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["capturing"]

_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch >= 2.5
# a torch.func transform is running: its interpreter stack is not empty (60 ns); private, so looked up
_functorch_level = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", lambda: None)


def capturing(x: object = None) -> bool:
    """True under ``torch.jit.trace``, ``torch.export`` or a ``torch.func`` transform, or when ``x`` is
    not a plain tensor (a fake or functional tensor of a capture, or any other tensor subclass)."""
    if torch.jit.is_tracing() or _is_exporting():
        return True
    # under torch.compile dynamo answers the interpreter-stack query with an object of its own, even
    # with no transform running: compile is not capture here (the fused kernels run at a graph break)
    if _functorch_level() is not None and not torch.compiler.is_compiling():
        return True
    return isinstance(x, Tensor) and type(x) not in (Tensor, nn.Parameter)


def refuse_double_backward(kernel: str) -> None:
    """Called first in the hand-written backward passes: under ``create_graph=True`` (grad mode on during
    backward) they would build no graph of their own, so second derivatives would silently miss the
    recurrence (the fused IndRNN's were off by 12.6 of 29.8). Refused in one line instead."""
    if torch.is_grad_enabled():
        raise RuntimeError(f"the {kernel} kernel's hand-written backward has no second derivative "
                           "(create_graph=True / double backward); build the layer with backend='cell'")
