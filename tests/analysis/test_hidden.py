"""Hidden-state views: states of any layer, PCA, features of text, units that track them, and plots."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.analysis import (feature_depth, feature_inside, find_units, hidden_states, pca, plot_pca_trajectory,
                             plot_unit_activations)


def test_hidden_states_match_forward_for_every_layer():
    layer = rnnkit.LSTM(3, 5, num_layers=2)  # time-major
    x = torch.randn(7, 2, 3)
    y, _ = layer(x)
    top = hidden_states(layer, x, index=1)
    assert tuple(top.shape) == (7, 5) and torch.allclose(top, y[:, 1], atol=1e-6)
    assert tuple(hidden_states(layer, x, layer=0, part="c").shape) == (7, 5)
    unbatched = hidden_states(rnnkit.GRU(3, 4), torch.randn(6, 3))
    assert tuple(unbatched.shape) == (6, 4)
    with pytest.raises(ValueError, match="part='c' needs an LSTM"):
        hidden_states(rnnkit.GRU(3, 4), torch.randn(6, 3), part="c")
    with pytest.raises(ValueError, match="layer must be"):
        hidden_states(layer, x, layer=2)


def test_pca_recovers_a_planar_trajectory():
    t = torch.linspace(0, 6.28, 100)
    plane = torch.stack([torch.cos(t), 0.5 * torch.sin(t)], 1)  # (T, 2)
    states = plane @ torch.randn(2, 16) + 3.0
    result = pca(states, k=2)
    assert result.explained_variance_ratio.sum() > 0.999
    assert result.explained_variance_ratio[0] > result.explained_variance_ratio[1]
    assert tuple(result.projected.shape) == (100, 2) and tuple(result.components.shape) == (2, 16)
    with pytest.raises(ValueError, match="k must be"):
        pca(states, k=17)


def test_features_of_text():
    assert feature_inside("a(b)c", "(", ")").tolist() == [False, True, True, False, False]
    assert feature_depth("((x))", "(", ")").tolist() == [1, 2, 2, 1, 0]
    assert feature_inside('say "hi" ok', '"', '"').tolist() == [False] * 4 + [True] * 3 + [False] * 4
    assert feature_depth("))(", "(", ")").tolist() == [0, 0, 1]


def test_find_units_on_constructed_activations():
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(500, generator=gen) > 0.5
    acts = torch.randn(500, 10, generator=gen) * 0.5
    acts[:, 7] = -mask.float() + 0.2 * torch.randn(500, generator=gen)  # anti-correlated
    acts[:, 2] = 0.0  # constant: correlation 0, no NaN
    ranking = find_units(acts, mask, top_k=3)
    assert ranking.units[0] == 7 and ranking.correlations[0] < -0.9
    assert abs(ranking.correlations[1]) < 0.2
    assert find_units(acts, mask).correlations[-1] == 0.0
    with pytest.raises(ValueError, match="feature of shape"):
        find_units(acts, mask[:10])


def _brackets(n: int, rng: random.Random) -> str:
    """Random text over 'ab()' with balanced-so-far brackets nested at most 3 deep."""
    out, depth = [], 0
    for _ in range(n):
        r = rng.random()
        ch = "(" if r < 0.25 and depth < 3 else ")" if r < 0.5 and depth > 0 else rng.choice("ab")
        depth += {"(": 1, ")": -1}.get(ch, 0)
        out.append(ch)
    return "".join(out)


def test_a_character_model_learns_a_bracket_unit():
    """Trained only to predict the next character, a tiny GRU grows a unit that tracks 'inside brackets'
    (|r| 0.84-0.95 over seeds 0-3; about 2 s)."""
    rng, vocab = random.Random(0), {c: i for i, c in enumerate("ab()")}
    ids = torch.tensor([[vocab[c] for c in _brackets(41, rng)] for _ in range(64)])
    model = nn.Sequential(nn.Embedding(4, 8), rnnkit.GRU(8, 16, batch_first=True))
    head = nn.Linear(16, 4)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=2e-2)
    for _ in range(150):
        logits = head(model(ids[:, :-1])[0])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    text = _brackets(300, random.Random(1))
    acts = hidden_states(model, torch.tensor([[vocab[c] for c in text]]))  # (T, 16)
    ranking = find_units(acts, feature_inside(text, "(", ")"))
    assert abs(ranking.correlations[0]) > 0.7, ranking.correlations[:3]


def test_plots_write_pngs(tmp_path):
    text = "f(x) = (a + b)\nreturn x"
    acts = torch.randn(len(text), 4)
    fig = plot_unit_activations(text, acts, 2, tmp_path / "unit.png", columns=12)
    assert (tmp_path / "unit.png").stat().st_size > 1000 and fig.axes
    plot_pca_trajectory(acts, tmp_path / "pca.png", labels=list(text))
    assert (tmp_path / "pca.png").exists()
    with pytest.raises(ValueError, match="one activation per character"):
        plot_unit_activations(text[:-1], acts, 0)


def test_find_units_marks_non_finite_units_and_checks_top_k():
    acts = torch.randn(6, 3)
    acts[:, 1] = float("nan")
    ranking = find_units(acts, torch.arange(6.0))
    assert ranking.units.tolist()[-1] == 1 and math.isnan(float(ranking.correlations[-1]))
    with pytest.raises(ValueError, match="top_k"):
        find_units(acts, torch.arange(6.0), top_k=-1)
