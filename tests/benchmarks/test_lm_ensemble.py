"""benchmarks/quality/lm_ensemble.py: members get their own seeds, folders and share of the cores,
a failed member stops the run, saved bundles are scored as one ensemble, bad options fail in one line."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from rnnkit.errors import RnnkitError
from tests.benchmarks._util import load_script

TEXT = "to be or not to be, that is the question. " * 80


@pytest.fixture(scope="module")
def script():
    return load_script("lm_ensemble")


def test_each_member_gets_its_seed_folder_and_the_forwarded_options(script, tmp_path):
    args, rest = script.build_parser().parse_known_args(["--members", "3", "--seed", "5", "--layers", "2"])
    cmds = script.member_commands(args, rest, tmp_path)
    assert len(cmds) == 3
    for i, cmd in enumerate(cmds):
        assert cmd[1].endswith("lm_shakespeare.py") and cmd[2:4] == ["--layers", "2"]
        assert cmd[cmd.index("--seed") + 1] == str(5 + i) and cmd[cmd.index("--save") + 1] == str(tmp_path / f"member{i}")


def test_threads_are_the_cores_shared_among_members(script, monkeypatch):
    monkeypatch.setattr(script.torch, "get_num_threads", lambda: 2)
    parse = script.build_parser().parse_known_args
    assert script.threads_per_member(parse(["--members", "2"])[0]) == 1
    assert script.threads_per_member(parse(["--members", "3"])[0]) == 1
    assert script.threads_per_member(parse(["--members", "1"])[0]) == 2
    assert script.threads_per_member(parse(["--members", "2", "--threads", "2"])[0]) == 2


def test_members_run_at_once_with_their_thread_count(script):
    show = "import json, os; print('log'); print(json.dumps({'threads': os.environ['OMP_NUM_THREADS']}))"
    out = script.train_members([[sys.executable, "-c", show]] * 2, threads=1)
    assert out == [{"threads": "1"}, {"threads": "1"}]


def test_a_failed_member_stops_the_others_at_once_with_its_command(script):
    import time
    slow = [sys.executable, "-c", "import time; time.sleep(60); print('{}')"]
    t0 = time.monotonic()
    with pytest.raises(RnnkitError, match=r"ensemble member 1 failed \(exit status 3\)"):
        script.train_members([slow, [sys.executable, "-c", "raise SystemExit(3)"]], 1)
    assert time.monotonic() - t0 < 30  # the slow member was stopped, not waited for


def _saved_member(tmp_path, name, seed):
    from rnnkit.data.tokenizers import CharTokenizer
    from rnnkit.models import LanguageModel, LanguageModelConfig
    torch.manual_seed(seed)
    tok = CharTokenizer().fit(TEXT)
    model = LanguageModel(LanguageModelConfig(vocab_size=tok.vocab_size, embedding_size=4, hidden_size=8),
                          tokenizer=tok)
    model.save(tmp_path / name)
    return model


def test_saved_bundles_are_scored_as_one_ensemble(script, monkeypatch, capsys, tmp_path):
    from rnnkit.recipes.lm import stateful_loss
    models = [_saved_member(tmp_path, f"m{i}", i) for i in range(2)]
    shakespeare = script._shakespeare_script()
    monkeypatch.setattr(script, "_shakespeare_script", lambda: shakespeare)
    monkeypatch.setattr(shakespeare, "load_dataset", lambda *a, **k: TEXT[:1500])
    monkeypatch.setattr("sys.argv", ["lm_ensemble.py", "--bundles", str(tmp_path / "m0"), str(tmp_path / "m1"),
                                     "--json", "--save", str(tmp_path / "out")])
    script.main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ids = torch.tensor(models[0].tokenizer.encode(TEXT[:1500]))
    assert result["val_loss"] == pytest.approx(stateful_loss(models, ids), abs=1e-4)
    assert result["val_loss"] != pytest.approx(stateful_loss(models[0], ids), abs=1e-3)
    assert result["params"] == 2 * models[0].num_parameters()
    assert result["val_loss_windowed"] == pytest.approx(shakespeare.windowed_loss(models, ids), abs=1e-4)
    # the windowed mixture of two copies is the model itself; of two models, below their mean
    one = shakespeare.windowed_loss(models[0], ids)
    assert shakespeare.windowed_loss([models[0]] * 2, ids) == pytest.approx(one, rel=1e-5)
    assert result["val_loss_windowed"] < (one + shakespeare.windowed_loss(models[1], ids)) / 2
    # --save: the ensemble as one bundle, which scores the same and records where its data comes from
    from rnnkit.export import load
    from rnnkit.export.bundle import read_bundle_config
    from rnnkit.models import LanguageModelEnsemble
    saved = load(tmp_path / "out" / "ensemble")
    assert isinstance(saved, LanguageModelEnsemble) and len(saved.members) == 2
    assert stateful_loss(saved, ids, seq_len=256) == pytest.approx(result["val_loss"], abs=1e-4)
    extra = read_bundle_config(tmp_path / "out" / "ensemble")["extra"]
    assert extra["data"]["dataset"] == "tinyshakespeare" and extra["val_loss"] == result["val_loss"]


@pytest.mark.parametrize("argv, message", [
    (["--members", "0"], "--members must be >= 1"),
    (["--hidden", "0"], "hidden_size"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["--bundles", "a", "--layers", "2"], "these training options do not apply: --layers 2"),
    (["--bundles", "/nonexistent/bundle"], "/nonexistent/bundle"),
    (["--bundles", "a", "--save", "OCCUPIED"], "ensemble exists and is not an rnnkit bundle"),
])
def test_bad_options_fail_in_one_line_before_any_training(script, monkeypatch, capsys, tmp_path, argv, message):
    monkeypatch.setattr(script, "train_members", lambda *a: pytest.fail("trained before checking the options"))
    if "OCCUPIED" in argv:
        (tmp_path / "ensemble").mkdir()
        (tmp_path / "ensemble" / "notes.txt").write_text("mine")
        argv = [str(tmp_path) if a == "OCCUPIED" else a for a in argv]
    monkeypatch.setattr("sys.argv", ["lm_ensemble.py", *argv])
    with pytest.raises(SystemExit) as info:
        script.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and err[-1].startswith(("lm_ensemble.py: error: ", "lm_shakespeare.py: error: "))
    assert message in err[-1]


def test_help_names_the_options(script):
    text = script.build_parser().format_help()
    for option in ("--members", "--threads", "--bundles", "--save", "--seed", "--json"):
        assert option in text
