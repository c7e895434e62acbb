"""Step-by-step tracing of the recurrent layers inside any module, for the analysis tools.

:func:`trace` runs ``module`` on ``inputs`` once. Every unidirectional :class:`~rnnkit.layers.Recurrent`
layer it reaches (see :func:`recurrent_layers`) is re-run with its cells' ``recurrence`` in a Python
loop, one layer of the stack after the other, and its output is swapped into the module's forward
pass through a forward hook. So the states ``s_t`` of every layer and step are tensors of the very
graph that produced the module's output: gradients of a loss with respect to them are the real
back-propagation-through-time quantities.

Each state is cloned right after the step that made it. For an LSTM the returned ``c_t`` is then used
only by the next step, not by the ``h_t`` of its own step, so ``d loss / d s_t`` is the adjoint of the
Markov state ``s_t = (h_t, c_t)``: what the future of the sequence wants from it.

A layer that the module calls several times is traced on its first call only. The trace is of the
deterministic recurrence, whatever the module's training mode: inter-layer dropout and recurrent
dropout are not applied, and zoneout enters as its expectation (each state part mixed with its previous
value, ``lerp(new, old, p)``), what the layer computes in evaluation mode. Bidirectional layers,
``lengths`` and ``PackedSequence`` inputs are refused with a ``ValueError``.
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from rnnkit.cells.base import LSTMState, State, map_state, output_of, zoneout_rates, zoneout_state
from rnnkit.layers.recurrent import Recurrent

__all__ = ["LayerTrace", "Trace", "recurrent_layers", "trace", "flatten_state", "call_module", "bound"]


class LayerTrace(NamedTuple):
    """One layer of one stack over one sequence, batch-first.

    ``states[t]`` is the state after step ``t + 1`` (a tensor ``(B, H)`` or an ``LSTMState``),
    ``projected`` the hoisted input projection ``(B, T, G)``, ``cell`` the cell that stepped and
    ``params`` the tensors its parameters were bound to (cast ones under a ``dtype``): use
    :func:`bound` to step the cell again with them. ``zoneout``: the layer's zoneout rates, one per
    state part (empty without zoneout); :func:`step` applies them as the trace did.
    """

    name: str
    cell: nn.Module
    projected: Tensor
    states: list
    params: dict
    zoneout: tuple = ()

    def step(self, x_t: Tensor, state: State) -> State:
        """One step of the traced recurrence from ``state`` (the cell's, then zoneout's expectation)."""
        new = self.cell.recurrence(x_t, state)
        return zoneout_state(new, state, self.zoneout, expected=True) if self.zoneout else new


class Trace(NamedTuple):
    """What :func:`trace` recorded: the module's ``output`` and one :class:`LayerTrace` per layer."""

    output: Any
    layers: list


def recurrent_layers(module: nn.Module) -> list[Recurrent]:
    """The recurrent layers of ``module`` that the analysis tools look at.

    The protocol, in order: ``module`` itself if it is a :class:`~rnnkit.layers.Recurrent`; else the
    result of ``module.recurrent_layers()`` if the module defines it (a list of ``Recurrent``, or one);
    else every ``Recurrent`` submodule in registration order.
    """
    if isinstance(module, Recurrent):
        found = [module]
    elif isinstance(module, (str, os.PathLike)):
        raise TypeError(f"expected an rnnkit layer or a torch.nn.Module holding one, got the path {str(module)!r}; "
                        "load a bundle first: rnnkit.load(path)")
    elif not isinstance(module, nn.Module):
        raise TypeError(f"expected an rnnkit layer or a torch.nn.Module holding one, got {type(module).__name__}")
    elif callable(getattr(module, "recurrent_layers", None)):
        found = module.recurrent_layers()
        found = [found] if isinstance(found, Recurrent) else list(found)
        wrong = [type(m).__name__ for m in found if not isinstance(m, Recurrent)]
        if wrong:
            raise ValueError(f"{type(module).__name__}.recurrent_layers() must return rnnkit recurrent layers, got "
                             f"{wrong}; a torch.nn.RNN, LSTM or GRU converts with rnnkit.from_torch(layer)")
    else:
        found = [m for m in module.modules() if isinstance(m, Recurrent)]
    if not found or not all(isinstance(m, Recurrent) for m in found):
        raise ValueError(f"{type(module).__name__} holds no rnnkit recurrent layer (rnnkit.RNN, LSTM, GRU, "
                         "IndRNN, MinGRU, MinLSTM); define module.recurrent_layers() to name them")
    for layer in found:
        if layer.bidirectional:
            raise ValueError(f"{type(layer).__name__}: the analysis tools trace unidirectional layers only, got "
                             "bidirectional=True (the reverse direction's time runs backwards)")
    return found


