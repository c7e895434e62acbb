"""The fused kernels keep their prepared weights between inference calls (rnnkit.kernels._gemm.prepared):
the kept copy is used only in evaluation mode with nothing to differentiate, and never outlives a
change of the weights it was made from."""

from __future__ import annotations

import copy

import pytest
import torch

from rnnkit.layers import GRU, LSTM

LAYERS = {
    "lstm": lambda: LSTM(6, 12, batch_first=True, num_layers=2),
    "ln_lstm": lambda: LSTM(6, 12, batch_first=True, layer_norm=True),
    "gru": lambda: GRU(6, 12, batch_first=True),
    "ln_gru": lambda: GRU(6, 12, batch_first=True, layer_norm=True),
    "peephole": lambda: LSTM(6, 12, batch_first=True, peephole=True),
}


def _layer(kind):
    torch.manual_seed(0)
    layer = LAYERS[kind]()
    layer.backend = "fused"
    return layer.eval()


def _kept(layer):
    return [cell.__dict__.get("_rnnkit_prepared") for cell in layer._cells]


def _fresh(layer, x):
    """The same layer's output with every weight prepared anew (a deep copy keeps nothing)."""
    with torch.no_grad():
        return copy.deepcopy(layer)(x)[0]


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_inference_reuses_the_prepared_weights_and_computes_the_same(kind):
    layer, x = _layer(kind), torch.randn(3, 5, 6)
    with torch.enable_grad():  # parameters require grad: prepared on every call, nothing kept
        expected, expected_one = layer(x)[0].detach(), layer(x[:1])[0].detach()
    assert _kept(layer) == [None] * len(layer._cells)
    with torch.no_grad():
        first = layer(x)[0]
        kept = _kept(layer)
        second = layer(x[:1])[0]  # another batch size: the same prepared weights, another GEMM operand
    assert all(k is not None for k in kept) and [id(k) for k in _kept(layer)] == [id(k) for k in kept]
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected_one, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["ln_lstm", "gru"])
def test_a_change_of_the_weights_is_seen_at_once(kind):
    layer, x = _layer(kind), torch.randn(2, 4, 6)
    with torch.no_grad():
        before = layer(x)[0]
        for p in layer.parameters():
            p.mul_(0.5)  # in place under no_grad: the version counter moves
        after = layer(x)[0]
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, _fresh(layer, x), rtol=0, atol=0)
    state = {k: v * 2 for k, v in layer.state_dict().items()}
    layer.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], _fresh(layer, x), rtol=0, atol=0)


def test_an_optimizer_step_between_evaluations_is_seen():
    layer, x = _layer("ln_lstm"), torch.randn(2, 4, 6)
    with torch.no_grad():
        layer(x)
    layer.train()
    assert _kept(layer) == [None]  # a change of mode drops the kept weights
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x)[0].pow(2).sum().backward()
    opt.step()
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], _fresh(layer, x), rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", ["Adam", "AdamW", "SGD"])
def test_a_fused_optimizer_step_in_evaluation_mode_is_seen(optimizer):
    """torch's fused optimizers update the parameters without bumping their versions; the layer stays
    in evaluation mode throughout (fine-tuning or RL loops that never call train())."""
    layer, x = _layer("ln_lstm"), torch.randn(2, 4, 6)
    with torch.no_grad():
        before = layer(x)[0]
    assert _kept(layer) != [None]
    for p in layer.parameters():  # gradients from elsewhere: no forward of this layer in grad mode
        p.grad = torch.ones_like(p)
    versions = [p._version for p in layer.parameters()]
    getattr(torch.optim, optimizer)(layer.parameters(), lr=0.1, fused=True).step()
    assert [p._version for p in layer.parameters()] == versions  # what made the key miss the update
    with torch.no_grad():
        after = layer(x)[0]
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, _fresh(layer, x), rtol=0, atol=0)


def test_a_call_that_may_be_differentiated_drops_the_kept_weights():
    """An update usually follows such a call, perhaps through ``p.data`` (which no version sees)."""
    layer, x = _layer("gru"), torch.randn(2, 4, 6)
    with torch.no_grad():
        layer(x)
    layer(x)[0].sum().backward()  # evaluation mode, gradients on
    assert _kept(layer) == [None]
    for p in layer.parameters():
        p.data.sub_(0.1 * p.grad)
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], _fresh(layer, x), rtol=0, atol=0)


