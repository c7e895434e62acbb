"""``Recurrent``: a torch.nn-compatible sequence layer composed over cells.

The layer owns the parameters under torch's names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...) so
its ``state_dict()`` is a ``torch.nn.LSTM``'s. It keeps one cell per layer and direction, unregistered,
and binds the layer's parameters into them before each use, so there is one set of parameters and the
cells stay the readable reference. ``forward`` chooses a backend:

* ``"native"``: torch's own kernels (oneDNN/cuDNN) for configurations they compute exactly;
* ``"fused"``: one autograd Function per sequence with a hand-written backward (LSTM incl. layer norm
  and peepholes, GRU incl. layer norm; any lengths, recurrent dropout, zoneout), :mod:`rnnkit.kernels`;
* ``"scan"``: MinGRU/MinLSTM as one chunked real-space parallel scan, forward and backward;
* ``"cell"``: the cell's ``forward`` (input projection hoisted; a log-space scan for MinGRU/MinLSTM);
* ``"reference"``: the cell's ``step`` in a Python loop.

``"auto"`` picks native where exact, else fused, else scan, else cell. Variable lengths, bidirectional
runs, inter-layer dropout, recurrent dropout and zoneout are handled here, around the cells.
"""

from __future__ import annotations

import operator
import warnings
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence

from rnnkit.cells.base import LSTMState, RecurrentCell, zoneout_state
from rnnkit.kernels import dispatch, native
from rnnkit.kernels._capture import capturing
from rnnkit.kernels.step import autocast_for, try_step
from rnnkit.layers import masking
from rnnkit.layers.regularizers import check_probability, drop_connect, variational_mask

__all__ = ["Recurrent", "BACKENDS"]

BACKENDS = ("auto", "native", "fused", "scan", "cell", "reference")


