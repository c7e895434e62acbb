"""benchmarks/generation_speed.py: the rows run the path they name (the one-step C++ path by default;
with it off, the fused kernels, the "prepared every call" model preparing on every call) and generate
the same text, and a short run writes every row."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest
import torch

from rnnkit.kernels import _gemm

PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "generation_speed.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("generation_speed_script", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_row_runs_the_path_it_names(script, monkeypatch):
    kept, every = script.build(True, 0), script.build(True, 0)
    script.forget_each_call(every)
    builds = []
    real = _gemm.Prepared.__init__
    monkeypatch.setattr(_gemm.Prepared, "__init__", lambda self, params: builds.append(1) or real(self, params))
    layers = kept.config.num_layers
    with script.without_step():
        for model, per_call in ((kept, False), (every, True)):
            builds.clear()
            text = model.generate("AB", 6, seed=0)
            assert len(builds) == (layers * 7 if per_call else layers)  # the prompt's call + 6 one-token calls
        want = kept.generate("AB", 20, seed=1)  # through the fused kernels
        assert want == every.generate("AB", 20, seed=1) and len(text) == 6
    default = script.build(True, 0)
    builds.clear()
    steps = []
    real_try = script.one_step.try_step
    monkeypatch.setattr("rnnkit.layers.recurrent.try_step",
                        lambda *a, **k: steps.append(1) or real_try(*a, **k))
    assert default.generate("AB", 20, seed=1) == want  # the one-step path writes the same text
    if script.one_step._cpp_step() is not None:  # with a C++ compiler: only the prompt's call prepares
        assert len(builds) == layers and len(steps) >= 19 * layers


def test_a_short_run_writes_every_row(script, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.argv", ["generation_speed.py", "--chars", "3", "--rounds", "1",
                                     "--json", str(tmp_path / "g.json")])
    monkeypatch.setattr(script, "build", lambda ln, seed: _small(script, ln, seed))
    script.main()
    result = json.loads((tmp_path / "g.json").read_text())
    assert len(result["chars_per_second"]) == 6 and all(v > 0 for v in result["chars_per_second"].values())
    assert min(result[k] for k in ("step_over_fused_kept", "kept_over_every_call", "plain_step_over_torch")) > 0


def _small(script, layer_norm, seed):
    from rnnkit.data.tokenizers import CharTokenizer
    from rnnkit.models import LanguageModel, LanguageModelConfig
    torch.manual_seed(seed)
    tok = CharTokenizer().fit(script.TEXT)
    return LanguageModel(LanguageModelConfig(vocab_size=tok.vocab_size, embedding_size=8, hidden_size=16,
                                             layer_norm=layer_norm), tokenizer=tok).eval()


def test_bad_options_fail_in_one_line(script, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["generation_speed.py", "--rounds", "0"])
    with pytest.raises(SystemExit) as info:
        script.main()
    assert info.value.code == 2 and "--rounds: expected a number > 0, got 0" in capsys.readouterr().err


def test_help_names_the_options(script, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["generation_speed.py", "--help"])
    with pytest.raises(SystemExit):
        script.main()
    text = capsys.readouterr().out
    assert all(option in text for option in ("--chars", "--rounds", "--json"))
