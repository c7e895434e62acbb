"""LanguageModelEnsemble: the mean of the members' next-token distributions as one model that
carries each member's state, saves as one bundle, generates, completes and adapts (dynamic
evaluation)."""

from __future__ import annotations

import json

import pytest
import torch

import rnnkit
from rnnkit.data.tokenizers import CharTokenizer, WordTokenizer
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.models import LanguageModel, LanguageModelConfig, LanguageModelEnsemble, LanguageModelEnsembleConfig
from rnnkit.recipes.lm import dynamic_loss, stateful_loss

TEXT = "to be or not to be, that is the question. " * 30


def _trained(cfg: dict, tok, seed: int, steps: int = 60) -> LanguageModel:
    torch.manual_seed(seed)
    model = LanguageModel(LanguageModelConfig(vocab_size=tok.vocab_size, **cfg), tokenizer=tok)
    ids = torch.tensor(tok.encode(TEXT))
    n = (ids.numel() - 1) // 4 * 4
    x, y = ids[:n].view(4, -1), ids[1:n + 1].view(4, -1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(x, y).loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def chars():
    tok = CharTokenizer().fit(TEXT)
    a = _trained(dict(embedding_size=8, hidden_size=24), tok, 0)
    b = _trained(dict(cell="gru", embedding_size=8, hidden_size=16, num_layers=2), tok, 1)
    c = _trained(dict(embedding_size=12, hidden_size=24, tie_weights=True, layer_norm=True), tok, 2, steps=30)
    return tok, a, b, c


def test_forward_is_the_mean_of_the_members_probabilities(chars):
    tok, a, b, c = chars
    ens = LanguageModelEnsemble([a, b, c])
    x = torch.tensor([tok.encode(TEXT[:40]), tok.encode(TEXT[40:80])])
    with torch.no_grad():
        out = ens(x, x)
        p = sum(torch.softmax(m(x).logits, -1) for m in (a, b, c)) / 3
    torch.testing.assert_close(out.logits.exp(), p, rtol=1e-5, atol=1e-7)
    assert float(out.loss) == pytest.approx(float(-p.gather(2, x.unsqueeze(2)).log().mean()), rel=1e-5)
    assert torch.allclose(out.logits.exp().sum(-1), torch.ones(2, 40))  # a distribution at every step


def test_the_state_carries_each_members_state(chars):
    tok, a, b, _ = chars
    ens = LanguageModelEnsemble([a, b])
    x = torch.tensor([tok.encode(TEXT[:60])])
    with torch.no_grad():
        whole = ens(x).logits
        first = ens(x[:, :25])
        second = ens(x[:, 25:], state=first.state)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), whole, rtol=1e-5, atol=1e-6)
    assert len(first.state.members) == 2
    assert ens.init_state(3).members[0].layers[0].h.shape == (1, 3, 24)  # (layers, batch, hidden)
    with pytest.raises(ValueError, match="a state for each of its 2 members, got 1"):
        ens(x, state=type(first.state)((None,)))
    graphed = ens(x[:, :25]).state  # outside no_grad: the members' states carry a graph
    cut = graphed.detach()
    assert type(cut) is type(graphed) and len(cut.members) == 2
    for kept, new in zip(torch.utils._pytree.tree_leaves(graphed), torch.utils._pytree.tree_leaves(cut)):
        assert kept.requires_grad and not new.requires_grad and torch.equal(kept, new)


def test_an_ensemble_of_copies_is_the_model(chars):
    tok, a, _, _ = chars
    ens = LanguageModelEnsemble([a, a])
    x = torch.tensor([tok.encode(TEXT[:50])])
    with torch.no_grad():
        torch.testing.assert_close(ens(x).logits, torch.log_softmax(a(x).logits, -1), rtol=1e-5, atol=1e-5)
    assert ens.generate("to be", 40, greedy=True) == a.generate("to be", 40, greedy=True)
    assert [w for w, _ in ens.complete("that is the q", k=2)] == [w for w, _ in a.complete("that is the q", k=2)]


def test_generation_is_reproducible_and_complete_ranks_distinct_words(chars):
    _, a, b, _ = chars
    ens = LanguageModelEnsemble([a, b])
    first = ens.generate("to be ", 60, seed=3, temperature=1.0)
    assert first == ens.generate("to be ", 60, seed=3, temperature=1.0) and len(first) == 60
    suggestions = ens.complete("that is the ", k=3)
    probs = [p for _, p in suggestions]
    assert len({w for w, _ in suggestions}) == len(suggestions) == 3 and probs == sorted(probs, reverse=True)
    assert suggestions[0].word == "question"


def test_stateful_loss_of_the_ensemble_is_that_of_the_list(chars):
    tok, a, b, _ = chars
    ids = torch.tensor(tok.encode(TEXT[::-1]))  # other text: the members disagree on it
    ens = LanguageModelEnsemble([a, b])
    got = stateful_loss(ens, ids, seq_len=32, batch_size=2)
    assert got == stateful_loss([a, b], ids, seq_len=32, batch_size=2)
    assert got < (stateful_loss(a, ids, seq_len=32, batch_size=2) + stateful_loss(b, ids, seq_len=32, batch_size=2)) / 2


