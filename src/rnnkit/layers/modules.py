"""The sequence layers users import: drop-in ``torch.nn.RNN/LSTM/GRU`` plus IndRNN, MinGRU, MinLSTM.

Each is :class:`~rnnkit.layers.recurrent.Recurrent` over one cell kind. Constructor arguments, their
order and defaults, parameter names, and output and state shapes are torch's; rnnkit's own options are
keyword-only after them.
"""

from __future__ import annotations

from torch import nn

from rnnkit.cells import (ElmanRNNCell, GRUCell, IndRNNCell, LayerNormGRUCell, LayerNormLSTMCell, LSTMCell,
                          MinGRUCell, MinLSTMCell)
from rnnkit.layers.recurrent import Recurrent

__all__ = ["RNN", "LSTM", "GRU", "IndRNN", "MinGRU", "MinLSTM", "from_torch"]


class RNN(Recurrent):
    """Elman RNN layer, a drop-in ``torch.nn.RNN`` (``nonlinearity`` ``"tanh"`` or ``"relu"``)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None, *, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0, weight_drop: float = 0.0, backend: str = "auto") -> None:
        self.nonlinearity = nonlinearity
        self.native_mode = f"rnn_{nonlinearity}"
        super().__init__(lambda i: ElmanRNNCell(i, hidden_size, bias, nonlinearity, device=device, dtype=dtype),
                         input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout, weight_drop=weight_drop,
                         backend=backend)

    def _extra_options(self) -> str:
        return "" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}"

    def to_torch(self) -> nn.RNN:
        """This layer as a ``torch.nn.RNN`` with the same weights (not under zoneout; recurrent dropout
        and weight drop, which act in training only, are not carried)."""
        return _to_torch(self, nn.RNN, nonlinearity=self.nonlinearity)


class LSTM(Recurrent):
    """LSTM layer, a drop-in ``torch.nn.LSTM``; optionally layer-normalised or with peepholes.

    ``zoneout`` is one rate for ``h`` and ``c``, or ``(p_h, p_c)`` (Krueger et al. 2017 found
    ``(0.05, 0.5)`` best for character-level LSTMs)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, layer_norm: bool = False,
                 peephole: bool = False, forget_bias: float = 0.0, recurrent_dropout: float = 0.0,
                 zoneout: float | tuple[float, float] = 0.0, weight_drop: float = 0.0,
                 backend: str = "auto") -> None:
        if layer_norm and (proj_size or peephole):
            raise ValueError("LSTM: layer_norm=True supports neither proj_size nor peephole; "
                             f"got proj_size={proj_size}, peephole={peephole}")
        self.proj_size, self.layer_norm, self.peephole = proj_size, layer_norm, peephole
        self.forget_bias = forget_bias
        self.native_mode = None if (layer_norm or peephole) else "lstm"
        kw = dict(device=device, dtype=dtype, forget_bias=forget_bias)

        def make(i: int):
            if layer_norm:
                return LayerNormLSTMCell(i, hidden_size, bias, **kw)
            return LSTMCell(i, hidden_size, bias, proj_size=proj_size, peephole=peephole, **kw)
        super().__init__(make, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout, weight_drop=weight_drop,
                         backend=backend)

    def _extra_options(self) -> str:
        return "".join(f", {k}={getattr(self, k)!r}" for k in ("proj_size", "layer_norm", "peephole",
                                                               "forget_bias") if getattr(self, k))

    def to_torch(self) -> nn.LSTM:
        """This layer as a ``torch.nn.LSTM`` with the same weights (plain configurations without zoneout
        only; recurrent dropout and weight drop, which act in training only, are not carried)."""
        return _to_torch(self, nn.LSTM, proj_size=self.proj_size)


