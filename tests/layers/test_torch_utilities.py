"""rnnkit's layers under torch's own tools that act on a module from outside: pruning and the hook-based
weight norms, nn.DataParallel's replicas, deep copies in the middle of training, torch.func transforms,
and in-place changes of a step's output. Each works on torch.nn's layers and must on the drop-ins."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.utils.prune as prune
from torch.func import functional_call, grad, vmap

import rnnkit


def _pair(kind="LSTM", **kw):
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(3, 5, num_layers=2, **kw)
    return ref, rnnkit.from_torch(ref)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("name", ["weight_hh_l0", "weight_ih_l1"])
def test_pruning_acts_as_on_torch(kind, name):
    ref, layer = _pair(kind)
    for m in (ref, layer):
        prune.l1_unstructured(m, name, amount=0.5)
    x = torch.randn(6, 2, 3)
    assert torch.equal(getattr(layer, name) == 0, getattr(ref, name) == 0)
    torch.testing.assert_close(layer(x)[0], ref(x)[0])
    layer(x)[0].sum().backward()  # the gradient reaches the weight behind the mask
    assert getattr(layer, name + "_orig").grad is not None


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("norm", ["weight_norm", "spectral_norm"])
def test_hook_based_weight_norms_act_as_on_torch(norm):
    ref, layer = _pair("LSTM")
    for m in (ref, layer):
        torch.manual_seed(1)  # spectral_norm draws its power-iteration vector
        getattr(torch.nn.utils, norm)(m, "weight_hh_l0")
    x = torch.randn(6, 2, 3)
    torch.testing.assert_close(layer(x)[0], ref(x)[0])


def test_a_layer_norm_lstm_runs_pruned():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(3, 5, layer_norm=True).eval()
    expect = copy.deepcopy(layer)
    prune.l1_unstructured(layer, "weight_hh_l0", amount=0.5)
    with torch.no_grad():
        expect.weight_hh_l0.mul_(layer.weight_hh_l0_mask)
    x = torch.randn(6, 2, 3)
    torch.testing.assert_close(layer(x)[0], expect(x)[0])


def _replica(module):
    """What ``torch.nn.parallel.replicate`` makes of a module for one device (it needs CUDA devices):
    no parameters of its own, the broadcast weights as plain (non-leaf) attributes."""
    rep = module._replicate_for_data_parallel()
    rep._former_parameters = OrderedDict()
    for key, p in module._parameters.items():
        setattr(rep, key, p * 1.0)
        rep._former_parameters[key] = getattr(rep, key)
    return rep


@pytest.mark.parametrize("make", [lambda: rnnkit.LSTM(3, 4), lambda: rnnkit.GRU(3, 4, layer_norm=True),
                                  lambda: rnnkit.LSTM(3, 4, zoneout=0.1)])
def test_a_data_parallel_replica_runs_with_cells_of_its_own(make):
    torch.manual_seed(0)
    layer = make().eval()  # zoneout's masks are random in training
    rep = _replica(layer)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(rep(x)[0], layer(x)[0], rtol=0, atol=0)
    assert rep.step(x[0], rep.init_state(2))[0].shape == (2, 4)
    assert all(a is not b for a, b in zip(rep._cells, layer._cells))
    rep.train()(x)[0].sum().backward()  # gradients flow to the original parameters, as a replica's should
    assert layer.weight_hh_l0.grad is not None


@pytest.mark.parametrize("make", [lambda: rnnkit.LSTM(3, 4, layer_norm=True, weight_drop=0.3),
                                  lambda: rnnkit.GRU(3, 4, zoneout=0.2, weight_drop=0.3),
                                  lambda: rnnkit.RNN(3, 4, recurrent_dropout=0.2, weight_drop=0.3)])
@pytest.mark.parametrize("call", ["forward", "step"])
def test_a_layer_copies_in_the_middle_of_training(make, call):
    """EMA or best-model snapshots deep-copy the model between training steps."""
    torch.manual_seed(0)
    layer, x = make().train(), torch.randn(5, 2, 3)
    out = layer(x)[0] if call == "forward" else layer.step(x[0])[0]
    out.sum().backward()
    twin = copy.deepcopy(layer).eval()
    torch.testing.assert_close(twin(x)[0], layer.eval()(x)[0], rtol=0, atol=0)
    for cell in layer._cells:  # the cells hold the parameters again, not the call's masked copies
        assert all(p is None or p.is_leaf for p in cell._parameters.values())


@pytest.mark.parametrize("make", [lambda: rnnkit.RNN(3, 4), lambda: rnnkit.GRU(3, 4), lambda: rnnkit.LSTM(3, 4)])
def test_a_step_output_is_not_a_view_of_the_state(make):
    """With nothing to differentiate a one-layer step runs ATen's cells (batch > 4 here); a residual's
    in-place add on y_t must not change the state carried to the next step."""
    torch.manual_seed(0)
    layer, x = make().eval(), torch.randn(2, 8, 3)
    with torch.no_grad():
        expect = layer(x)[1]
        state = layer.init_state(8)
        for t in range(2):
            y, state = layer.step(x[t], state)
            y.add_(100.0)
    torch.testing.assert_close(state, expect)


@pytest.mark.parametrize("make", [lambda **k: rnnkit.LSTM(3, 4, batch_first=True, layer_norm=True, **k),
                                  lambda **k: rnnkit.GRU(3, 4, batch_first=True, zoneout=0.1, **k),
                                  lambda **k: rnnkit.MinGRU(3, 4, batch_first=True, **k),
                                  lambda **k: rnnkit.IndRNN(3, 4, batch_first=True, **k)])
def test_torch_func_per_sample_gradients_equal_the_cells(make):
    """grad and vmap(grad): ``auto`` takes the cells' loop under a transform (the fused kernels' and the
    scan's autograd Functions have no functorch rule), as under torch.jit.trace."""
    torch.manual_seed(0)
    auto = make().eval()  # zoneout's masks: random in training, which vmap refuses by default
    cell = make(backend="cell").eval()
    cell.load_state_dict(auto.state_dict())
    assert auto.select_backend() in ("fused", "scan")
    x = torch.randn(3, 5, 3)

    def per_sample(m):
        params = {k: v.detach() for k, v in m.named_parameters()}
        loss = lambda p, xi: functional_call(m, p, (xi.unsqueeze(0),))[0].pow(2).sum()
        return vmap(grad(loss), in_dims=(None, 0))(params, x)

    got, want = per_sample(auto), per_sample(cell)
    for k in want:
        torch.testing.assert_close(got[k], want[k])


