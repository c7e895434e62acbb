r"""Gradient flow through time: how much of a late loss reaches the early states of a recurrence.

Back-propagation through time multiplies the recurrent Jacobians: for a loss :math:`L` on the last
step :math:`T`,

.. math::

    \frac{\partial L}{\partial s_t} = \frac{\partial L}{\partial s_T}
        \prod_{k=t+1}^{T} \frac{\partial s_k}{\partial s_{k-1}},
    \qquad
    \Big\lVert \frac{\partial L}{\partial s_t} \Big\rVert \le \Big\lVert \frac{\partial L}{\partial s_T} \Big\rVert
        \prod_{k=t+1}^{T} \Big\lVert \frac{\partial s_k}{\partial s_{k-1}} \Big\rVert_2 ,

so spectral norms below 1 make the gradient vanish geometrically and norms above 1 can make it
explode (Bengio et al. 1994; Pascanu et al. 2013). :func:`gradient_flow` measures both factors on a
real trajectory of the network.

Conventions. ``s_t`` is the recurrent state after step ``t`` (``t = 1..T``): ``h_t`` for RNN, GRU,
IndRNN, MinGRU and MinLSTM, and the full state ``(h_t, c_t)`` for (layer-norm, projected, peephole)
LSTMs, whose memory flows through ``c``. ``grad_norms[l, t-1]`` is the Frobenius norm of
:math:`\partial L / \partial s_t` over the whole batch and all units of layer ``l``; it is the adjoint of
the state (the gradient the future sends back), so for an LSTM it excludes the path from ``c_t`` into
``h_t`` of the same step. ``jacobian_norms[l, t-2]`` is the spectral norm of the one-step Jacobian
:math:`\partial s_t / \partial s_{t-1}` (inputs held fixed) of each sequence, averaged over the batch,
for ``t = 2..T``. Layers are counted over the whole module: a two-layer ``rnnkit.LSTM`` gives two rows,
as does a model holding two one-layer layers.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

from rnnkit.analysis._trace import LayerTrace, bound, flatten_state, trace
from rnnkit.cells.base import LSTMState, output_of

__all__ = ["GradientFlow", "gradient_flow", "jacobian_norms"]


class GradientFlow(NamedTuple):
    """Result of :func:`gradient_flow`; rows are layers, columns time steps.

    ``grad_norms`` (L, T): :math:`\\lVert \\partial L / \\partial s_t \\rVert`; ``jacobian_norms`` (L, T-1):
    the batch mean of :math:`\\lVert \\partial s_t / \\partial s_{t-1} \\rVert_2` for ``t = 2..T``;
    ``state_norms`` (L, T): the batch mean of :math:`\\lVert s_t \\rVert`; ``loss`` the loss value;
    ``layer_names`` one name per row (the submodule's name and, in a stack, its index);
    ``custom_loss``: whether a ``loss_fn`` gave the loss (else the default, at the last step).
    """

    grad_norms: Tensor
    jacobian_norms: Tensor
    state_norms: Tensor
    loss: float
    layer_names: tuple
    custom_loss: bool = False

    def ratio(self, layer: int = -1) -> float:
        """``grad_norms[layer, 0] / grad_norms[layer, -1]``: the share of the last step's gradient left
        at the first step (``0.0`` where it underflowed, ``inf`` where the last is zero, ``nan`` where
        either is NaN: a diverged network)."""
        first, last = float(self.grad_norms[layer, 0]), float(self.grad_norms[layer, -1])
        if math.isnan(first) or math.isnan(last):
            return math.nan
        return first / last if last > 0 else math.inf


def _default_loss(layers: list) -> Tensor:
    """Mean of the top traced layer's output at the last time step."""
    return output_of(layers[-1].states[-1]).mean()


def _loss(output: Any, layers: list, loss_fn: Callable[[Any], Tensor] | None) -> Tensor:
    loss = _default_loss(layers) if loss_fn is None else loss_fn(output)
    if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"gradient_flow: loss_fn must return a scalar float tensor, got {got}")
    if not loss.requires_grad:
        raise ValueError("gradient_flow: the loss does not depend on the recurrent states (is the graph "
                         "detached, or does loss_fn ignore the model's output?)")
    return loss.reshape(())