def test_save_and_load_give_the_same_ensemble(chars, tmp_path):
    tok, a, b, c = chars
    ens = LanguageModelEnsemble([a, b, c])  # an LSTM, a two-layer GRU, a tied layer-norm LSTM
    ens.save(tmp_path / "ens")
    meta = json.loads((tmp_path / "ens" / "config.json").read_text())
    assert meta["model_class"] == "LanguageModelEnsemble" and len(meta["config"]["members"]) == 3
    back = rnnkit.load(tmp_path / "ens")
    assert isinstance(back, LanguageModelEnsemble) and back.config == ens.config
    assert back.tokenizer.vocab == tok.vocab and all(m.tokenizer is back.tokenizer for m in back.members)
    tied = back.members[2]
    assert tied.decoder.weight.data_ptr() == tied.embedding.weight.data_ptr()  # still tied after loading
    x = torch.tensor([tok.encode(TEXT[:30])])
    with torch.no_grad():
        assert torch.equal(back(x).logits, ens(x).logits)
    assert LanguageModelEnsemble.load(tmp_path / "ens").config == ens.config
    with pytest.raises(CheckpointError, match="holds a LanguageModelEnsemble, expected a LanguageModel"):
        LanguageModel.load(tmp_path / "ens")


def test_from_bundles_joins_bundles_and_flattens_ensembles(chars, tmp_path):
    _, a, b, c = chars
    a.save(tmp_path / "a")
    LanguageModelEnsemble([b, c]).save(tmp_path / "bc")
    ens = LanguageModelEnsemble.from_bundles([tmp_path / "a", tmp_path / "bc"])
    assert len(ens.members) == 3  # the mean is over all three models, not (a + mean(b, c)) / 2
    assert [m.config for m in ens.members] == [a.config, b.config, c.config]
    with pytest.raises(CheckpointError, match="no such bundle folder"):
        LanguageModelEnsemble.from_bundles([tmp_path / "a", tmp_path / "missing"])


def test_a_word_model_with_an_adaptive_softmax_joins_an_ensemble(tmp_path):
    tok = WordTokenizer(max_vocab=20, eos_token="<eos>").fit(TEXT)
    cfg = dict(embedding_size=8, hidden_size=16)
    a = _trained({**cfg, "softmax_cutoffs": (4,)}, tok, 0, steps=40)
    b = _trained(cfg, tok, 1, steps=40)
    ens = LanguageModelEnsemble([a, b])
    words = ens.complete("to be or not to ", k=2)
    assert words[0].word in ("be", "be,") and len(words) == 2  # the tokenizer keeps punctuation on words
    ens.save(tmp_path / "w")
    back = rnnkit.load(tmp_path / "w")
    assert back.members[0].config.softmax_cutoffs == (4,)
    ids = torch.tensor(tok.encode(TEXT))
    assert stateful_loss(back, ids, seq_len=16) == pytest.approx(stateful_loss(ens, ids, seq_len=16), rel=1e-6)


def test_dynamic_evaluation_adapts_the_members_to_the_mixture(chars):
    tok, a, b, _ = chars
    ens = LanguageModelEnsemble([a, b])
    ids = torch.tensor(tok.encode(TEXT[::-1]))
    static = stateful_loss(ens, ids, seq_len=64)
    assert dynamic_loss(ens, ids, seq_len=64, lr=0.0) == pytest.approx(static, rel=1e-6)
    before = [p.detach().clone() for p in ens.parameters()]
    adapted = dynamic_loss(ens, ids, seq_len=64, lr=0.05)
    assert adapted < static - 0.05  # it learns the reversed text as it reads it
    assert all(torch.equal(p, q) for p, q in zip(ens.parameters(), before))  # on a copy


@pytest.mark.parametrize("members, match", [
    ([], "at least one language model"),
    ([torch.nn.Linear(2, 2)], "expected LanguageModel instances, got Linear"),
    ("ab", "takes a list of language models, got str"),
])
def test_bad_members_are_refused_in_one_line(members, match):
    with pytest.raises(ConfigError, match=match):
        LanguageModelEnsemble(members)


def test_members_over_other_vocabularies_are_refused(chars):
    tok, a, _, _ = chars
    other_tok = CharTokenizer().fit(TEXT + "XYZ")
    other = LanguageModel(LanguageModelConfig(vocab_size=other_tok.vocab_size, embedding_size=8, hidden_size=8),
                          tokenizer=other_tok)
    with pytest.raises(ConfigError, match="member 1 has a different vocabulary"):
        LanguageModelEnsemble([a, other])
    letters = "".join(chr(ord("A") + i) for i in range(26))
    relabelled = next(t for t in (CharTokenizer().fit(letters[:n]) for n in range(1, 27))
                      if t.vocab_size == tok.vocab_size)  # as many tokens, other characters
    same_size = LanguageModel(LanguageModelConfig(vocab_size=tok.vocab_size, embedding_size=8, hidden_size=8),
                              tokenizer=relabelled)
    with pytest.raises(ConfigError, match="different vocabulary"):
        LanguageModelEnsemble([a, same_size])
    with pytest.raises(ConfigError, match=r"different vocabulary sizes \[6, 7\]"):
        LanguageModelEnsembleConfig((LanguageModelConfig(vocab_size=6), LanguageModelConfig(vocab_size=7)))


def test_a_bundle_whose_config_does_not_fit_is_refused(chars, tmp_path):
    _, a, b, _ = chars
    LanguageModelEnsemble([a, b]).save(tmp_path / "e")
    file = tmp_path / "e" / "config.json"
    meta = json.loads(file.read_text())
    meta["config"] = {"members": "lstm"}
    file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="config does not fit LanguageModelEnsemble"):
        rnnkit.load(tmp_path / "e")


def test_parameters_are_the_members(chars):
    _, a, b, _ = chars
    ens = LanguageModelEnsemble([a, b])
    assert ens.num_parameters() == a.num_parameters() + b.num_parameters()
    assert "members=2" in repr(ens)
