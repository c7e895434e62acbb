r"""Fast one-step inference (streaming) for plain LSTM, GRU and RNN layers without autograd.

``Recurrent.step`` validates its input, loops over its cells and stacks the new state: ~100 small ops
for a 1-layer LSTM. When nothing needs a gradient (``torch.no_grad()``, or no parameter requires one)
and no regulariser acts (evaluation mode, or none configured), :func:`try_step` does one layer in as
few ops as possible:

* LSTM: ``[x, h] @ [W_ih | W_hh]^T + (b_ih + b_hh)`` as one ``addmm`` with the concatenated,
  transposed weight cached on the layer, then the gates in 6 pointwise ops;
* GRU and RNN: ``torch._VF.gru_cell`` / ``rnn_*_cell`` (what ``torch.nn.GRUCell`` calls), without the
  module overhead.

The cache is rebuilt when any parameter changes: its key is every parameter's ``(data_ptr, _version)``
(an optimizer step or ``load_state_dict`` bumps the version; ``.to()`` moves the storage). Exactness:
the concatenated GEMM sums the same products as two GEMMs in another order (float rounding only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells.base import LSTMState

__all__ = ["try_step"]

_CELLS = {"gru": torch._VF.gru_cell, "rnn_tanh": torch._VF.rnn_tanh_cell, "rnn_relu": torch._VF.rnn_relu_cell}


class _Cache:
    """Per-layer weights for :func:`try_step`, keyed by the parameters' storage and version."""

    __slots__ = ("key", "layers")

    def __init__(self) -> None:
        self.key, self.layers = None, []


def _weights(layer) -> list:
    params = layer._flat_weights()
    key = tuple((p.data_ptr(), p._version) for p in params)
    cache = layer.__dict__.get("_step_cache")
    if cache is None:
        cache = layer.__dict__["_step_cache"] = _Cache()
    if cache.key != key:
        with torch.no_grad():
            cache.layers = [_layer_weights(layer, layer._flat_weights(k)) for k in range(layer.num_layers)]
        cache.key = key
    return cache.layers


def _layer_weights(layer, w: list[Tensor]):
    w = [p.detach() for p in w]
    if layer.native_mode != "lstm":
        return tuple(w) if layer.bias else (w[0], w[1], None, None)
    wt = torch.cat([w[0], w[1]], 1).t().contiguous()  # (I + H, 4H)
    return wt, (w[2] + w[3]) if layer.bias else None


def _applies(layer, x_t, hx) -> bool:
    """Cheap checks; anything unusual goes to the full ``step`` (and its clear errors)."""
    mode = layer.native_mode
    if mode is None or layer.bidirectional or (mode == "lstm" and layer.proj_size):
        return False
    if layer.zoneout or (layer.training and (layer.dropout or layer.recurrent_dropout)):
        return False  # zoneout mixes states in evaluation mode too
    if torch.is_grad_enabled() and any(p.requires_grad for p in layer._flat_weights()):
        return False
    if not isinstance(x_t, Tensor) or x_t.dim() != 2 or x_t.shape[1] != layer.input_size or x_t.requires_grad:
        return False
    parts = (hx,) if isinstance(hx, Tensor) else tuple(hx) if isinstance(hx, tuple) else None
    if parts is None or len(parts) != (2 if mode == "lstm" else 1):
        return False
    want = (layer.num_layers, x_t.shape[0], layer.hidden_size)
    return all(isinstance(p, Tensor) and tuple(p.shape) == want and not p.requires_grad for p in parts)


def try_step(layer, x_t: Tensor, hx):
    """``layer.step(x_t, hx)`` on the fast path, or None when it does not apply (see module doc)."""
    if hx is None or not _applies(layer, x_t, hx):
        return None
    weights = _weights(layer)
    if layer.native_mode == "lstm":
        return _lstm(x_t, hx, weights)
    cell, hs = _CELLS[layer.native_mode], []
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
        x_t = cell(x_t, hx[k], w_ih, w_hh, b_ih, b_hh)
        hs.append(x_t)
    return x_t, hs[0].unsqueeze(0) if len(hs) == 1 else torch.stack(hs)


def _lstm(x_t: Tensor, hx, weights):
    h_all, c_all = hx
    hs, cs = [], []
    for k, (wt, b) in enumerate(weights):
        xh = torch.cat([x_t, h_all[k]], 1)
        gates = torch.mm(xh, wt) if b is None else torch.addmm(b, xh, wt)  # (B, 4H): i, f, g, o
        H = gates.shape[1] // 4
        sig = torch.sigmoid(gates)
        c = torch.addcmul(sig[:, H:2 * H] * c_all[k], sig[:, :H], torch.tanh(gates[:, 2 * H:3 * H]))
        x_t = sig[:, 3 * H:] * torch.tanh(c)
        hs.append(x_t)
        cs.append(c)
    if len(hs) == 1:
        return x_t, LSTMState(hs[0].unsqueeze(0), cs[0].unsqueeze(0))
    return x_t, LSTMState(torch.stack(hs), torch.stack(cs))
