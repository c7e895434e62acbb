"""LanguageModel: weight tying, shapes, state carry, bundles, and learning a tiny grammar."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.data.tokenizers import CharTokenizer
from rnnkit.errors import ConfigError
from rnnkit.models import LanguageModel, LanguageModelConfig


def test_weight_tying_shares_storage():
    m = LanguageModel(vocab_size=30, embedding_size=16, hidden_size=16, tie_weights=True)
    assert m.decoder.weight is m.embedding.weight
    assert m.decoder.weight.data_ptr() == m.embedding.weight.data_ptr()
    # a tied LSTM wider than the embedding projects its last layer to the embedding size
    wide = LanguageModel(vocab_size=30, embedding_size=16, hidden_size=48, num_layers=2, tie_weights=True)
    assert wide.layers[-1].proj_size == 16 and wide.decoder.weight is wide.embedding.weight
    gru = LanguageModel(vocab_size=30, cell="gru", embedding_size=16, hidden_size=48, tie_weights=True)
    assert gru.proj is not None and gru.decoder.weight is gru.embedding.weight


def test_tied_model_starts_near_uniform():
    """The shared matrix is also the output layer: an untrained tied model must predict nearly the
    uniform distribution (loss ~ log V). torch's N(0, 1) embedding rows (norm sqrt(E)) gave logits of
    scale ~|h| sqrt(E) and a first loss far above log V at PTB's sizes."""
    torch.manual_seed(0)
    V = 2000
    m = LanguageModel(vocab_size=V, embedding_size=256, hidden_size=256, num_layers=2, tie_weights=True).eval()
    ids = torch.randint(0, V, (4, 50))
    with torch.no_grad():
        loss = float(m(ids, ids.roll(-1, 1)).loss)
    assert abs(loss - torch.log(torch.tensor(float(V)))) < 0.1, loss


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "indrnn", "mingru", "minlstm"])
def test_forward_shapes_and_state_carry(cell):
    m = LanguageModel(vocab_size=11, cell=cell, embedding_size=8, hidden_size=12, num_layers=2).double().eval()
    ids = torch.randint(0, 11, (3, 10))
    full = m(ids, ids)
    assert full.logits.shape == (3, 10, 11) and full.loss.ndim == 0
    a = m(ids[:, :4])
    b = m(ids[:, 4:], state=a.state)
    assert torch.allclose(torch.cat([a.logits, b.logits], 1), full.logits, atol=1e-10)


def test_regularisers_only_in_training():
    m = LanguageModel(vocab_size=11, embedding_size=8, hidden_size=12, num_layers=2, embedding_dropout=0.3,
                      input_dropout=0.3, hidden_dropout=0.3, output_dropout=0.3, recurrent_dropout=0.3,
                      weight_drop=0.3)
    assert [layer.weight_drop for layer in m.layers] == [0.3, 0.3]
    ids = torch.randint(0, 11, (3, 10))
    m.eval()
    assert torch.equal(m(ids).logits, m(ids).logits)
    m.train()
    assert not torch.equal(m(ids).logits, m(ids).logits)


@pytest.mark.parametrize("kw,match", [({"cell": "transformer"}, "cell"), ({"layer_norm": True, "cell": "rnn"},
                                      "layer_norm"), ({"input_dropout": 1.0}, "input_dropout"),
                                      ({"proj_size": 4, "cell": "gru"}, "proj_size"),
                                      ({"proj_size": 4, "layer_norm": True}, "layer-norm LSTM has no projection"),
                                      ({"weight_drop": 1.0}, "weight_drop"),
                                      ({"weight_drop": 0.2, "cell": "mingru"}, "weight_drop"),
                                      ({"zoneout_cell": 0.5, "cell": "gru"}, "zoneout_cell is the zoneout of an LSTM"),
                                      ({"zoneout_cell": 1.0}, r"zoneout_cell must be in \[0, 1\)"),
                                      ({"forget_bias": 1.0, "cell": "gru"}, "forget_bias is the LSTM's"),
                                      ({"recurrent_dropout": 0.1, "cell": "minlstm"}, "recurrent_dropout"),
                                      ({"hidden_size": 0}, "^LanguageModelConfig.hidden_size must be a positive int")])
def test_bad_config(kw, match):
    with pytest.raises(ConfigError, match=match):
        LanguageModelConfig(vocab_size=10, **kw)


def test_bad_input_ids():
    m = LanguageModel(vocab_size=11, embedding_size=8, hidden_size=12)
    with pytest.raises(ValueError, match="integer tensor"):
        m(torch.randn(2, 5))
    for ids in (torch.tensor([[3, 11]]), torch.tensor([[-1, 2]])):  # torch said "index out of range in self"
        with pytest.raises(ValueError, match=r"expected token ids in \[0, 11\)"):
            m(ids)