def flatten_state(state: State) -> Tensor:
    """A state as one ``(..., S)`` tensor: ``h`` or ``cat(h, c)``."""
    return state if isinstance(state, Tensor) else torch.cat(list(state), -1)


def _trace_stack(layer: Recurrent, x: Tensor, hx: Any, name: str, record: list) -> tuple[Tensor, Any]:
    """Run ``layer`` on batch-first ``x`` with its cells' recurrence; append one LayerTrace per layer."""
    parts = layer._check_state(hx, x.shape[0], True, x)  # list of (L, B, H) stacks
    zone = zoneout_rates(layer.zoneout, len(parts)) if layer.zoneout else ()
    finals: list[State] = []
    for index, cell in enumerate(layer.cells()):
        s = LSTMState(*(p[index] for p in parts)) if len(parts) == 2 else parts[0][index]
        if torch.is_grad_enabled() and not flatten_state(s).requires_grad:
            # a leaf start state guarantees a graph even with frozen weights and inputs
            s = map_state(lambda p: p.detach().requires_grad_(True), s)
        projected = cell.project_input(x)  # (B, T, G): all steps in one GEMM
        lt = LayerTrace(f"{name}[{index}]" if layer.num_layers > 1 else name, cell, projected, [],
                        dict(cell._parameters), zone)
        states = lt.states
        for x_t in projected.unbind(1):  # unbind: one stack in backward, not T full-size selects
            s = map_state(torch.clone, lt.step(x_t, s))
            states.append(s)
        record.append(lt)
        if states:
            x = torch.stack([output_of(s) for s in states], 1)  # (B, T, H_out): the next layer's input
        else:
            x = x.new_zeros(x.shape[0], 0, cell.output_size)
        finals.append(s)
    stacked = [torch.stack([f if isinstance(f, Tensor) else f[i] for f in finals]) for i in range(len(parts))]
    return x, (LSTMState(*stacked) if len(stacked) == 2 else stacked[0])


@contextmanager
def bound(cell: nn.Module, params: dict):
    """Temporarily bind ``cell``'s parameters to ``params`` (as recorded in a :class:`LayerTrace`)."""
    saved = dict(cell._parameters)
    cell._parameters.update(params)
    try:
        yield cell
    finally:
        cell._parameters.update(saved)


def _refuse_packed(name: str, seen: set):
    """A forward pre-hook that refuses a ``PackedSequence`` or ``lengths=`` before the layer runs (first
    call only, the traced one): the trace steps full-length batches."""

    def pre_hook(layer: Recurrent, args: tuple, kwargs: dict) -> None:
        if id(layer) in seen:
            return
        x = args[0] if args else kwargs.get("input")
        if isinstance(x, PackedSequence) or kwargs.get("lengths") is not None:
            raise ValueError(f"{name}: the analysis tools trace full-length batches; got "
                             f"{'a PackedSequence' if isinstance(x, PackedSequence) else 'lengths='} "
                             "(trim or pad the batch to one length instead)")

    return pre_hook