def test_a_change_through_data_is_seen_after_a_change_of_mode():
    """``p.data`` has its own version counter, so such a change is invisible to the key; calling
    ``eval()`` again (documented) drops the kept weights."""
    layer, x = _layer("lstm"), torch.randn(2, 4, 6)
    with torch.no_grad():
        layer(x)
    for p in layer.parameters():
        p.data.mul_(0.5)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], _fresh(layer, x), rtol=0, atol=0)


def test_training_mode_and_gradients_never_keep_weights():
    layer, x = _layer("ln_gru"), torch.randn(2, 4, 6)
    layer.train()
    with torch.no_grad():
        layer(x)
    assert _kept(layer) == [None]
    layer.eval()
    out = layer(x)[0]  # evaluation mode, but a gradient is wanted (e.g. dynamic evaluation)
    assert out.requires_grad and _kept(layer) == [None]
    out.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_copies_and_pickles_carry_no_kept_weights(tmp_path):
    layer, x = _layer("ln_lstm"), torch.randn(2, 4, 6)
    with torch.no_grad():
        layer(x)
    assert _kept(copy.deepcopy(layer)) == [None]
    torch.save(layer, tmp_path / "layer.pt")
    assert _kept(torch.load(tmp_path / "layer.pt", weights_only=False)) == [None]


def test_the_cells_follow_the_layers_mode():
    layer = _layer("gru")
    assert not any(cell.training for cell in layer._cells)
    layer.train()
    assert all(cell.training for cell in layer._cells)


def test_a_parameter_replaced_by_another_tensor_is_seen():
    layer, x = _layer("ln_lstm"), torch.randn(2, 4, 6)
    with torch.no_grad():
        before = layer(x)[0]
        for name, p in list(layer.named_parameters()):
            setattr(layer, name, torch.nn.Parameter(p.detach() * 0.5))  # new tensors, version 0
        after = layer(x)[0]
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, _fresh(layer, x), rtol=0, atol=0)


def test_parametrized_weights_are_prepared_on_every_call():
    layer, x = _layer("gru"), torch.randn(2, 4, 6)
    torch.nn.utils.parametrizations.weight_norm(layer, "weight_hh_l0")
    layer.eval()
    with torch.no_grad():
        first = layer(x)[0]
        layer.parametrizations.weight_hh_l0.original0.mul_(2.0)  # the norm g: the computed weight changes
        second = layer(x)[0]
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, _fresh(layer, x), rtol=0, atol=0)


def test_inference_mode_works_for_layers_made_inside_and_outside_it():
    x = torch.randn(2, 4, 6)
    with torch.inference_mode():
        inside = _layer("ln_lstm")  # inference tensors: no version counter, so nothing is kept
        assert inside(x)[0].shape == (2, 4, 12) and _kept(inside) == [None]
    outside = _layer("ln_lstm")
    with torch.inference_mode():
        first, second = outside(x)[0], outside(x)[0]
    assert _kept(outside) != [None] and torch.equal(first, second)
    torch.testing.assert_close(first, _fresh(outside, x), rtol=0, atol=0)


def test_a_change_of_dtype_or_of_storage_is_seen():
    layer, x = _layer("ln_lstm"), torch.randn(2, 4, 6)
    with torch.no_grad():
        layer(x)
        layer.double()  # the same Parameter objects, new storage and dtype, the same version
        torch.testing.assert_close(layer(x.double())[0], _fresh(layer, x.double()), rtol=0, atol=0)
        for p in layer.parameters():
            p.data = p.data * 0.5  # new storage again
        torch.testing.assert_close(layer(x.double())[0], _fresh(layer, x.double()), rtol=0, atol=0)


def test_a_plain_optimizer_step_elsewhere_keeps_a_frozen_models_weights():
    """Counting every optimizer's step re-prepared a frozen teacher at each step of the student."""
    teacher, x = _layer("ln_lstm"), torch.randn(2, 4, 6)
    student = torch.nn.Linear(3, 3)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    with torch.no_grad():
        teacher(x)
    kept = _kept(teacher)
    for _ in range(3):
        student(torch.randn(2, 3)).sum().backward()
        opt.step()
        with torch.no_grad():
            teacher(x)
    assert [id(k) for k in _kept(teacher)] == [id(k) for k in kept]
