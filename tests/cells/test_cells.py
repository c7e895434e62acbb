"""Every cell: forward over a sequence equals looping step, with and without lengths and masks."""

from __future__ import annotations

import pytest
import torch

from rnnkit import cells as C

ALL = [C.ElmanRNNCell, C.LSTMCell, C.GRUCell, C.LayerNormLSTMCell, C.LayerNormGRUCell, C.IndRNNCell,
       C.MinGRUCell, C.MinLSTMCell]
RECURRENT_WEIGHTS = [c for c in ALL if c not in (C.MinGRUCell, C.MinLSTMCell)]


def _close(a, b, tol=1e-12):
    if isinstance(a, torch.Tensor):
        return torch.allclose(a, b, atol=tol, rtol=0)
    return all(_close(x, y, tol) for x, y in zip(a, b))


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_forward_equals_step_loop(cls):
    cell = cls(5, 7).double()
    x = torch.randn(3, 11, 5, dtype=torch.float64)
    s0 = cell.init_state(3)
    s0 = torch.randn_like(s0) if isinstance(s0, torch.Tensor) else type(s0)(*(torch.randn_like(p) for p in s0))
    y, s = cell(x, s0)
    state, ys = s0, []
    for t in range(11):
        yt, state = cell.step(x[:, t], state)
        ys.append(yt)
    assert _close(y, torch.stack(ys, 1))
    assert _close(s, state)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_forward_with_lengths_freezes_state_and_zeroes_outputs(cls):
    cell = cls(4, 6).double()
    x = torch.randn(3, 9, 4, dtype=torch.float64)
    lengths = torch.tensor([9, 4, 1])
    y, s = cell(x, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        yb, sb = cell.reference_forward(x[b:b + 1, :n])
        assert _close(y[b:b + 1, :n], yb)
        assert torch.count_nonzero(y[b, n:]) == 0
        last = s[b:b + 1] if isinstance(s, torch.Tensor) else type(s)(*(p[b:b + 1] for p in s))
        assert _close(last, sb)


@pytest.mark.parametrize("cls", RECURRENT_WEIGHTS, ids=lambda c: c.__name__)
def test_recurrent_mask_reaches_the_recurrent_weights_only(cls):
    cell = cls(4, 6).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    zero_mask = torch.zeros(2, cell.output_size, dtype=torch.float64)
    y_masked, _ = cell(x, recurrent_mask=zero_mask)
    y_ref, _ = cell.reference_forward(x, recurrent_mask=zero_mask)
    assert _close(y_masked, y_ref)
    # with the state hidden from the recurrent weights, step 1 sees the same pre-activation as step 0
    # for the Elman/IndRNN cells, whose only path from h_{t-1} is through those weights
    if cls in (C.ElmanRNNCell, C.IndRNNCell):
        x_const = x[:, :1].expand(-1, 5, -1)
        y_c, _ = cell(x_const, recurrent_mask=zero_mask)
        assert _close(y_c[:, 0], y_c[:, 4])


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_bad_step_input_is_a_clear_error(cls):
    cell = cls(4, 6)
    with pytest.raises(ValueError, match=r"\(batch, 4\).*\(2, 5\)"):
        cell.step(torch.randn(2, 5), cell.init_state(2))
    with pytest.raises(ValueError, match=r"\(batch, seq, 4\).*\(2, 3, 5\)"):
        cell(torch.randn(2, 3, 5))


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_sizes_must_be_positive(cls):
    with pytest.raises(ValueError, match="hidden_size"):
        cls(4, 0)