class GRU(Recurrent):
    """GRU layer, a drop-in ``torch.nn.GRU``; optionally layer-normalised."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, layer_norm: bool = False, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0, weight_drop: float = 0.0, backend: str = "auto") -> None:
        self.layer_norm = layer_norm
        self.native_mode = None if layer_norm else "gru"
        cell = LayerNormGRUCell if layer_norm else GRUCell
        super().__init__(lambda i: cell(i, hidden_size, bias, device=device, dtype=dtype), input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout, weight_drop=weight_drop,
                         backend=backend)

    def _extra_options(self) -> str:
        return ", layer_norm=True" if self.layer_norm else ""

    def to_torch(self) -> nn.GRU:
        """This layer as a ``torch.nn.GRU`` with the same weights (plain configurations without zoneout
        only; recurrent dropout and weight drop, which act in training only, are not carried)."""
        return _to_torch(self, nn.GRU)


class IndRNN(Recurrent):
    """IndRNN layer (Li et al. 2018): per-unit recurrent weights clipped to ``[-recurrent_max, recurrent_max]``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "relu",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None, *, recurrent_max: float = 1.0,
                 recurrent_dropout: float = 0.0, zoneout: float = 0.0, weight_drop: float = 0.0,
                 backend: str = "auto") -> None:
        self.nonlinearity, self.recurrent_max = nonlinearity, recurrent_max
        super().__init__(lambda i: IndRNNCell(i, hidden_size, bias, nonlinearity, recurrent_max=recurrent_max,
                                              device=device, dtype=dtype),
                         input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         recurrent_dropout=recurrent_dropout, zoneout=zoneout, weight_drop=weight_drop,
                         backend=backend)

    def _extra_options(self) -> str:
        return (("" if self.nonlinearity == "relu" else f", nonlinearity={self.nonlinearity!r}") +
                ("" if self.recurrent_max == 1.0 else f", recurrent_max={self.recurrent_max!r}"))


class _MinLayer(Recurrent):
    cell_class: type

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, zoneout: float = 0.0, backend: str = "auto", **unsupported) -> None:
        if unsupported:
            raise TypeError(f"{type(self).__name__}: no option {', '.join(sorted(unsupported))} (its gates read "
                            "the input only: there are no recurrent weights for recurrent dropout or weight drop)")
        cls = self.cell_class
        super().__init__(lambda i: cls(i, hidden_size, bias, device=device, dtype=dtype), input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         zoneout=zoneout, backend=backend)


class MinGRU(_MinLayer):
    """MinGRU layer (Feng et al. 2024): gates from the input only, trained as one parallel scan."""

    cell_class = MinGRUCell


class MinLSTM(_MinLayer):
    """MinLSTM layer (Feng et al. 2024): gates from the input only, trained as one parallel scan."""

    cell_class = MinLSTMCell


_TORCH_KINDS = {nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN}


def _to_torch(layer: Recurrent, torch_cls, **extra) -> nn.Module:
    if layer.native_mode is None:
        raise ValueError(f"{type(layer).__name__}.to_torch: torch.nn has no layer-norm or peephole "
                         f"variant; only plain configurations convert (this one: {layer.extra_repr()})")
    if layer.zoneout:  # unlike the training-only regularisers, zoneout changes evaluation too
        raise ValueError(f"{type(layer).__name__}.to_torch: torch.nn has no zoneout, which acts in evaluation "
                         f"as well (its expectation); a converted layer would compute something else "
                         f"(zoneout={layer.zoneout})")
    ref = layer._reference()
    module = torch_cls(layer.input_size, layer.hidden_size, num_layers=layer.num_layers, bias=layer.bias,
                       batch_first=layer.batch_first, dropout=layer.dropout,
                       bidirectional=layer.bidirectional, device=ref.device, dtype=ref.dtype, **extra)
    module.load_state_dict(layer.state_dict())
    module.train(layer.training)
    return module


def from_torch(module: nn.Module) -> Recurrent:
    """The rnnkit layer equal to a ``torch.nn.RNN``, ``LSTM`` or ``GRU`` (same configuration and weights)."""
    base = next((c for c in type(module).__mro__ if c in _TORCH_KINDS), None)
    if base is None:
        raise TypeError(f"from_torch expects a torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
    if type(module).forward is not base.forward:  # a subclass that computes something else is not converted
        raise TypeError(f"from_torch: {type(module).__name__} overrides torch.nn.{base.__name__}.forward; the "
                        f"rnnkit layer would compute torch.nn.{base.__name__}'s recurrence, not its own")
    kind = _TORCH_KINDS[base]
    ref = next(module.parameters())
    kw = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
              dropout=module.dropout, bidirectional=module.bidirectional, device=ref.device, dtype=ref.dtype)
    if kind is LSTM:
        kw["proj_size"] = module.proj_size
    if kind is RNN:
        kw["nonlinearity"] = module.nonlinearity
    layer = kind(module.input_size, module.hidden_size, **kw)
    layer.load_state_dict(module.state_dict())
    for name, p in module.named_parameters():  # frozen weights stay frozen
        getattr(layer, name).requires_grad_(p.requires_grad)
    layer.train(module.training)
    return layer
