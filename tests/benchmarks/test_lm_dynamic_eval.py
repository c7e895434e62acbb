"""benchmarks/quality/lm_dynamic_eval.py: the settings are chosen on the first part only and the
figures for the rest are the sequential sums' difference."""

from __future__ import annotations

import pytest
import torch

from rnnkit.recipes.lm import dynamic_loss, stateful_loss
from tests.benchmarks._util import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("lm_dynamic_eval")


def _reversed_cycle_model():
    """Trained on the cycle 0..5; the tests read 5..0."""
    from tests.models.test_dynamic_eval import _model, _train
    return _train(_model(), torch.arange(6).repeat(8 * 10 + 1)[: 8 * 60 + 1])


def test_rest_is_the_tail_of_a_sequential_mean(script):
    # stateful loss of the tail, state carried from the head = the whole sum minus the head's sum
    model, ids = _reversed_cycle_model(), torch.arange(5, -1, -1).repeat(60)
    n, k = ids.numel() - 1, 128
    full, head = stateful_loss(model, ids, seq_len=64), stateful_loss(model, ids[: k + 1], seq_len=64)
    out = script.choose_and_score(model, ids, tune=k, lrs=(0.0,), decays=(0.0,))
    assert out["val_loss"] == pytest.approx(full, abs=1e-4)
    assert out["val_loss_rest"] == pytest.approx(script.rest(full, n, head, k), abs=1e-4)
    assert out["val_loss_rest"] == out["val_loss_dynamic_rest"]


def test_chooses_on_the_head_and_adapts_on_the_rest(script):
    model, ids = _reversed_cycle_model(), torch.arange(5, -1, -1).repeat(60)
    out = script.choose_and_score(model, ids, tune=128, lrs=(0.0, 0.5), decays=(0.0, 1.0))
    assert (out["lr"], out["decay"]) == (0.5, 0.0) and set(out["grid"]) == {"0/0", "0.5/0", "0.5/1"}
    assert out["val_loss_dynamic_rest"] < out["val_loss_rest"] / 2
    assert out["val_loss_dynamic"] == pytest.approx(dynamic_loss(model, ids, seq_len=64, lr=0.5), abs=1e-4)


def test_a_missing_bundle_is_one_line(script, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("sys.argv", ["lm_dynamic_eval.py", str(tmp_path / "none")])
    with pytest.raises(SystemExit) as info:
        script.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and err[-1].startswith("lm_dynamic_eval.py: error: ") and "no such bundle" in err[-1]