def gradient_flow(module: nn.Module, inputs: Any, loss_fn: Callable[[Any], Tensor] | None = None, *,
                  dtype: torch.dtype | None = torch.float64, jacobians: bool = True) -> GradientFlow:
    """Measure gradient norms through time and recurrent Jacobian norms of ``module`` on ``inputs``.

    Args:
        module: an rnnkit layer (``rnnkit.RNN``, ``LSTM``, ``GRU``, ``IndRNN``, ``MinGRU``, ``MinLSTM``),
            or a model holding such layers (found by ``module.recurrent_layers()`` if defined, else every
            ``rnnkit.layers.Recurrent`` submodule). Bidirectional layers raise ``ValueError``.
        inputs: what ``module`` is called with: a tensor, a tuple of positional arguments or a dict of
            keyword arguments. All traced layers must see sequences of one length.
        loss_fn: ``loss_fn(module_output) -> scalar``. The default is the mean of the top recurrent
            layer's output at the last time step, whatever the module returns.
        dtype: the precision of the analysis (default float64, on cast copies of the parameters and
            inputs; the module is not modified). In float32 a gradient that vanishes like
            ``0.3 ** 100`` underflows to exactly zero; float64 shows its size down to 1e-308.
            ``None`` runs the module as it is.
        jacobians: compute ``jacobian_norms`` (one batched Jacobian per step; set False to skip).

    The module's parameters' ``.grad`` are left untouched (``torch.autograd.grad`` is used), and the
    recurrent layers run without their own dropout or recurrent dropout and with zoneout's expectation (as
    they compute in evaluation mode). Other parts of a model are run as they are: a ``LanguageModel`` in
    training mode applies its embedding, input and hidden dropout (a new mask on every call), so call
    ``module.eval()`` first for deterministic numbers.
    """
    if dtype is not None and dtype not in (torch.float64, torch.float32):
        raise ValueError(f"gradient_flow: dtype must be torch.float64 (the default), torch.float32 or None "
                         f"(the module's own), got {dtype}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("gradient_flow needs autograd, which torch.inference_mode() turns off: call it "
                           "outside the inference_mode block")
    with torch.enable_grad():
        tr = trace(module, inputs, dtype)
        lengths = {len(lt.states) for lt in tr.layers}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"gradient_flow: the traced layers must see one non-empty sequence length, got "
                             f"{sorted(lengths)}; define module.recurrent_layers() to choose the layers")
        loss = _loss(tr.output, tr.layers, loss_fn)
        parts = [p for lt in tr.layers for s in lt.states for p in parts_of(s)]
        grads = torch.autograd.grad(loss, parts, allow_unused=True, materialize_grads=True)
    jac = torch.stack([jacobian_norms(lt) for lt in tr.layers]) if jacobians else \
        torch.full((len(tr.layers), lengths.pop() - 1), float("nan"))
    state_norms = torch.stack([torch.stack([scaled_norm(flatten_state(s).detach(), -1).mean() for s in lt.states])
                               for lt in tr.layers])
    flow = GradientFlow(_grad_norms(tr.layers, grads), jac, state_norms, float(loss.detach()),
                        tuple(lt.name for lt in tr.layers), loss_fn is not None)
    bad = [name for name, t in (("loss", torch.tensor(flow.loss)), ("state norms", state_norms),
                                ("gradient norms", flow.grad_norms)) if not bool(torch.isfinite(t).all())]
    if bad:
        warnings.warn(f"gradient_flow: non-finite {', '.join(bad)} (loss {flow.loss:.4g}): the network "
                      "diverges on these inputs (or its weights hold NaN/inf); those entries read inf or nan",
                      RuntimeWarning, stacklevel=2)
    return flow


def _grad_norms(layers: list, grads: tuple) -> Tensor:
    """(L, T) norms of the state gradients; ``grads`` is flat in (layer, step, state part) order."""
    rows, k = [], 0
    for lt in layers:
        n = len(parts_of(lt.states[0]))
        per_step = [grads[k + i * n:k + (i + 1) * n] for i in range(len(lt.states))]
        rows.append(torch.stack([scaled_norm(torch.cat([g.detach().reshape(-1) for g in gs])) for gs in per_step]))
        k += n * len(lt.states)
    return torch.stack(rows)