def _grammar():
    """Words "abc" or "xyz" chosen by a fair coin, space-separated: only the first letter of each
    4-character word is uncertain, so the best possible loss is ln(2)/4 = 0.173 nats per character."""
    gen = torch.Generator().manual_seed(0)
    text = " ".join("abc" if c else "xyz" for c in torch.randint(0, 2, (800,), generator=gen).tolist())
    tok = CharTokenizer().fit(text)
    ids = torch.tensor(tok.encode(text))
    return tok, ids[:3000].view(10, 300), ids[1:3001].view(10, 300)


def _fit(m, x, y, steps=120):
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = m(x, y).loss
        opt.zero_grad(); loss.backward(); opt.step()


def test_learns_a_tiny_grammar_to_its_entropy():
    tok, x, y = _grammar()
    m = LanguageModel(vocab_size=tok.vocab_size, embedding_size=16, hidden_size=32)
    _fit(m, x, y)
    assert m(x, y).loss.item() < 0.173 + 0.03


def test_bundle_round_trip_with_tokenizer(tmp_path):
    tok = CharTokenizer().fit("hello world")
    m = LanguageModel(vocab_size=tok.vocab_size, embedding_size=8, hidden_size=12, tie_weights=True,
                      tokenizer=tok).eval()
    m.save(tmp_path / "b")
    assert (tmp_path / "b" / "tokenizer.json").is_file()
    back = rnnkit.load(tmp_path / "b")
    assert isinstance(back, LanguageModel) and back.config == m.config
    assert back.decoder.weight is back.embedding.weight
    ids = torch.tensor([tok.encode("hello")])
    assert torch.equal(back(ids).logits, m(ids).logits)
    assert back.tokenizer.encode("hello") == tok.encode("hello")


# -- adaptive softmax ------------------------------------------------------------------------------
def _adaptive(cutoffs=(5, 12), tie=True, **kw):
    torch.manual_seed(0)
    return LanguageModel(vocab_size=20, embedding_size=8, hidden_size=8, tie_weights=tie,
                         softmax_cutoffs=cutoffs, **kw).double()


@pytest.mark.parametrize("cutoffs,tie", [((5,), True), ((5, 12), True), ((3, 9, 15), False)])
def test_adaptive_softmax_is_a_normalised_distribution_and_its_loss_is_exact(cutoffs, tie):
    m = _adaptive(cutoffs, tie).eval()
    x = torch.randint(0, 20, (3, 7))
    y = torch.randint(0, 20, (3, 7))
    y[0, :3] = torch.tensor([0, 19, cutoffs[-1]])  # the edges of the clusters
    logp = m(x).logits  # (B, T, V) log-probabilities
    assert logp.shape == (3, 7, 20)
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(3, 7, dtype=torch.float64))
    out = m(x, y)
    assert out.logits is None
    want = -logp.gather(-1, y.unsqueeze(-1)).mean()
    torch.testing.assert_close(out.loss, want)


def test_adaptive_softmax_keeps_tying_and_its_gradient_matches_the_full_distribution():
    m = _adaptive()
    assert m.decoder.weight is m.embedding.weight and m.cluster_logits.out_features == 2
    x, y = torch.randint(0, 20, (2, 6)), torch.randint(0, 20, (2, 6))
    fast = torch.autograd.grad(m(x, y).loss, list(m.parameters()))
    full = torch.autograd.grad(torch.nn.functional.nll_loss(m(x).logits.reshape(-1, 20), y.reshape(-1)),
                               list(m.parameters()))
    for a, b in zip(fast, full):
        torch.testing.assert_close(a, b)


def test_adaptive_softmax_config_errors_and_bad_targets():
    with pytest.raises(ConfigError, match="softmax_cutoffs"):
        LanguageModelConfig(vocab_size=20, softmax_cutoffs=(12, 5))
    with pytest.raises(ConfigError, match="softmax_cutoffs"):
        LanguageModelConfig(vocab_size=20, softmax_cutoffs=(20,))
    with pytest.raises(ConfigError, match="softmax_cutoffs"):
        LanguageModelConfig(vocab_size=20, softmax_cutoffs="5")
    assert LanguageModelConfig(vocab_size=20, softmax_cutoffs=[5]).softmax_cutoffs == (5,)  # from TOML/JSON
    m = _adaptive()
    with pytest.raises(ValueError, match=r"ids in \[0, 20\)"):
        m(torch.zeros(1, 3, dtype=torch.long), torch.tensor([[1, 2, 20]]))


def test_adaptive_softmax_learns_generates_and_round_trips(tmp_path):
    # the grammar test above with the rarer letters in a tail cluster
    tok, x, y = _grammar()
    m = LanguageModel(vocab_size=tok.vocab_size, embedding_size=16, hidden_size=32, tie_weights=True,
                      softmax_cutoffs=(tok.vocab_size - 3,), tokenizer=tok)
    _fit(m, x, y)
    assert m(x, y).loss.item() < 0.173 + 0.03
    m.eval()
    assert m.generate("abc ", 8, seed=0, greedy=True)[1:3] in ("bc", "yz")
    m.save(tmp_path / "b")
    back = rnnkit.load(tmp_path / "b")
    assert back.config.softmax_cutoffs == m.config.softmax_cutoffs
    assert torch.equal(back(x[:1, :20]).logits, m(x[:1, :20]).logits)