def _hook(name: str, record: list, seen: set):
    """A forward hook that replaces a layer's output with the traced one (first call only)."""

    def hook(layer: Recurrent, args: tuple, kwargs: dict, output: Any):
        if id(layer) in seen:
            return output
        seen.add(id(layer))
        x = args[0] if args else kwargs.get("input")
        hx = args[1] if len(args) > 1 else kwargs.get("hx")  # a PackedSequence was refused before the call
        batched = x.dim() == 3
        xb = x if batched else x.unsqueeze(0 if layer.batch_first else 1)
        xb = xb if layer.batch_first else xb.transpose(0, 1)
        if hx is not None and not batched:
            hx = map_state(lambda p: p.unsqueeze(1), hx if isinstance(hx, Tensor) else LSTMState(*hx))
        y, state = _trace_stack(layer, xb, hx, name, record)
        y = y if layer.batch_first else y.transpose(0, 1)
        if not batched:
            y, state = y.squeeze(0 if layer.batch_first else 1), map_state(lambda p: p.squeeze(1), state)
        return y, state

    return hook


def _cast(value: Any, dtype: torch.dtype | None) -> Any:
    """``value`` with its floating-point tensors cast to ``dtype``, also inside tuples, lists, dicts and
    NamedTuples (an ``LSTMState``, a model's state), each kept of its own type. A ``PackedSequence`` is
    left as it is (the trace refuses it)."""
    if dtype is None or isinstance(value, PackedSequence):
        return value
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):
        out = copy.copy(value)  # a dict subclass keeps its type (and a defaultdict its factory)
        for key, item in value.items():
            out[key] = _cast(item, dtype)
        return out
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(_cast(v, dtype) for v in value))
    if isinstance(value, (tuple, list)):
        items = [_cast(v, dtype) for v in value]
        return items if type(value) is list else tuple(items) if type(value) is tuple else type(value)(items)
    return value


def call_module(module: nn.Module, inputs: Any, dtype: torch.dtype | None = None) -> Any:
    """Call ``module`` with ``inputs``: a tensor, a tuple (or list) of positional arguments or a dict of
    keywords. Only a plain ``tuple`` or ``list`` is a list of arguments: a NamedTuple (a
    ``PackedSequence``, an ``LSTMState``) is one argument.

    With ``dtype``, the call runs with the module's floating-point parameters and buffers and the
    floating-point tensors of the inputs (also nested in tuples, lists, dicts and NamedTuples: a start
    state) cast to ``dtype`` (``torch.func.functional_call``: the module itself is not modified).
    """
    if isinstance(inputs, dict):
        args, kwargs = (), {k: _cast(v, dtype) for k, v in inputs.items()}
    elif type(inputs) in (tuple, list):
        args, kwargs = tuple(_cast(v, dtype) for v in inputs), {}
    else:
        args, kwargs = (_cast(inputs, dtype),), {}
    if dtype is None:
        return module(*args, **kwargs)
    # one entry per tensor: functional_call re-ties shared ones (a language model's tied embedding)
    tensors = {name: _cast(t, dtype) for name, t in [*module.named_parameters(), *module.named_buffers()]}
    try:
        return torch.func.functional_call(module, tensors, args, kwargs)
    finally:
        for layer in module.modules():  # rebind the cells to the module's own parameters
            if isinstance(layer, Recurrent):
                layer.cells()


def trace(module: nn.Module, inputs: Any, dtype: torch.dtype | None = None) -> Trace:
    """Run ``module(inputs)`` with every recurrent layer traced step by step (see the module docstring),
    in ``dtype`` if given (see :func:`call_module`)."""
    layers = recurrent_layers(module)
    names = {id(m): n or type(m).__name__ for n, m in module.named_modules()}
    record: list[LayerTrace] = []
    seen: set[int] = set()
    handles = [m.register_forward_hook(_hook(names.get(id(m), type(m).__name__), record, seen), with_kwargs=True)
               for m in layers]
    handles += [m.register_forward_pre_hook(_refuse_packed(names.get(id(m), type(m).__name__), seen),
                                            with_kwargs=True) for m in layers]
    try:
        output = call_module(module, inputs, dtype)
    finally:
        for h in handles:
            h.remove()
    if not record:
        raise ValueError(f"{type(module).__name__}: calling it on the inputs ran none of its recurrent layers")
    return Trace(output, record)
