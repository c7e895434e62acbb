"""Layer-norm cells: the normalisation is real (scale invariance, explicit formula)."""

from __future__ import annotations

import torch

from rnnkit import cells as C


def test_layernorm_lstm_matches_explicit_formula():
    cell = C.LayerNormLSTMCell(3, 4).double()
    with torch.no_grad():
        for p in (cell.ln_ih_weight, cell.ln_hh_weight, cell.ln_c_weight, cell.ln_c_bias):
            p.uniform_(0.5, 1.5)
    x, h, c = (torch.randn(2, n, dtype=torch.float64) for n in (3, 4, 4))

    def ln(a, w, b=None):
        mu, var = a.mean(-1, keepdim=True), a.var(-1, unbiased=False, keepdim=True)
        out = (a - mu) / torch.sqrt(var + 1e-5) * w
        return out if b is None else out + b
    gates = ln(x @ cell.weight_ih.T, cell.ln_ih_weight) + ln(h @ cell.weight_hh.T, cell.ln_hh_weight) \
        + cell.bias_ih + cell.bias_hh
    i, f, g, o = gates.chunk(4, -1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(ln(c_new, cell.ln_c_weight, cell.ln_c_bias))
    _, (hr, cr) = cell.step(x, C.LSTMState(h, c))
    assert torch.allclose(hr, h_new, atol=1e-12) and torch.allclose(cr, c_new, atol=1e-12)


def test_layernorm_gru_is_invariant_to_the_scale_of_its_weights():
    cell = C.LayerNormGRUCell(3, 5).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    y1, _ = cell(x)
    with torch.no_grad():
        cell.weight_ih.mul_(7.0)
        cell.weight_hh.mul_(3.0)
    y2, _ = cell(x)
    assert torch.allclose(y1, y2, atol=1e-3)  # equal up to the epsilon inside the norm
    plain = C.GRUCell(3, 5).double()
    plain.load_state_dict(cell.state_dict(), strict=False)
    y3, _ = plain(x)
    with torch.no_grad():
        plain.weight_ih.mul_(7.0)
    assert not torch.allclose(y3, plain(x)[0], atol=1e-2)