def test_zoneout_cell_gives_the_lstm_cell_state_its_own_rate(tmp_path):
    tok = CharTokenizer().fit("abcdefgh ")
    m = LanguageModel(LanguageModelConfig(vocab_size=tok.vocab_size, embedding_size=8, hidden_size=12,
                                          num_layers=2, zoneout=0.05, zoneout_cell=0.5), tokenizer=tok)
    assert [layer.zoneout for layer in m.layers] == [(0.05, 0.5)] * 2
    assert LanguageModel(vocab_size=10, zoneout=0.1).layers[0].zoneout == 0.1  # unset: one rate for h and c
    m.save(tmp_path / "m")
    back = rnnkit.load(tmp_path / "m")
    ids = torch.randint(0, tok.vocab_size, (2, 9))
    assert back.config.zoneout_cell == 0.5 and torch.equal(back(ids).logits, m.eval()(ids).logits)


def test_targets_of_another_shape_are_refused_with_either_softmax():
    """The adaptive softmax's gather read the first rows of a (2, 5) target for a (2, 6) input: a loss,
    silently, on misaligned positions (the full softmax failed on a batch-size message)."""
    ids = torch.randint(0, 20, (2, 6))
    for cutoffs in ((), (5, 12)):
        m = LanguageModel(vocab_size=20, embedding_size=8, hidden_size=8, softmax_cutoffs=cutoffs)
        with pytest.raises(ValueError, match=r"targets: expected shape \(2, 6\) \(as input_ids\), got \(2, 5\)"):
            m(ids, ids[:, :5])
    with pytest.raises(TypeError, match="state: expected the LMState a call returned"):
        m(ids, state=(None,))


def test_a_tokenizer_of_another_vocabulary_is_refused_by_models_and_ensembles():
    """Accepted, it failed at the first generate on 'index out of range in self'; an ensemble replaced
    its members' tokenizers with it and saved a bundle that could not generate."""
    from rnnkit.data.tokenizers import CharTokenizer
    from rnnkit.models import LanguageModelEnsemble
    small, big = CharTokenizer().fit("abc"), CharTokenizer().fit("abcdefgh")
    with pytest.raises(ConfigError, match="tokenizer: the tokenizer has .* tokens but the model's vocabulary has"):
        LanguageModel(vocab_size=small.vocab_size + 3, embedding_size=4, hidden_size=4, tokenizer=small)
    members = [LanguageModel(vocab_size=small.vocab_size, embedding_size=4, hidden_size=4, tokenizer=small)
               for _ in range(2)]
    with pytest.raises(ConfigError, match="tokenizer: the tokenizer has"):
        LanguageModelEnsemble(members, tokenizer=big)
    assert all(m.tokenizer is small for m in members)  # the members' own tokenizers are left alone


def test_stateful_loss_checks_its_arguments_and_gives_the_model_back_in_its_mode():
    """seq_len=-1 scored 0.0 (a perfect score, silently); seq_len=0 and batch_size=0 were raw errors."""
    from rnnkit.recipes.lm import stateful_loss
    m = LanguageModel(vocab_size=10, embedding_size=4, hidden_size=4).train()
    ids = torch.randint(0, 10, (50,))
    for bad in (dict(seq_len=-1), dict(seq_len=0), dict(batch_size=0), dict(seq_len=2.5), dict(batch_size=True)):
        with pytest.raises(ConfigError, match="stateful_loss: .* must be an int >= 1"):
            stateful_loss(m, ids, **bad)
    assert stateful_loss(m, ids.tolist(), seq_len=7) == pytest.approx(stateful_loss(m, ids, seq_len=7))
    assert m.training
    with pytest.raises(ValueError, match=r"expected token ids in \[0, 10\)"):
        stateful_loss(m, torch.full((50,), 99))  # an id beyond the vocabulary fails inside the model
    assert m.training  # it was left in evaluation mode


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_state_detach_cuts_the_graph_between_tbptt_chunks(cell):
    # a hand-written truncated-BPTT loop: the second chunk's backward must not reach the first's graph
    # (without detach it raises "Trying to backward through the graph a second time")
    torch.manual_seed(0)
    model = LanguageModel(vocab_size=7, cell=cell, embedding_size=8, hidden_size=12, num_layers=2)
    ids = torch.randint(0, 7, (3, 9))
    out = model(ids[:, :4], targets=ids[:, 1:5])
    out.loss.backward()
    state = out.state.detach()
    assert isinstance(state, type(out.state)) and len(state.layers) == 2
    for kept, new in zip(torch.utils._pytree.tree_leaves(out.state), torch.utils._pytree.tree_leaves(state)):
        assert kept.requires_grad and not new.requires_grad and torch.equal(kept, new)
    if cell == "lstm":
        assert isinstance(state.layers[0], rnnkit.LSTMState)
    model(ids[:, 4:8], targets=ids[:, 5:9], state=state).loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        model(ids[:, 4:8], targets=ids[:, 5:9], state=out.state).loss.backward()
