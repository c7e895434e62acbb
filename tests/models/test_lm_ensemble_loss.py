"""stateful_loss with a list of models: the ensemble's loss is the mean of the members'
probabilities, token by token, each member with its own carried state."""

from __future__ import annotations

import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.recipes.lm import stateful_loss
from tests.models.test_dynamic_eval import _model, _train

IDS = torch.arange(6).repeat(8 * 10 + 1)[: 8 * 60 + 1]


def _two_members():
    return _train(_model(0), IDS, steps=40), _train(_model(1), IDS.flip(0), steps=40)


def test_an_ensemble_of_one_model_or_of_copies_is_that_model():
    a, _ = _two_members()
    ids = torch.randint(0, 6, (300,), generator=torch.Generator().manual_seed(0))
    one = stateful_loss(a, ids, seq_len=64)
    assert stateful_loss([a], ids, seq_len=64) == one
    assert stateful_loss([a, a, a], ids, seq_len=64) == pytest.approx(one, rel=1e-6)


def test_the_ensemble_scores_the_mean_probability_with_each_state_carried():
    a, b = _two_members()
    ids = torch.randint(0, 6, (301,), generator=torch.Generator().manual_seed(1))
    x, y = ids[:-1].unsqueeze(0), ids[1:]
    with torch.no_grad():  # one forward over the whole text = the state carried across segments
        p = (torch.softmax(a(x).logits[0], -1) + torch.softmax(b(x).logits[0], -1)) / 2
    expected = float(-p.gather(1, y.unsqueeze(1)).log().mean())
    got = stateful_loss([a, b], ids, seq_len=64)
    assert got == pytest.approx(expected, rel=1e-5)
    # the mixture is never worse than the members' mean loss (Jensen) and differs from both members
    members = [stateful_loss(m, ids, seq_len=64) for m in (a, b)]
    assert got <= sum(members) / 2 + 1e-6 and all(abs(got - m) > 1e-3 for m in members)


def test_batched_reading_matches_the_manual_mixture():
    a, b = _two_members()
    ids = torch.randint(0, 6, (401,), generator=torch.Generator().manual_seed(2))
    n = 400 // 4
    x, y = ids[: 4 * n].view(4, n), ids[1: 4 * n + 1].view(4, n)
    with torch.no_grad():
        p = (torch.softmax(a(x).logits, -1) + torch.softmax(b(x).logits, -1)) / 2
    expected = float(-p.gather(2, y.unsqueeze(2)).log().mean())
    assert stateful_loss([a, b], ids, seq_len=32, batch_size=4) == pytest.approx(expected, rel=1e-5)


def test_members_keep_their_training_mode():
    a, b = _two_members()
    a.train()
    stateful_loss([a, b], IDS[:100], seq_len=32)
    assert a.training and not b.training
    cells = [[c.training for layer in m.layers for c in layer._cells] for m in (a, b)]
    assert all(cells[0]) and not any(cells[1])  # the layers' cells follow (they keep weights only in eval)


@pytest.mark.parametrize("members, match", [
    ([], "at least one language model"),
    ([torch.nn.Linear(2, 2)], "expected LanguageModel instances, got Linear"),
])
def test_bad_members_are_refused_in_one_line(members, match):
    with pytest.raises(ConfigError, match=match):
        stateful_loss(members, IDS[:50])


def test_members_over_different_vocabularies_are_refused():
    other = LanguageModel(LanguageModelConfig(vocab_size=7, embedding_size=8, hidden_size=16))
    with pytest.raises(ConfigError, match="different vocabulary from member 0"):
        stateful_loss([_model(0), other], IDS[:50])
