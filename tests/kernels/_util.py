"""Helpers shared by the kernel tests: run a layer or cell two ways and compare values and gradients."""

from __future__ import annotations

import torch


def parts(state):
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def loss(y, state):
    """A loss that weights every output and state entry differently (so no gradient is trivial)."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(y.shape, generator=g).to(y.dtype)
    return (y * w).sum() + sum((s.sin() * (k + 1)).sum() for k, s in enumerate(parts(state)))


def values_and_grads(run, inputs: list, params: list):
    """``run()`` -> (y, state); returns the outputs and the gradients of ``inputs + params``."""
    y, state = run()
    grads = torch.autograd.grad(loss(y, state), inputs + params, allow_unused=True)
    return [y, *parts(state)], list(grads)


def assert_close(a: list, b: list, tol: float) -> None:
    for k, (u, v) in enumerate(zip(a, b)):
        if u is None or v is None:
            assert u is None and v is None or (u if v is None else v).abs().max() == 0, k
            continue
        assert u.shape == v.shape, (k, u.shape, v.shape)
        err = (u - v).abs().max().item() if u.numel() else 0.0
        assert err <= tol * max(1.0, v.abs().max().item() if v.numel() else 0.0), (k, err)


def random_gains(module) -> None:
    """Layer-norm gains and biases and peepholes away from their 1/0 initialisation."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "ln_" in name or "weight_c" in name:
                p.uniform_(0.5, 1.5) if "weight" in name and "ln_c_bias" not in name else p.uniform_(-0.5, 0.5)


def lstm_gradcheck_inputs(ln: bool, peep: bool, masked: bool, zoned: bool, lengths):
    """Float64 arguments of ``fused_lstm._LSTMFn`` at B=3, T=5, I=2, H=3 for ``gradcheck``."""
    from rnnkit.kernels import _fused_common as fc

    B, T, I, H = 3, 5, 2, 3
    d = dict(dtype=torch.float64)
    req = lambda *s, scale=1.0: (torch.randn(*s, **d) * scale).requires_grad_()  # noqa: E731
    b = fc.batching(lengths, B, T)
    keep = (torch.rand(T, 2, B, H, **d) < 0.3).to(torch.float64) if zoned else None
    return (req(T, B, I), req(4 * H, I, scale=0.5), req(4 * H), req(4 * H) if ln else None, req(B, H), req(B, H),
            req(4 * H, H, scale=0.5), req(4 * H) if ln else None, req(H) if ln else None, req(H) if ln else None,
            req(3, H) if peep else None, torch.rand(B, H, **d) * 2 if masked else None, keep, b)


class Recorder:
    """Stands in for a namespace of kernel ops (``torch.ops.rnnkit_cpp``, the Triton row passes), counting
    the calls it forwards by name."""

    def __init__(self, real) -> None:
        self.real, self.calls = real, []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append(name)
            return getattr(self.real, name)(*args)
        return call
