"""benchmarks/quality/lm_shakespeare.py: the regularisation options reach the model and the trainer,
are in --help, and bad values fail with one clear line."""

from __future__ import annotations

import json

import pytest

from rnnkit.errors import ConfigError
from tests.benchmarks._util import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("lm_shakespeare")


def test_options_reach_model_and_trainer(script, tmp_path):
    args = script.build_parser().parse_args(
        ["--layers", "2", "--dropout", "0.3", "--input-dropout", "0.1", "--weight-decay", "0.05",
         "--weight-drop", "0.25"])
    cfg, tcfg = script.configs(args, 65, str(tmp_path))
    assert (cfg.input_dropout, cfg.hidden_dropout, cfg.output_dropout, cfg.weight_drop) == (0.1, 0.3, 0.3, 0.25)
    assert (tcfg.optimizer, tcfg.weight_decay) == ("adamw", 0.05)
    cfg, tcfg = script.configs(script.build_parser().parse_args([]), 65, str(tmp_path))
    assert (cfg.input_dropout, tcfg.optimizer, tcfg.weight_decay) == (0.0, "adam", 0.0)
    assert (cfg.zoneout, cfg.recurrent_dropout) == (0.0, 0.0)
    args = script.build_parser().parse_args(["--layer-norm", "--zoneout", "0.1", "--recurrent-dropout", "0.2"])
    cfg, _ = script.configs(args, 65, str(tmp_path))
    assert (cfg.zoneout, cfg.recurrent_dropout, cfg.layer_norm) == (0.1, 0.2, True)
    cfg, _ = script.configs(script.build_parser().parse_args(["--zoneout", "0.05", "--zoneout-cell", "0.5"]), 65,
                            str(tmp_path))
    assert (cfg.zoneout, cfg.zoneout_cell) == (0.05, 0.5)


def test_help_names_the_options(script):
    text = script.build_parser().format_help()
    assert "--input-dropout" in text and "--weight-decay" in text and "AdamW" in text and "--weight-drop" in text
    assert "--ema" in text and "--zoneout" in text and "--recurrent-dropout" in text and "--zoneout-cell" in text


@pytest.mark.parametrize("argv, name", [(["--input-dropout", "1.5"], "input_dropout"),
                                        (["--weight-drop", "1.0"], "weight_drop"),
                                        (["--weight-decay", "-0.1"], "weight_decay"),
                                        (["--ema", "1.0"], "ema"),
                                        (["--zoneout", "1.0"], "zoneout"),
                                        (["--zoneout-cell", "1.0"], "zoneout_cell"),
                                        (["--recurrent-dropout", "-0.2"], "recurrent_dropout")])
def test_bad_values_fail_with_one_clear_line(script, tmp_path, argv, name):
    args = script.build_parser().parse_args(argv)
    with pytest.raises((ConfigError, ValueError)) as info:
        script.configs(args, 65, str(tmp_path))
    message = str(info.value)
    assert name in message and "\n" not in message


def test_weight_average_is_the_moving_average_and_swaps_back(script):
    import torch

    model = torch.nn.Linear(2, 1)
    trainer = type("T", (), {"model": model})()
    avg = script._WeightAverage(0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
        avg.on_step_end(trainer, {})  # the first step starts the average at the weights
        model.weight.fill_(3.0)
        avg.on_step_end(trainer, {})
    assert torch.allclose(avg.avg[0], torch.full((1, 2), 0.9 * 1.0 + 0.1 * 3.0))
    avg.swap(model)
    assert torch.allclose(model.weight, torch.full((1, 2), 1.2))
    avg.swap(model)
    assert torch.allclose(model.weight, torch.full((1, 2), 3.0)) and torch.allclose(avg.avg[0], torch.full((1, 2), 1.2))


@pytest.mark.parametrize("argv", [["--ema", "1.5"], ["--weight-drop", "1.0"]])
def test_the_script_refuses_bad_values_in_one_line_before_reading_data(script, monkeypatch, capsys, argv):
    monkeypatch.setattr("sys.argv", ["lm_shakespeare.py", *argv])
    monkeypatch.setattr(script, "load_dataset", lambda *a, **k: pytest.fail("read data before checking options"))
    with pytest.raises(SystemExit) as info:
        script.main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("lm_shakespeare.py: error: ")


def test_save_keeps_the_trained_model_as_a_bundle(script, monkeypatch, capsys, tmp_path):
    from rnnkit.export import load
    from rnnkit.models import LanguageModel

    text = "to be or not to be, that is the question. " * 80
    monkeypatch.setattr(script, "load_dataset", lambda *a, **k: {"train": text[:3000], "val": text[3000:]})
    monkeypatch.setattr("sys.argv", ["lm_shakespeare.py", "--seconds", "1", "--hidden", "8", "--embedding", "4",
                                     "--batch", "4", "--save", str(tmp_path / "m"), "--json"])
    script.main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model = load(tmp_path / "m")
    assert isinstance(model, LanguageModel) and model.config.hidden_size == 8
    assert result["config"]["save"] == str(tmp_path / "m") and "--save" in script.build_parser().format_help()
    from rnnkit.export.bundle import read_bundle_config  # so that `rnnkit evaluate m` reads tiny shakespeare
    assert read_bundle_config(tmp_path / "m")["extra"]["data"] == {"dataset": "tinyshakespeare", "tokenizer": "char"}


def test_save_into_a_folder_that_is_not_a_bundle_is_refused_before_training(script, monkeypatch, capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.setattr("sys.argv", ["lm_shakespeare.py", "--save", str(tmp_path)])
    monkeypatch.setattr(script, "load_dataset", lambda *a, **k: pytest.fail("read data before checking --save"))
    with pytest.raises(SystemExit) as info:
        script.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and err[-1].endswith("is not an rnnkit bundle; expected a new or empty folder")
