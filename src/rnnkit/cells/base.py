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

import functools
from typing import NamedTuple, Union

import torch
from torch import Tensor, nn

__all__ = ["LSTMState", "State", "RecurrentCell", "map_state", "check_step_input", "zoneout_rates",
           "zoneout_state", "zoneout_keep"]


class LSTMState(NamedTuple):
    """State of an LSTM: ``h`` (the output, ``(..., B, H_out)``) and ``c`` (the cell, ``(..., B, H)``)."""

    h: Tensor
    c: Tensor

    def detach(self) -> LSTMState:
        """The same state cut from the autograd graph (truncated back-propagation through time)."""
        return LSTMState(self.h.detach(), self.c.detach())


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

    def __init_subclass__(cls, **kwargs) -> None:
        """Each cell records the arguments it was built with (the outermost class's, which finishes last),
        so that :meth:`reset_parameters` can draw its parameters again as its constructor did."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def recorded(self, *args, **kw):
            init(self, *args, **kw)
            self.__dict__["_rnnkit_init_args"] = (type(self), args, kw)

        cls.__init__ = recorded

    def reset_parameters(self) -> None:
        """Draw the parameters again as the constructor did (in place: an optimizer keeps them), as
        ``torch.nn``'s ``reset_parameters``. Later changes (``chrono_init_``, copied weights) are undone."""
        made = self.__dict__.get("_rnnkit_init_args")
        if made is None or made[0] is not type(self):
            raise TypeError(f"{type(self).__name__}.reset_parameters: this cell was not built by its "
                            "constructor (or was saved by an older rnnkit); build a new one instead")
        fresh = made[0](*made[1], **made[2])
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(fresh.get_parameter(name))

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
        keep = None
        if zoneout:  # one rate per state part, worked out once rather than at every step
            zoneout = zoneout_rates(zoneout, 1 if isinstance(state, Tensor) else len(state))
            if not zoneout_expected:  # the masks of every step, drawn as the fused kernels draw them
                keep = _loop_keep(zoneout, state, x.shape[1])
        for t in range(x.shape[1]):
            new = advance(t, state)
            if keep is not None:
                new = _apply_keep(new, state, [k[t] for k in keep])
            elif zoneout:
                new = zoneout_state(new, state, zoneout, zoneout_expected)
            if lengths is not None:
                alive = (lengths > t).unsqueeze(-1)  # (B, 1)
                new = map_state(lambda n, o: torch.where(alive, n, o), new, state)
                outputs.append(torch.where(alive, output_of(new), 0.0))  # not * alive: NaN * 0 is NaN
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


def zoneout_keep(p, T: int, parts: int, B: int, H: int, like: Tensor,
                 expected: bool = False, order: Tensor | None = None) -> Tensor | None:
    """Keep masks ``(T, parts, B, H)`` of zoneout for a whole sequence (1 = keep the previous value), or
    None when no rate is positive.

    ``p`` is one rate or one per state part (an LSTM's ``(p_h, p_c)``: :func:`zoneout_rates`). With
    ``expected`` every entry of part ``k`` is ``p_k``: the kernels' ``lerp(new, old, keep)`` and their
    backward are linear in ``keep``, so a constant ``p`` computes the test-time expectation
    ``p old + (1-p) new``. ``order`` (a batching's row order) returns the rows in that order.

    The masks are drawn in one call before the recurrence, by the reference loop and the fused kernels
    alike, so both give the same result under ``torch.manual_seed``. On the CPU (float32/float64, where
    the C++ library builds) one C++ op fills them from a seed drawn from torch's generator (~1 ns an
    entry against ~6 for ``bernoulli_``: ``csrc/masks.cpp``); elsewhere ``bernoulli_``, one call per part.
    """
    rates = zoneout_rates(p, parts)
    if not any(r > 0.0 for r in rates):
        return None
    keep = torch.empty(T, parts, B, H, device=like.device, dtype=like.dtype)
    if expected:
        for k, r in enumerate(rates):
            keep[:, k].fill_(r)
        return keep
    _draw_keep(keep, rates)
    return keep if order is None else keep.index_select(2, order)  # drawn in the caller's batch order


def _draw_keep(keep: Tensor, rates: tuple[float, ...]) -> None:
    """Fill ``keep`` (T, parts, B, H) with Bernoulli(``rates[k]``) in part ``k`` (zeros for a rate of 0)."""
    ops = None
    from rnnkit.kernels._capture import capturing  # (lazily: the kernels import this module)
    if keep.device.type == "cpu" and keep.dtype in (torch.float32, torch.float64) and keep.numel() \
            and not capturing(keep):  # a trace or an export records bernoulli_, not a C++ call
        from rnnkit.kernels import _cpp  # (lazily: the kernels import this module)
        ops = _cpp.ops()
    if ops is not None:
        seed = int(torch.randint(0, 2 ** 62, (1,)))  # from torch's generator: reproducible under a seed
        ops.zoneout_masks(keep, list(rates), seed)
        return
    _draw_keep_torch(keep, rates)


def _draw_keep_torch(keep: Tensor, rates: tuple[float, ...]) -> None:
    """:func:`_draw_keep` with torch's ``bernoulli_`` (no C++ library, ``RNNKIT_CPP=0``, other devices,
    under ``torch.jit.trace`` or ``torch.export``): other masks than the C++ op's under the same seed."""
    for k, r in enumerate(rates):
        if r > 0.0:
            keep[:, k].bernoulli_(r)
        else:
            keep[:, k].zero_()


def _loop_keep(rates: tuple[float, ...], state: State, T: int) -> list[Tensor]:
    """The reference loop's masks, one ``(T, B, H_k)`` per state part: from one :func:`zoneout_keep`
    call where the parts have one size (as the fused kernels draw them), else one call per part (a
    projected LSTM's ``h`` and ``c`` differ)."""
    parts = [state] if isinstance(state, Tensor) else list(state)
    B, sizes = parts[0].shape[0], {p.shape[-1] for p in parts}
    if len(sizes) == 1:
        keep = zoneout_keep(rates, T, len(parts), B, sizes.pop(), parts[0])
        return [keep[:, k] for k in range(len(parts))]
    return [torch.zeros(T, B, p.shape[-1], dtype=p.dtype, device=p.device) if r == 0.0 else
            zoneout_keep(r, T, 1, B, p.shape[-1], p)[:, 0] for p, r in zip(parts, rates)]


def _apply_keep(new: State, old: State, keep: list[Tensor]) -> State:
    if isinstance(new, Tensor):
        return torch.lerp(new, old, keep[0])
    return type(new)(*(torch.lerp(n, o, k) for n, o, k in zip(new, old, keep)))


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
