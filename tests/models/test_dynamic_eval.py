"""Dynamic evaluation (rnnkit.recipes.lm.dynamic_loss): scores each segment before adapting to it,
adapts to a shifted text, leaves the model alone, and refuses bad settings."""

from __future__ import annotations

import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.recipes.lm import dynamic_loss, stateful_loss


def _model(seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(LanguageModelConfig(vocab_size=6, embedding_size=8, hidden_size=16, output_dropout=0.2))


def _train(model: LanguageModel, ids: torch.Tensor, steps: int = 150) -> LanguageModel:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = ids[:-1].reshape(8, -1)
    y = ids[1:].reshape(8, -1)
    for _ in range(steps):
        opt.zero_grad()
        model(x, y).loss.backward()
        opt.step()
    return model.eval()


def test_lr_zero_is_the_stateful_loss():
    model, ids = _model(), torch.randint(0, 6, (301,))
    assert dynamic_loss(model, ids, seq_len=64, lr=0.0) == pytest.approx(
        stateful_loss(model, ids, seq_len=64, batch_size=1), rel=1e-6)


def test_a_single_segment_is_scored_before_any_update():
    """If the update leaked into the score, a huge learning rate would change this number."""
    model, ids = _model(), torch.randint(0, 6, (50,))
    static = stateful_loss(model, ids, seq_len=64)
    assert dynamic_loss(model, ids, seq_len=64, lr=50.0) == pytest.approx(static, rel=1e-6)


def test_adapts_to_a_text_unlike_the_training_text_and_leaves_the_model_alone():
    # trained on the cycle 0 1 2 3 4 5, evaluated on 5 4 3 2 1 0: static is badly wrong, dynamic learns it
    model = _train(_model(), torch.arange(6).repeat(8 * 10 + 1)[: 8 * 60 + 1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shifted = torch.arange(5, -1, -1).repeat(100)
    static = stateful_loss(model, shifted, seq_len=32)
    dynamic = dynamic_loss(model, shifted, seq_len=32, lr=0.5)
    assert static > 1.0 and dynamic < static / 2
    assert dynamic_loss(model, shifted, seq_len=32, lr=0.5, decay=1.0) == pytest.approx(static, rel=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training


@pytest.mark.parametrize("kw", [{"lr": -1.0}, {"lr": float("nan")}, {"decay": 1.5}, {"seq_len": 0}])
def test_bad_settings_are_one_clear_error(kw):
    with pytest.raises(ConfigError, match="dynamic evaluation: expected lr >= 0"):
        dynamic_loss(_model(), torch.randint(0, 6, (20,)), **kw)


def test_dynamic_evaluation_of_one_token_says_so():
    """It divided by zero (and an empty text gave -0.0)."""
    import torch

    from rnnkit.data.tokenizers import CharTokenizer
    from rnnkit.errors import DataError
    from rnnkit.models import LanguageModel
    from rnnkit.recipes.lm import dynamic_loss
    tok = CharTokenizer().fit("ab")
    m = LanguageModel(vocab_size=tok.vocab_size, embedding_size=4, hidden_size=8, tokenizer=tok)
    for ids in (torch.tensor([1]), torch.tensor([], dtype=torch.long)):
        with pytest.raises(DataError, match="scoring needs at least 2"):
            dynamic_loss(m, ids, lr=0.01)