def scaled_norm(x: Tensor, dim: int | None = None) -> Tensor:
    """The Euclidean norm of ``x`` (over ``dim``, else all of it) computed as ``m * ||x / m||`` with
    ``m = max |x|``: summing squares directly underflows to 0 below ~1e-154 and overflows to inf above
    ~1e154 in float64 (torch's ``vector_norm`` too), which hid the very vanishing this module measures.
    Non-finite entries give ``inf`` or ``nan``; an all-zero ``x`` gives 0."""
    m = x.abs().amax() if dim is None else x.abs().amax(dim, keepdim=True)
    ok = (m > 0) & torch.isfinite(m)
    unit = torch.where(ok, x / torch.where(ok, m, torch.ones_like(m)), torch.zeros_like(x))
    inner = unit.square().sum() if dim is None else unit.square().sum(dim, keepdim=True)
    out = torch.where(ok, m * inner.sqrt(), m)  # m: 0, inf or nan where it is not a scale
    return out if dim is None else out.squeeze(dim)


def parts_of(state) -> list[Tensor]:
    """The tensors of a state: ``[h]`` or ``[h, c]``."""
    return [state] if isinstance(state, Tensor) else list(state)


def _spectral_norm(J: Tensor) -> Tensor:
    """Largest singular value of each ``(S, S)`` matrix: ``m * sqrt(max eig(K^T K))`` with ``K = J / m``,
    ``m = max |J|`` (so that ``J^T J`` neither under- nor overflows), ~5x faster on CPU than
    ``matrix_norm(ord=2)``'s SVD, and accurate for the largest value (relative error ~ machine epsilon).
    A matrix with a NaN gives NaN, one with an inf gives inf (a diverged network: ``eigh`` would fail)."""
    m = J.abs().amax((-2, -1))
    ok = (m > 0) & torch.isfinite(m)
    out = m.clone()  # 0, inf or nan where the matrix has no finite scale
    if bool(ok.any()):
        K = J[ok] / m[ok][:, None, None]
        out[ok] = torch.linalg.eigvalsh(K.mT @ K)[..., -1].clamp(min=0).sqrt() * m[ok]
    return out


def jacobian_norms(lt: LayerTrace, max_elements: int = 1 << 23) -> Tensor:
    """Batch-mean spectral norm of :math:`\\partial s_t / \\partial s_{t-1}` along a traced layer, (T-1,).

    All ``(T-1) * B`` Jacobians are formed with ``torch.func.vmap(jacrev(...))`` of the cell's
    ``recurrence`` at the traced states, in chunks of at most ``max_elements`` entries.
    """
    T = len(lt.states)
    if T < 2:
        return torch.zeros(0)
    sizes = [p.shape[-1] for p in parts_of(lt.states[0])]
    prev = torch.stack([flatten_state(s).detach() for s in lt.states[:-1]])  # (T-1, B, S)
    xp = lt.projected[:, 1:].detach().transpose(0, 1)  # (T-1, B, G)
    B, S = prev.shape[1], prev.shape[2]
    prev, xp = prev.reshape(-1, S), xp.reshape(-1, xp.shape[-1])

    def step(xp_i: Tensor, s_i: Tensor) -> Tensor:
        pieces = [p.unsqueeze(0) for p in s_i.split(sizes)]
        state = LSTMState(*pieces) if len(pieces) == 2 else pieces[0]
        return flatten_state(lt.step(xp_i.unsqueeze(0), state)).squeeze(0)

    jac = torch.func.vmap(torch.func.jacrev(step, argnums=1))
    chunk = max(1, max_elements // (S * S))
    with torch.no_grad(), bound(lt.cell, lt.params):
        norms = [_spectral_norm(jac(xp[i:i + chunk], prev[i:i + chunk])) for i in range(0, prev.shape[0], chunk)]
    return torch.cat(norms).view(T - 1, B).mean(1)
