"""The cell contract every recurrence in :mod:`rnnkit.cells` follows.

A cell is one recurrence, for one layer and one direction. It owns its parameters and exposes

* ``init_state(batch_size, *, device=None, dtype=None) -> State``
* ``step(x_t, state) -> (y_t, state)``: the readable reference for one time step, ``x_t`` is ``(B, F)``;
* ``forward(x, state=None, *, lengths=None) -> (y, state)`` over a batch-first ``(B, T, F)`` sequence.

State is a tensor ``(B, H)`` or a NamedTuple of them (:class:`LSTMState`), never a bare tuple.

The base class splits a step in two so that ``forward`` can hoist the input projection of all time
steps into one GEMM: ``project_input(x)`` (any leading shape) and ``recurrence(xp_t, state)``. Its
``forward`` loops ``recurrence`` over the projected sequence; ``reference_forward`` loops ``step``.
Both handle the per-sequence ``lengths`` of padded batches (outputs past a sequence's length are zero
and its state stops changing) and the two recurrent regularisers of the layers:

* ``recurrent_mask``: a ``(B, H_out)`` mask multiplied into the output-state ``h`` where it enters the
  recurrent weights (variational recurrent dropout, Gal & Ghahramani 2016: one mask for all steps);
* ``zoneout``: at every step each state unit keeps its previous value with probability ``p``
  (Krueger et al. 2017); with ``zoneout_expected=True`` (the layer's evaluation mode) every unit takes
  the expectation ``p h_{t-1} + (1-p) h_t`` instead, as the paper does at test time. ``p`` is one rate,
  or one per state part: an LSTM's ``(p_h, p_c)`` (the paper's best LSTM used 0.05 for ``h``, 0.5 for
  ``c``). Masks are drawn per step, ``h`` then ``c``, none for a part whose rate is 0.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import torch
from torch import Tensor, nn

__all__ = ["LSTMState", "State", "RecurrentCell", "map_state", "check_step_input", "zoneout_rates",
           "zoneout_state"]


class LSTMState(NamedTuple):
    """State of an LSTM: ``h`` (the output, ``(..., B, H_out)``) and ``c`` (the cell, ``(..., B, H)``)."""

    h: Tensor
    c: Tensor


State = Union[Tensor, LSTMState]


def map_state(fn, *states):
    """Apply ``fn`` to matching tensors of one or more states of the same structure."""
    first = states[0]
    if isinstance(first, Tensor):
        return fn(*states)
    return type(first)(*(fn(*parts) for parts in zip(*states)))


def output_of(state: State) -> Tensor:
    """The part of a state that is the cell's output ``h``."""
    return state if isinstance(state, Tensor) else state[0]


def check_step_input(cell: "RecurrentCell", x_t: Tensor) -> None:
    """Raise a clear error for a step input that is not ``(B, input_size)``."""
    if not isinstance(x_t, Tensor):
        raise TypeError(f"{type(cell).__name__}.step expects a Tensor, got {type(x_t).__name__}")
    if x_t.dim() != 2 or x_t.shape[-1] != cell.input_size:
        raise ValueError(
            f"{type(cell).__name__}.step expects x_t of shape (batch, {cell.input_size}), "
            f"got {tuple(x_t.shape)}"
        )