def test_an_explicit_fused_backend_under_torch_func_names_the_way_out():
    layer = rnnkit.LSTM(3, 4, layer_norm=True, backend="fused")
    params = {k: v.detach() for k, v in layer.named_parameters()}
    with pytest.raises(ValueError, match="torch.func transforms.*backend='auto' or 'cell'"):
        grad(lambda p: functional_call(layer, p, (torch.randn(5, 1, 3),))[0].sum())(params)


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("utility", ["prune", "weight_norm"])
def test_step_reads_the_weights_a_pre_hook_computes(utility):
    """step is no forward: it used the masked or normalised weight the last forward had left."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(3, 5)
    if utility == "prune":
        prune.l1_unstructured(layer, "weight_hh_l0", amount=0.5)
    else:
        torch.nn.utils.weight_norm(layer, "weight_hh_l0")
    x = torch.randn(4, 2, 3)
    layer(x)[0].sum().backward()
    torch.optim.SGD(layer.parameters(), lr=0.5).step()
    h0 = rnnkit.LSTMState(torch.randn(1, 2, 5), torch.randn(1, 2, 5))  # a zero h would hide W_hh
    y_step, _ = layer.step(x[0], h0)  # before any forward with the new weights
    y_fwd, _ = layer(x[:1], h0)
    torch.testing.assert_close(y_step, y_fwd[0])