class Recurrent(nn.Module):
    """Stacked, optionally bidirectional recurrence over cells made by ``make_cell(input_size)``."""

    native_mode: str | None = None  # "lstm", "gru", "rnn_tanh", "rnn_relu" where torch's kernel is exact
    proj_size: int = 0  # as torch.nn's RNN and GRU have it (the LSTM sets its own)

    def __prepare_scriptable__(self):
        """Called by ``torch.jit.script`` first: one clear line instead of TorchScript's parse errors."""
        from rnnkit.errors import ConfigError

        raise ConfigError(f"torch.jit.script does not support rnnkit layers ({type(self).__name__}); use "
                          "torch.jit.trace, torch.export or torch.compile (docs/layers.md)")

    def __init__(self, make_cell: Callable[[int], RecurrentCell], input_size: int, hidden_size: int,
                 num_layers: int = 1, bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, *, recurrent_dropout: float = 0.0,
                 zoneout: float | tuple[float, float] = 0.0, weight_drop: float = 0.0, backend: str = "auto") -> None:
        super().__init__()
        name = type(self).__name__
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"{name}: num_layers must be an int >= 1, got {num_layers!r}")
        if backend not in BACKENDS:
            raise ValueError(f"{name}: backend must be one of {BACKENDS}, got {backend!r}")
        # torch.nn accepts dropout=1 between layers (everything dropped): so does the drop-in
        dropout = 1.0 if dropout == 1 and not isinstance(dropout, bool) else check_probability(f"{name}: dropout", dropout)
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} acts between layers and has no effect with "
                          "num_layers=1", stacklevel=3)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional = bool(bidirectional)
        self.recurrent_dropout = check_probability(f"{name}: recurrent_dropout", recurrent_dropout)
        zoneout = tuple(check_probability(f"{name}: zoneout", p) for p in zoneout) \
            if isinstance(zoneout, (tuple, list)) else check_probability(f"{name}: zoneout", zoneout)
        self.weight_drop = check_probability(f"{name}: weight_drop", weight_drop)
        self.backend = backend
        self._cells: list[RecurrentCell] = []
        self._bindings: list[list[tuple[str, str]]] = []
        dirs = 2 if self.bidirectional else 1
        for layer in range(num_layers):
            for d in range(dirs):
                cell = make_cell(input_size if layer == 0 else self._cell_output_size(layer) * dirs)
                self._adopt(cell, f"_l{layer}" + ("_reverse" if d else ""))
        self.output_size = self._cells[0].output_size
        self._step_weights, self._flat_names = self._make_step_weights(), self._make_flat_names()
        self._dropped = self._recurrent_names()  # what weight drop (DropConnect) acts on
        if self.weight_drop > 0 and not self._dropped:
            raise ValueError(f"{name}: weight_drop needs recurrent weights (weight_hh); this layer has none")
        probe = self._cells[0].init_state(1, device=torch.device("meta"))
        self._lstm_state = isinstance(probe, LSTMState)
        self._state_sizes = [p.shape[-1] for p in ([probe] if isinstance(probe, Tensor) else probe)]
        self.zoneout = self._check_zoneout(zoneout)
        if backend != "auto":  # a backend that cannot cover the configuration is refused here, not at the
            self.select_backend(training=False)  # first forward (training-only regularisers: at forward)

    def _check_zoneout(self, zoneout):
        """One rate, or an LSTM's ``(p_h, p_c)`` (kept as one float when they are equal)."""
        if not isinstance(zoneout, tuple):
            return zoneout
        if not self._lstm_state:
            raise ValueError(f"{type(self).__name__}: zoneout=(p_h, p_c) sets an LSTM's two state parts apart; "
                             f"this layer's state has one part: give one rate, got {zoneout!r}")
        if len(zoneout) != 2:
            raise ValueError(f"{type(self).__name__}: zoneout takes one rate or two, (p_h, p_c) for the LSTM's "
                             f"h and c, got {len(zoneout)}: {zoneout!r}")
        return zoneout[0] if zoneout[0] == zoneout[1] else zoneout

    def reset_parameters(self) -> None:
        """Draw every parameter again as the constructor did, in place (as ``torch.nn.LSTM.reset_parameters``;
        with the same seed, equal to a new layer's). Copied or chrono-initialised weights are undone."""
        for cell in self._cells:
            cell.reset_parameters()

    def flatten_parameters(self) -> None:
        """Nothing to do (torch.nn's RNN layers compact their weights for cuDNN here; rnnkit keeps the
        parameters as they are). Kept so that code written for torch.nn runs unchanged."""

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters per layer and direction, in torch.nn's order (as its ``all_weights``)."""
        return [self._flat_weights(k) for k in range(len(self._bindings))]

    def _recurrent_names(self) -> tuple[str, ...]:
        """The flat names of the recurrent matrices (``weight_hh_l{k}[_reverse]``)."""
        return tuple(t for pairs in self._bindings for p, t in pairs if p == "weight_hh")

    def _make_step_weights(self):
        """The flat weights (torch's order) from ``_parameters`` in one C call, for the streaming fast path."""
        return operator.itemgetter(*(t for pairs in self._bindings for _, t in pairs))

    def _make_flat_names(self) -> frozenset:
        """The flat names of all bound weights, for :meth:`_params`'s check that each is a parameter."""
        return frozenset(t for pairs in self._bindings for _, t in pairs)

    def __setstate__(self, state) -> None:  # a layer pickled before weight drop and the step's getter
        super().__setstate__(state)
        self.__dict__.setdefault("weight_drop", 0.0)
        self.__dict__.setdefault("_dropped", self._recurrent_names())
        if "_step_weights" not in self.__dict__:
            self._step_weights = self._make_step_weights()
        if "_flat_names" not in self.__dict__:
            self._flat_names = self._make_flat_names()

    def _cell_output_size(self, layer: int) -> int:
        return self._cells[-1].output_size

    def _adopt(self, cell: RecurrentCell, suffix: str) -> None:
        """Register the cell's parameters on the layer under torch's names; keep the cell unregistered."""
        pairs = []
        for pname, p in list(cell._parameters.items()):
            if p is not None:
                self.register_parameter(pname + suffix, p)
                pairs.append((pname, pname + suffix))
        self._cells.append(cell)
        self._bindings.append(pairs)

    def train(self, mode: bool = True):
        """Set the mode of the layer and of its cells (which are not registered submodules: the
        fused kernels keep prepared weights on a cell only while it is in evaluation mode)."""
        super().train(mode)
        for cell in self._cells:
            cell.train(mode)
        return self

    def _params(self):
        """The weights by their flat names: ``_parameters``, or where some are not parameters of their
        own a mapping of the attributes, as torch's own layers read them: a parametrized weight
        (``torch.nn.utils.parametrize``, e.g. ``parametrizations.weight_norm``) computed now, one that a
        forward pre-hook sets (``torch.nn.utils.prune``, the hook-based ``weight_norm`` and
        ``spectral_norm``), or a replica's plain tensors (``nn.DataParallel``)."""
        params = self._parameters
        if "parametrizations" not in self._modules and params.keys() >= self._flat_names:
            return params
        return {t: getattr(self, t) for pairs in self._bindings for _, t in pairs}

    def _refresh_hooked_weights(self, x_t) -> None:
        """Run the forward pre-hooks of torch's weight utilities (``prune``, the hook-based ``weight_norm``
        and ``spectral_norm``), which compute a weight from its original before each forward: ``step``
        is no forward, and used the weight the last forward had left (stale after an optimizer step)."""
        from torch.nn.utils.prune import BasePruningMethod
        from torch.nn.utils.spectral_norm import SpectralNorm
        from torch.nn.utils.weight_norm import WeightNorm

        for hook in list(self._forward_pre_hooks.values()):
            if isinstance(hook, (BasePruningMethod, WeightNorm, SpectralNorm)):
                hook(self, (x_t,))

    def _reference(self) -> Tensor:
        """A weight, for the layer's dtype and device (a ``nn.DataParallel`` replica has no parameters)."""
        for p in self.parameters():
            return p
        return getattr(self, self._bindings[0][0][1])

    def _replicate_for_data_parallel(self):
        """A ``nn.DataParallel`` replica with cells of its own: replicas run at once, each binding its
        cells to its own device's weights (the replica's ``__dict__`` copy would share the list)."""
        replica = super()._replicate_for_data_parallel()
        cells = []
        for cell in self._cells:
            copy = cell._replicate_for_data_parallel()
            copy.__dict__.pop("_rnnkit_prepared", None)
            cells.append(copy)
        replica._cells = cells
        return replica

    def _release(self, weights) -> None:
        """Bind the cells back to the layer's parameters after a call with other ``weights`` (weight
        drop's masked copies, parametrized weights): cells left holding a call's non-leaf tensors kept its
        graph alive and made ``copy.deepcopy`` of the layer fail."""
        if weights is self._parameters:
            return
        params = self._parameters
        for cell, pairs in zip(self._cells, self._bindings):
            for pname, tname in pairs:
                p = params.get(tname)
                if p is not None:
                    cell._parameters[pname] = p

    def cells(self, weights=None) -> list[RecurrentCell]:
        """The cells, one per layer and direction (layer-major), bound to this layer's parameters (or to
        ``weights``, a mapping of the same names: :meth:`_weights`)."""
        params = self._params() if weights is None else weights
        for cell, pairs in zip(self._cells, self._bindings):
            for pname, tname in pairs:
                cell._parameters[pname] = params[tname]
        return self._cells

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for key, default in (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0.0),
                             ("bidirectional", False), ("recurrent_dropout", 0.0), ("zoneout", 0.0),
                             ("weight_drop", 0.0), ("backend", "auto")):
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        return s + self._extra_options()

    def _extra_options(self) -> str:
        return ""

    # -- state ---------------------------------------------------------------------------------
    def _state_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        """Shapes of the stacked state tensors: ``[(L*D, B, H_out)]`` (+ ``(L*D, B, H)`` for LSTM c)."""
        n = self.num_layers * self.num_directions
        return [(n, batch_size, size) for size in self._state_sizes]

    def _is_lstm_state(self) -> bool:
        return self._lstm_state

    def init_state(self, batch_size: int, *, device=None, dtype=None):
        """Zeros shaped like ``forward``'s ``hx``: ``(L*D, B, H_out)`` or ``LSTMState(h, c)`` of stacks."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise ValueError(f"{type(self).__name__}.init_state: batch_size must be an int >= 0, got {batch_size!r}")
        ref = self._reference()
        device, dtype = device or ref.device, dtype or ref.dtype
        zeros = [torch.zeros(s, device=device, dtype=dtype) for s in self._state_shapes(batch_size)]
        return LSTMState(*zeros) if self._is_lstm_state() else zeros[0]

    def _check_state(self, hx, batch_size: int, batched: bool, like: Tensor):
        """Return ``hx`` as a list of 3-D stacks after checking its type and shapes."""
        if hx is None:
            return [torch.zeros(s, device=like.device, dtype=like.dtype) for s in self._state_shapes(batch_size)]
        lstm = self._is_lstm_state()
        parts = list(hx) if isinstance(hx, (tuple, list)) else [hx]
        name = type(self).__name__
        if (lstm and len(parts) != 2) or (not lstm and (len(parts) != 1 or not isinstance(hx, Tensor))):
            want = "a pair (h_0, c_0) or LSTMState" if lstm else "a single tensor h_0"
            raise TypeError(f"{name}: hx must be {want}, got {type(hx).__name__}")
        out = []
        for part, shape in zip(parts, self._state_shapes(batch_size)):
            want = shape if batched else (shape[0], shape[2])
            if not isinstance(part, Tensor) or tuple(part.shape) != want:
                got = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
                raise ValueError(f"{name}: expected hx of shape {want}, got {got}")
            if part.dtype != like.dtype and not torch.is_autocast_enabled(like.device.type):
                raise ValueError(f"{name}: expected hx of dtype {like.dtype} like the input, got {part.dtype}")
            if part.device != like.device:
                raise ValueError(f"{name}: expected hx on {like.device} like the input, got {part.device}")
            out.append(part if batched else part.unsqueeze(1))
        return out

    def _pack_state(self, parts: list[Tensor]):
        return LSTMState(*parts) if self._is_lstm_state() else parts[0]

    # -- input ---------------------------------------------------------------------------------
    def _check_input(self, x) -> bool:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: input must be a Tensor or PackedSequence, got {type(x).__name__}")
        layout = "(batch, seq, features)" if self.batch_first else "(seq, batch, features)"
        if x.dim() not in (2, 3):
            raise ValueError(f"{name}: expected a 3-D input {layout} or a 2-D unbatched (seq, features) "
                             f"input, got a {x.dim()}-D tensor of shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input with {self.input_size} features (input_size) in the "
                             f"last dimension, got {x.shape[-1]} (input shape {tuple(x.shape)})")
        ref = self._reference()
        if x.dtype != ref.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"{name}: input dtype must be {ref.dtype} like the weights, got {x.dtype}")
        if x.device != ref.device:
            raise ValueError(f"{name}: input on {x.device}, the weights on {ref.device}; move one with .to()")
        return x.dim() == 3

    # -- backends ------------------------------------------------------------------------------
    def select_backend(self, x: Tensor | None = None, *, training: bool | None = None) -> str:
        """The backend ``forward`` uses now (it depends on the training mode); for input ``x`` under
        ``torch.jit.trace`` or ``torch.export``, ``"auto"`` takes the cells' loop instead of the fused
        kernels or the scan, which are C++ code a trace cannot record (:mod:`rnnkit.kernels._capture`).
        ``training`` asks for that mode instead of the layer's own."""
        training = self.training if training is None else training
        # zoneout acts in evaluation mode too (the expectation of its mix), which torch's kernels lack
        regularised = (training and self.recurrent_dropout > 0) or bool(self.zoneout)
        native_ok = self.native_mode is not None and not regularised
        if self.backend == "native" and not native_ok:
            why = "recurrent dropout in training or zoneout" if regularised else "this configuration"
            raise ValueError(f"{type(self).__name__}: backend='native' (torch's own kernels) covers plain "
                             "RNN, LSTM (with proj_size) and GRU without zoneout or recurrent dropout in "
                             f"training; not available for {why}; use backend='auto'")
        fast = {"fused": dispatch.fused_supports(self._cells[0]),
                "scan": dispatch.scan_supports(self._cells[0], bool(self.zoneout))}
        if self.backend in fast and not fast[self.backend]:
            covers = {"fused": "LSTM (plain, peephole or layer-normalised; no proj_size), GRU (plain or "
                               "layer-normalised) and IndRNN",
                      "scan": "MinGRU and MinLSTM without zoneout"}[self.backend]
            raise ValueError(f"{type(self).__name__}: backend={self.backend!r} covers {covers}, not this "
                             "layer's configuration; use backend='auto'")
        if self.backend == "auto":
            if native_ok:
                return "native"
            choice = next((k for k, ok in fast.items() if ok), "cell")
            return "cell" if choice != "cell" and capturing(x) else choice
        if self.backend in fast and capturing(x):
            raise ValueError(f"{type(self).__name__}: backend={self.backend!r} runs C++ kernels, which "
                             "torch.jit.trace, torch.export and torch.func transforms cannot record or "
                             "transform; use backend='auto' or 'cell'")
        return self.backend

    def _flat_weights(self, index: int | None = None, weights=None) -> list[Tensor]:
        """Weights in torch's flat order, for all cells or the cell at ``index`` (from ``weights``, a
        mapping like ``_parameters``, when given: :meth:`_weights`)."""
        params = self._params() if weights is None else weights
        chosen = self._bindings if index is None else [self._bindings[index]]
        return [params[t] for pairs in chosen for _, t in pairs]

    def _weights(self):
        """The weights one forward call uses: the parameters, or in training with ``weight_drop`` a copy
        of the mapping whose recurrent matrices are DropConnect-ed (Wan et al. 2013; AWD-LSTM's weight
        drop, Merity et al. 2018): each entry zeroed with probability ``p`` and the rest scaled by
        ``1/(1-p)``, one mask per call shared by all time steps (and by the batch)."""
        if not (self.training and self.weight_drop > 0):
            return self._params()
        weights = dict(self._params())
        for t in self._dropped:
            weights[t] = drop_connect(weights[t], self.weight_drop)
        return weights

    # -- forward -------------------------------------------------------------------------------
    def forward(self, input, hx=None, *, lengths=None):
        """Run the layer. Returns ``(output, h_n)`` as torch.nn does (``h_n`` an ``LSTMState`` for LSTMs).

        ``input`` is ``(B, T, F)`` if ``batch_first`` else ``(T, B, F)``, a 2-D unbatched ``(T, F)``, or
        a ``PackedSequence``. ``lengths`` (B,) marks the valid steps of a padded batch: outputs past a
        sequence's length are zero, its final state is its last valid step, and the reverse direction
        starts at that step. One step with a state and nothing needing a gradient (generation) runs the
        C++ step of :mod:`rnnkit.kernels.step` where it applies (equal within float rounding).
        """
        if (hx is not None and lengths is None and not torch.is_grad_enabled() and isinstance(input, Tensor)
                and input.dim() == 3 and input.shape[1 if self.batch_first else 0] == 1):
            fast = try_step(self, input[:, 0] if self.batch_first else input[0], hx, cpp_only=True)
            if fast is not None:  # one step without autograd (generation, streaming): the C++ step
                return fast[0].unsqueeze(1 if self.batch_first else 0), fast[1]
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError(f"{type(self).__name__}: give lengths or a PackedSequence, not both")
            return self._forward_packed(input, hx)
        batched = self._check_input(input)
        x = input if batched else input.unsqueeze(0 if self.batch_first else 1)
        B, T = (x.shape[0], x.shape[1]) if self.batch_first else (x.shape[1], x.shape[0])
        state = self._check_state(hx, B, batched, x)
        if lengths is not None:
            lengths = masking.check_lengths(lengths, B, T, x.device)
        backend = self.select_backend(x)
        if backend == "native" and T == 0:  # torch's kernels refuse T=0; every other backend (and a
            backend = "cell"                 # stream that has not started) returns the initial state
        if backend != "native" and autocast_for(x):
            return self._outside_autocast(input, hx, lengths)
        weights = self._weights()  # after the return above: weight drop draws its mask once per call
        if backend == "native" and lengths is None:
            y, hn = native.run_full(self.native_mode, x, self._pack_native(state), self._flat_weights(None, weights),
                                    self.bias, self.num_layers, self.dropout, self.training,
                                    self.bidirectional, self.batch_first)
            parts = list(hn) if isinstance(hn, tuple) else [hn]
        else:
            xb = x if self.batch_first else x.transpose(0, 1)
            y, parts = self._run_layers(xb, state, lengths, backend, weights)
            y = (y if self.batch_first else y.transpose(0, 1)).contiguous()  # as torch.nn returns it
        if not batched:
            y = y.squeeze(0 if self.batch_first else 1)
            parts = [p.squeeze(1) for p in parts]
        return y, self._pack_state(parts)

    def _outside_autocast(self, input, hx, lengths=None, step: bool = False):
        """Under autocast, rnnkit's own recurrences (all but ``native``, which torch's autocast covers)
        run in the weights' dtype with autocast off, and return that dtype: the fused kernels and the scan
        have no low-precision path, and the cells' loop mixed dtypes (a GRU's ``lerp`` refused them)."""
        dtype = self._reference().dtype
        cast = (lambda t: t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t)
        if isinstance(input, PackedSequence):
            input = input._replace(data=cast(input.data))
        else:
            input = cast(input)
        if isinstance(hx, tuple):
            hx = type(hx)(*map(cast, hx)) if hasattr(hx, "_fields") else tuple(map(cast, hx))
        else:
            hx = cast(hx)
        with torch.autocast(input.data.device.type if isinstance(input, PackedSequence) else input.device.type,
                            enabled=False):
            return self.step(input, hx) if step else self.forward(input, hx, lengths=lengths)

    def _pack_native(self, state: list[Tensor]):
        return tuple(state) if len(state) == 2 else state[0]

    def _run_layers(self, x: Tensor, state: list[Tensor], lengths: Tensor | None, backend: str, weights=None):
        """Layer by layer, direction by direction, on batch-first ``x``; returns ``(y, state parts)``."""
        weights = self._params() if weights is None else weights
        cells = self.cells(weights)
        try:
            return self._run_stack(x, state, lengths, backend, weights, cells)
        finally:
            self._release(weights)

    def _run_stack(self, x: Tensor, state: list[Tensor], lengths: Tensor | None, backend: str, weights,
                   cells: list[RecurrentCell]):
        """:meth:`_run_layers` with the cells bound to ``weights``."""
        D = self.num_directions
        finals: list[list[Tensor]] = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                s0 = [p[k] for p in state]
                xin = masking.reverse_within_lengths(x, lengths) if d and lengths is not None else \
                    (x.flip(1) if d else x)
                y, sn = self._run_direction(k, cells[k], xin, s0, lengths, backend, weights)
                outs.append(masking.reverse_within_lengths(y, lengths) if d and lengths is not None else
                            (y.flip(1) if d else y))
                finals.append(sn)
            x = torch.cat(outs, -1) if D > 1 else outs[0]
            if self.dropout > 0 and layer < self.num_layers - 1:
                # F.dropout draws its mask in memory order: a fused direction returns a transposed view of
                # its (T, B, H) buffer, and the same seed would drop other units than on another backend
                x = F.dropout(x.contiguous() if self.training else x, self.dropout, self.training)
        parts = [torch.stack([f[i] for f in finals]) for i in range(len(state))]
        return x, parts

    def _run_direction(self, k: int, cell: RecurrentCell, x: Tensor, s0: list[Tensor],
                       lengths: Tensor | None, backend: str, weights=None):
        """One cell over batch-first ``x``; returns ``(y, [final state parts])``."""
        if backend == "native":
            h0 = tuple(s.unsqueeze(0) for s in s0) if len(s0) == 2 else s0[0].unsqueeze(0)
            w = self._flat_weights(k, weights)
            if lengths is None:
                y, hn = native.run_full(self.native_mode, x, h0, w, self.bias, 1, 0.0, self.training, False, True)
            else:
                y, hn = native.run_lengths(self.native_mode, x, h0, w, self.bias, lengths)
            return y, [p.squeeze(0) for p in (hn if isinstance(hn, tuple) else (hn,))]
        start = LSTMState(*s0) if len(s0) == 2 else s0[0]
        reg = {}
        if self.training and self.recurrent_dropout > 0:
            reg["recurrent_mask"] = variational_mask(x.shape[0], cell.output_size, self.recurrent_dropout, x)
        if self.zoneout:  # training: random keep masks; evaluation: their expectation
            reg["zoneout"] = self.zoneout
            reg["zoneout_expected"] = not self.training
        if backend == "fused":
            y, sn = dispatch.run_fused(cell, x, start, lengths, **reg)
        elif backend == "scan":
            y, sn = dispatch.run_scan(cell, x, start, lengths)
        else:
            run = cell.reference_forward if backend == "reference" else cell
            y, sn = run(x, start, lengths=lengths, **reg)
        return y, ([sn] if isinstance(sn, Tensor) else list(sn))

    def _forward_packed(self, packed: PackedSequence, hx):
        """PackedSequence in and out, as torch.nn (``hx`` and ``h_n`` in the caller's batch order)."""
        data = packed.data
        self._check_input(data.unsqueeze(0))
        B = int(packed.batch_sizes[0])
        state = self._check_state(hx, B, True, data)
        backend = self.select_backend(data)
        if backend != "native" and autocast_for(data):
            return self._outside_autocast(packed, hx)
        weights = self._weights()
        if backend == "native":
            order = packed.sorted_indices
            if order is not None:
                state = [s.index_select(1, order) for s in state]
            y, hn = native.run_packed(self.native_mode, data, packed.batch_sizes, self._pack_native(state),
                                      self._flat_weights(None, weights), self.bias, self.num_layers, self.dropout,
                                      self.training, self.bidirectional)
            parts = list(hn) if isinstance(hn, tuple) else [hn]
            if packed.unsorted_indices is not None:
                parts = [p.index_select(1, packed.unsorted_indices) for p in parts]
            out = PackedSequence(y, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
            return out, self._pack_state(parts)
        padded, lengths = masking.unpack(packed)
        y, parts = self._run_layers(padded, state, lengths.to(padded.device), self.select_backend(padded), weights)
        return masking.repack(y, lengths, packed), self._pack_state(parts)

    # -- streaming -----------------------------------------------------------------------------
    def step(self, x_t: Tensor, hx=None):
        """One time step with the same weights: ``x_t`` (B, input_size) -> ``(y_t, hx)``.

        ``hx`` is shaped as for ``forward`` (``None`` for zeros). Calling ``step`` T times equals
        ``forward`` on the sequence. In training mode dropout, recurrent dropout and weight drop (a
        fresh mask per call) and zoneout apply; in evaluation mode only zoneout's expectation does (as
        in ``forward``).
        """
        if self._forward_pre_hooks:  # weights a pre-hook sets (prune, hook-based weight norms): as forward
            self._refresh_hooked_weights(x_t)
        fast = try_step(self, x_t, hx)  # plain layers without autograd: cached weights, few ops
        if fast is not None:
            return fast
        name = type(self).__name__
        if self.bidirectional:
            raise ValueError(f"{name}.step: a bidirectional layer needs the whole sequence (its reverse "
                             "direction starts at the end); use forward, or bidirectional=False")
        if not isinstance(x_t, Tensor) or x_t.dim() not in (1, 2) or x_t.shape[-1] != self.input_size:
            got = tuple(x_t.shape) if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(f"{name}.step: expected x_t of shape (batch, {self.input_size}) or "
                             f"({self.input_size},), got {got}")
        ref = self._reference()
        if autocast_for(x_t):
            return self._outside_autocast(x_t, hx, step=True)
        if x_t.dtype != ref.dtype:
            raise ValueError(f"{name}.step: x_t dtype must be {ref.dtype} like the weights, got {x_t.dtype}")
        batched = x_t.dim() == 2
        x = x_t if batched else x_t.unsqueeze(0)
        state = self._check_state(hx, x.shape[0], batched, x)
        weights = self._weights()
        try:
            x, parts = self._step_layers(x, state, weights)
        finally:
            self._release(weights)
        if not batched:
            x, parts = x.squeeze(0), [p.squeeze(1) for p in parts]
        return x, self._pack_state(parts)

    def _step_layers(self, x: Tensor, state: list[Tensor], weights):
        """One step of every layer of :meth:`step` on batched ``x``; returns ``(y, state parts)``."""
        new_parts: list[list[Tensor]] = [[] for _ in state]
        for layer, cell in enumerate(self.cells(weights)):
            s = LSTMState(*(p[layer] for p in state)) if len(state) == 2 else state[0][layer]
            mask = None
            if self.training and self.recurrent_dropout > 0:
                mask = variational_mask(x.shape[0], cell.output_size, self.recurrent_dropout, x)
            x, s_new = cell.step(x, s, mask)
            if self.zoneout:
                s_new = zoneout_state(s_new, s, self.zoneout, not self.training)
                x = s_new if isinstance(s_new, Tensor) else s_new[0]
            for i, p in enumerate([s_new] if isinstance(s_new, Tensor) else s_new):
                new_parts[i].append(p)
            if self.dropout > 0 and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, self.training)
        return x, [torch.stack(p) for p in new_parts]