class RecurrentCell(nn.Module):
    """Base class of the cells. Subclasses define ``project_input``, ``recurrence`` and ``init_state``."""

    input_size: int
    hidden_size: int

    @property
    def output_size(self) -> int:
        """Size of ``y_t`` (the hidden size, or the projection size of a projected LSTM)."""
        return self.hidden_size

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        raise NotImplementedError

    # the fused kernels keep their prepared weights here between inference calls
    # (rnnkit.kernels._gemm.prepared): dropped on a change of mode and never copied or pickled
    def train(self, mode: bool = True):
        self.__dict__.pop("_rnnkit_prepared", None)
        return super().train(mode)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_rnnkit_prepared", None)
        return state

    def project_input(self, x: Tensor) -> Tensor:
        """The part of the step that depends on the input only, for any leading shape."""
        raise NotImplementedError

    def recurrence(self, xp_t: Tensor, state: State, recurrent_mask: Tensor | None = None) -> State:
        """The part of the step that depends on the previous state."""
        raise NotImplementedError

    def step(self, x_t: Tensor, state: State, recurrent_mask: Tensor | None = None):
        """One time step: ``x_t`` is ``(B, input_size)``; returns ``(y_t, new_state)``."""
        check_step_input(self, x_t)
        new = self.recurrence(self.project_input(x_t), state, recurrent_mask)
        return output_of(new), new

    # -- sequences -----------------------------------------------------------------------------
    def _default_state(self, x: Tensor, state: State | None) -> State:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.input_size:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}.forward expects x of shape (batch, seq, "
                             f"{self.input_size}), got {got}")
        if state is not None:
            return state
        return self.init_state(x.shape[0], device=x.device, dtype=x.dtype)

    def forward(self, x: Tensor, state: State | None = None, *, lengths: Tensor | None = None,
                recurrent_mask: Tensor | None = None, zoneout: float = 0.0, zoneout_expected: bool = False):
        """Run over a batch-first ``(B, T, F)`` sequence with the input projection hoisted."""
        state = self._default_state(x, state)
        # (B, T, G): all time steps in one GEMM. unbind, not xp[:, t]: the backward of T separate
        # selects adds T full-size zero tensors (O(T^2): 8 s instead of 0.3 s at T=1000), unbind's is one stack
        xs = self.project_input(x).unbind(1)
        return self._loop(lambda t, s: self.recurrence(xs[t], s, recurrent_mask),
                          x, state, lengths, zoneout, zoneout_expected)

    def reference_forward(self, x: Tensor, state: State | None = None, *, lengths: Tensor | None = None,
                          recurrent_mask: Tensor | None = None, zoneout: float = 0.0,
                          zoneout_expected: bool = False):
        """Run over a sequence by looping :meth:`step`: the readable truth the fast paths must equal."""
        state = self._default_state(x, state)
        xs = x.unbind(1)
        return self._loop(lambda t, s: self.step(xs[t], s, recurrent_mask)[1],
                          x, state, lengths, zoneout, zoneout_expected)

    def _loop(self, advance, x: Tensor, state: State, lengths: Tensor | None, zoneout,
              zoneout_expected: bool = False):
        """Loop ``advance(t, state)`` over time, applying zoneout and freezing finished sequences."""
        outputs = []
        if zoneout:  # one rate per state part, worked out once rather than at every step
            zoneout = zoneout_rates(zoneout, 1 if isinstance(state, Tensor) else len(state))
        for t in range(x.shape[1]):
            new = advance(t, state)
            if zoneout:
                new = zoneout_state(new, state, zoneout, zoneout_expected)
            if lengths is not None:
                alive = (lengths > t).unsqueeze(-1)  # (B, 1)
                new = map_state(lambda n, o: torch.where(alive, n, o), new, state)
                outputs.append(output_of(new) * alive)
            else:
                outputs.append(output_of(new))
            state = new
        if not outputs:
            y = x.new_zeros(x.shape[0], 0, self.output_size)
        else:
            y = torch.stack(outputs, 1)  # (B, T, H_out)
        return y, state


def zoneout_rates(p, parts: int) -> tuple[float, ...]:
    """``p`` (one rate, or one per state part) as one rate per part of a state with ``parts`` parts."""
    if isinstance(p, (tuple, list)):
        if len(p) != parts:
            raise ValueError(f"zoneout: expected one rate or {parts} (one per state part), got {tuple(p)!r}")
        return tuple(float(r) for r in p)
    return (float(p),) * parts


def zoneout_state(new: State, old: State, p, expected: bool = False) -> State:
    """Zoneout on every part of a state (``p`` as in :func:`zoneout_rates`), ``h`` before ``c``."""
    if isinstance(new, Tensor):
        return _zoneout(new, old, zoneout_rates(p, 1)[0], expected)
    rates = zoneout_rates(p, len(new))
    return type(new)(*(_zoneout(n, o, r, expected) for n, o, r in zip(new, old, rates)))


def _zoneout(new: Tensor, old: Tensor, p: float, expected: bool = False) -> Tensor:
    """Keep each unit's previous value with probability ``p`` (a fresh mask every step); with
    ``expected``, the expectation ``p old + (1-p) new`` (Krueger et al.'s test-time rule)."""
    if p == 0.0:  # no mask drawn: the random stream is the same as without this part's zoneout
        return new
    if expected:
        return torch.lerp(new, old, p)
    keep = torch.empty_like(new).bernoulli_(p)
    return torch.lerp(new, old, keep)
