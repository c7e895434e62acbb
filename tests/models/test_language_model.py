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
                      input_dropout=0.3, hidden_dropout=0.3, output_dropout=0.3, recurrent_dropout=0.3)
    ids = torch.randint(0, 11, (3, 10))
    m.eval()
    assert torch.equal(m(ids).logits, m(ids).logits)
    m.train()
    assert not torch.equal(m(ids).logits, m(ids).logits)


@pytest.mark.parametrize("kw,match", [({"cell": "transformer"}, "cell"), ({"layer_norm": True, "cell": "rnn"},
                                      "layer_norm"), ({"input_dropout": 1.0}, "input_dropout"),
                                      ({"proj_size": 4, "cell": "gru"}, "proj_size")])
def test_bad_config(kw, match):
    with pytest.raises(ConfigError, match=match):
        LanguageModelConfig(vocab_size=10, **kw)


def test_bad_input_ids():
    m = LanguageModel(vocab_size=11, embedding_size=8, hidden_size=12)
    with pytest.raises(ValueError, match="integer tensor"):
        m(torch.randn(2, 5))


def test_learns_a_tiny_grammar_to_its_entropy():
    # words "abc" or "xyz" chosen by a fair coin, space-separated: only the first letter of each
    # 4-character word is uncertain, so the best possible loss is ln(2)/4 = 0.173 nats per character
    gen = torch.Generator().manual_seed(0)
    text = " ".join("abc" if c else "xyz" for c in torch.randint(0, 2, (800,), generator=gen).tolist())
    tok = CharTokenizer().fit(text)
    ids = torch.tensor(tok.encode(text))
    m = LanguageModel(vocab_size=tok.vocab_size, embedding_size=16, hidden_size=32)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    x, y = ids[:3000].view(10, 300), ids[1:3001].view(10, 300)
    for _ in range(120):
        loss = m(x, y).loss
        opt.zero_grad(); loss.backward(); opt.step()
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
