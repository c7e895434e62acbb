"""The rnnkit command line: commands listed, a tiny training run, generate/complete/evaluate on its
bundle, and one-line errors for user mistakes (corrupt bundle, bad options)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest

from rnnkit.cli import main


def run(args, capsys):
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_commands(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for name in ("train", "evaluate", "generate", "complete", "ensemble", "datasets", "demo", "bench", "diagnose"):
        assert name in out


def test_command_help_paragraphs_are_reflowed(capsys, monkeypatch):
    """rich kept a docstring's line breaks, cutting help lines mid-sentence at the source's width."""
    code, out, _ = run(["evaluate", "--help"], capsys)
    assert code == 0
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if "The text is read" in line)
    paragraph = lines[first:lines.index("", first)]
    assert len(paragraph) >= 2 and all(len(line) >= 70 for line in paragraph[:-1])  # filled to the width
    assert "with --with, an ensemble of bundles is scored. Without --text or --dataset" in " ".join(out.split())


def test_train_help_shows_every_option_with_its_default(capsys):
    code, out, _ = run(["train", "lm", "--help"], capsys)
    assert code == 0
    assert "--model.hidden_size" in out and "[default: 512]" in out and "--trainer.max_time" in out
    assert "--data.tokenizer" in out and "--model.zoneout_cell" in out


@pytest.mark.parametrize("task", ["lm", "forecast", "detect"])
def test_every_generated_train_option_says_what_it_does(task):
    """Each ``--section.field`` option's help is its field's attribute docstring plus the default."""
    from rnnkit.cli_options import field_docs

    from rnnkit import cli

    command = cli._train_group().commands[task]
    generated = [p for p in command.params if "__" in (p.name or "")]
    assert len(generated) > 10
    undocumented = [p.opts[0] for p in generated if not p.help or p.help.startswith("[default")]
    assert undocumented == []
    from rnnkit.recipes.lm import LMDataConfig
    assert field_docs(LMDataConfig)["seq_len"].endswith(".")


def test_datasets_lists_pydocs(capsys):
    code, out, _ = run(["datasets"], capsys)
    assert code == 0 and "pydocs" in out and "tinyshakespeare" in out


def test_diagnose_prints_its_whole_table_into_a_pipe(tmp_path, capsys):
    """Not a terminal (here: captured): rich fitted the table into 80 columns and cut every number."""
    code, out, err = run(["diagnose", "--cell", "rnn,lstm", "--length", "20", "--out", str(tmp_path / "g.png")],
                         capsys)
    assert code == 0, err
    assert "…" not in out and "ratio_first_last" in out and "jacobian_mean" in out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 25-step character model on the first 60k characters of pydocs."""
    root = tmp_path_factory.mktemp("cli")
    text = root / "corpus.txt"
    text.write_text(("to be or not to be, that is the question. " * 400), encoding="utf-8")
    args = ["train", "lm", "--data.text", str(text), "--model.hidden_size", "32", "--model.embedding_size",
            "16", "--data.seq_len", "32", "--data.batch_size", "8", "--trainer.max_steps", "25",
            "--trainer.run_dir", str(root / "runs"), "--trainer.name", "tiny", "--quiet"]
    try:
        main(args)
    except SystemExit as exc:
        assert not exc.code
    return root / "runs" / "tiny"


def test_training_leaves_a_run_and_a_bundle(tiny_run):
    for name in ("config.toml", "metrics.csv", "loss.png", "bundle/config.json", "bundle/model.safetensors",
                 "bundle/tokenizer.json", "checkpoints/last/manifest.json"):
        assert (tiny_run / name).is_file(), name
    assert "[data]" in (tiny_run / "config.toml").read_text()


def test_generate_complete_evaluate(tiny_run, capsys):
    code, out, _ = run(["generate", str(tiny_run), "--prompt", "to be", "--max-tokens", "30", "--seed", "1"],
                       capsys)
    assert code == 0 and out.startswith("to be") and len(out.strip()) >= 30
    code, out, _ = run(["complete", str(tiny_run / "bundle"), "to be or no"], capsys)
    assert code == 0 and len(out.strip().splitlines()) >= 1
    code, out, _ = run(["evaluate", str(tiny_run)], capsys)
    assert code == 0 and "perplexity" in out
    static = float(out.split()[1])
    code, out, _ = run(["evaluate", str(tiny_run), "--dynamic", "0.05"], capsys)
    assert code == 0 and "perplexity" in out and float(out.split()[1]) != static  # the adapted model scored
    code, out, err = run(["evaluate", str(tiny_run), "--dynamic", "-1"], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "expected lr >= 0" in err


def test_language_model_commands_on_the_edges_users_reach(tiny_run, tmp_path, capsys, monkeypatch):
    short = tmp_path / "short.txt"
    short.write_text("to be", encoding="utf-8")  # fewer tokens than evaluate's 8 parallel parts
    code, out, err = run(["evaluate", str(tiny_run), "--text", str(short)], capsys)
    assert code == 0 and "perplexity" in out, err
    monkeypatch.chdir(tmp_path)  # the recorded training text is found from any folder
    code, out, err = run(["evaluate", str(tiny_run)], capsys)
    assert code == 0 and "perplexity" in out, err
    code, out, err = run(["generate", str(tiny_run), "--prompt", "to be", "--top-k", "0"], capsys)
    assert code != 0 and out == "" and "top_k must be an int >= 1" in err  # refused before the prompt is echoed
    code, out, err = run(["generate", str(tiny_run), "--prompt", "to", "--temperature", "nan"], capsys)
    assert code != 0 and out == "" and "finite" in err and "Traceback" not in err
    code, _, err = run(["ensemble", str(tiny_run), str(tiny_run), "--out", str(tiny_run / "bundle")], capsys)
    assert code != 0 and "already exists and is not empty" in err
    assert (tiny_run / "bundle" / "config.json").is_file()
    code, _, err = run(["evaluate", str(tiny_run), "--text", str(short), "--dataset", "pydocs"], capsys)
    assert code != 0 and "not both" in err


def test_a_runs_recorded_config_trains_again(tiny_run, tmp_path, capsys):
    """config.toml records the run (with [runtime], the model's record, every trainer field); as --config
    it gives the same model and data, under another name here."""
    code, out, err = run(["train", "lm", "--config", str(tiny_run / "config.toml"), "--trainer.name", "again",
                          "--trainer.max_steps", "2", "--trainer.run_dir", str(tmp_path)], capsys)
    assert code == 0, err
    import rnnkit
    again, first = rnnkit.load(tmp_path / "again"), rnnkit.load(tiny_run)  # run folders load as their bundles
    assert again.config == first.config and again.tokenizer.vocab == first.tokenizer.vocab


def _halved_copy(run_dir, folder):
    """The run's model with its weights halved, saved with the run's data record: another model."""
    import torch

    from rnnkit.export import load
    from rnnkit.export.bundle import read_bundle_config
    other = load(run_dir / "bundle")
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    other.save(folder, extra=read_bundle_config(run_dir / "bundle")["extra"])


def test_evaluate_scores_an_ensemble_of_bundles(tiny_run, tmp_path, capsys):
    _halved_copy(tiny_run, tmp_path / "other")
    losses = []
    for args in ([str(tiny_run)], [str(tmp_path / "other")], [str(tiny_run), "--with", str(tmp_path / "other")],
                 [str(tiny_run), "--with", str(tiny_run / "bundle")]):
        code, out, err = run(["evaluate", *args], capsys)
        assert code == 0, err
        losses.append(float(out.split()[1]))
    one, two, both, same = losses
    assert both < (one + two) / 2 and both not in (one, two)  # the mixture, below the members' mean
    assert same == pytest.approx(one, abs=2e-4)  # a model with itself is the model
    code, out, err = run(["evaluate", str(tiny_run), "--with", str(tmp_path / "other"), "--dynamic", "0.05"], capsys)
    assert code == 0, err
    assert float(out.split()[1]) != both  # the ensemble adapted as it read (dynamic evaluation of the mixture)


def test_ensemble_joins_bundles_into_one_that_every_command_takes(tiny_run, tmp_path, capsys):
    _halved_copy(tiny_run, tmp_path / "other")
    ens = tmp_path / "ens"
    code, out, err = run(["ensemble", str(tiny_run), str(tmp_path / "other"), "--out", str(ens)], capsys)
    assert code == 0 and "an ensemble of 2 language models" in out, err
    code, out, _ = run(["evaluate", str(ens)], capsys)  # the data recorded by the first member's run
    code2, out2, _ = run(["evaluate", str(tiny_run), "--with", str(tmp_path / "other")], capsys)
    assert code == code2 == 0 and out.split()[1] == out2.split()[1]
    code, out, _ = run(["generate", str(ens), "--prompt", "to be", "--max-tokens", "20", "--seed", "1"], capsys)
    assert code == 0 and out.startswith("to be") and len(out.strip()) >= 20
    code, out, _ = run(["complete", str(ens), "to be or no", "-k", "2"], capsys)
    assert code == 0 and 1 <= len(out.strip().splitlines()) <= 2
    # an ensemble joins further models as members: three now
    code, out, err = run(["ensemble", str(ens), str(tiny_run), "--out", str(tmp_path / "three")], capsys)
    assert code == 0 and "an ensemble of 3 language models" in out, err


def test_ensemble_help_names_its_arguments(capsys):
    code, out, _ = run(["ensemble", "--help"], capsys)
    out = " ".join(out.split())
    assert code == 0 and "--out" in out and "bundles" in out and "same vocabulary" in out


@pytest.mark.parametrize("case, match", [
    ("one", "joins at least two language models, got 1"),
    ("forecaster", "not a language model"),
    ("occupied", "already exists and is not empty"),
    ("no data", "does not record the data it was trained on; give --text FILE or --dataset NAME"),
])
def test_ensemble_and_evaluate_refuse_bad_input_in_one_line(case, match, tiny_run, tmp_path, capsys):
    out_dir = tmp_path / "ens"
    if case == "one":
        args = ["ensemble", str(tiny_run), "--out", str(out_dir)]
    elif case == "forecaster":
        import numpy as np

        from rnnkit.models.forecaster import Forecaster
        Forecaster(horizon=2, max_steps=2, ensemble=1).fit(np.sin(np.arange(40.0))).save(tmp_path / "fc")
        args = ["ensemble", str(tiny_run), str(tmp_path / "fc"), "--out", str(out_dir)]
    elif case == "occupied":
        out_dir.mkdir()
        (out_dir / "notes.txt").write_text("mine")
        args = ["ensemble", str(tiny_run), str(tiny_run), "--out", str(out_dir)]
    else:
        from rnnkit.export import load
        load(tiny_run / "bundle").save(out_dir, extra={})  # saved without its data record
        args = ["evaluate", str(out_dir)]
    code, _, err = run(args, capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and match in err, err


def test_corrupt_bundle_is_one_clear_line(tiny_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run / "bundle", bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[:100])
    code, out, err = run(["evaluate", str(bad)], capsys)
    assert code != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "model.safetensors" in err


@pytest.mark.parametrize("args,match", [
    (["generate", "GEN", "--max-tokens", "0"], "max-tokens"),
    (["train", "lm", "--model.cell", "transformer", "--trainer.max_steps", "1"], "cell must be one of"),
    (["train", "lm", "--data.dataset", "nope", "--trainer.max_steps", "1"], "nope"),
])
def test_user_mistakes_are_one_line(args, match, tiny_run, capsys):
    args = [str(tiny_run) if a == "GEN" else a for a in args]
    code, _, err = run(args, capsys)
    assert code != 0 and "Traceback" not in err and match in err
    assert len(err.strip().splitlines()) == 1, err  # not click's usage block around it


def test_language_models_refuse_the_trainers_loader_options(tmp_path, capsys):
    """A language model reads data.batch_size streams; trainer.batch_size would be silently ignored."""
    code, _, err = run(["train", "lm", "--trainer.batch_size", "64"], capsys)
    assert code != 0 and "No such option" in err
    toml = tmp_path / "run.toml"
    toml.write_text("[trainer]\nmax_steps = 1\nbatch_size = 64\n")
    code, _, err = run(["train", "lm", "--config", str(toml)], capsys)
    assert code != 0 and "Traceback" not in err and "set [data] batch_size instead" in err


def test_vocabulary_sizes_name_the_option_and_say_when_raised(caplog):
    from rnnkit.errors import ConfigError
    from rnnkit.recipes.lm import build_tokenizer
    text = "to be or not to be, that is the question. " * 50
    for kind in ("word", "bpe"):
        with pytest.raises(ConfigError, match="data.vocab_size=1: .*special tokens"):
            build_tokenizer(kind, text, 1)
    with caplog.at_level("WARNING"):
        tok = build_tokenizer("bpe", text, 5)
    assert tok.vocab_size > 5 and f"the bpe vocabulary has {tok.vocab_size} tokens" in caplog.text


def test_console_script_entry_point_works():
    out = subprocess.run([sys.executable, "-m", "rnnkit.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "rnnkit" in out.stdout


def test_forecast_and_detect_from_the_command_line(tmp_path, capsys):
    import numpy as np
    import pandas as pd
    t = pd.date_range("2020-01-01", periods=72, freq="MS")
    y = 50 + 5 * np.sin(2 * np.pi * np.arange(72) / 12)
    pd.DataFrame({"date": t.strftime("%Y-%m-%d"), "sales": y}).to_csv(tmp_path / "s.csv", index=False)
    runs = str(tmp_path / "runs")
    code, out, err = run(["train", "forecast", "--csv", str(tmp_path / "s.csv"), "--time-col", "date", "--target",
                          "sales", "--horizon", "6", "--model.max_steps", "30", "--model.ensemble", "1",
                          "--run-dir", runs], capsys)
    assert code == 0, err
    assert "holdout sales rnnkit" in out and (tmp_path / "runs" / "forecast" / "bundle" / "config.json").is_file()
    code, out, err = run(["forecast", f"{runs}/forecast", "--csv", str(tmp_path / "s.csv"), "--time-col", "date",
                          "--target", "sales", "--plot", str(tmp_path / "f.png")], capsys)
    assert code == 0, err
    assert (tmp_path / "f.png").is_file() and "2026-01-01" in out
    code, _, err = run(["detect", f"{runs}/forecast", "--csv", str(tmp_path / "s.csv")], capsys)
    assert code != 0 and "AnomalyDetector" in err and "Traceback" not in err
    # a history with a repeated timestamp: the policy is the forecast command's to set, as train forecast's
    frame = pd.read_csv(tmp_path / "s.csv")
    pd.concat([frame.iloc[:30], frame.iloc[29:]]).to_csv(tmp_path / "dup.csv", index=False)
    base = ["forecast", f"{runs}/forecast", "--csv", str(tmp_path / "dup.csv"), "--time-col", "date"]
    code, _, err = run(base, capsys)
    assert code == 2 and "duplicate timestamp" in err and "command line: --duplicates first, last or mean" in err
    code, out, err = run(base + ["--duplicates", "last"], capsys)
    assert code == 0 and "2026-01-01" in out, err
    code, out, err = run(["forecast", f"{runs}/forecast", "--duplicates", "last"], capsys)  # was ignored
    assert code == 2 and "a policy for the rows of csv (--csv)" in err and "2026" not in out


def _sales_csv(path, n=72, **columns):
    import numpy as np
    import pandas as pd
    t = pd.date_range("2020-01-01", periods=n, freq="MS")
    y = 50 + 5 * np.sin(2 * np.pi * np.arange(n) / 12)
    pd.DataFrame({"date": t.strftime("%Y-%m-%d"), "sales": y, **columns}).to_csv(path, index=False)
    return path


def _train_forecast(tmp_path, capsys, csv, *extra):
    code, out, err = run(["train", "forecast", "--csv", str(csv), "--horizon", "6", "--model.max_steps", "20",
                          "--model.ensemble", "1", "--model.hidden_size", "8", "--run-dir", str(tmp_path / "runs"),
                          *extra], capsys)
    assert code == 0, err
    return out


def test_forecast_refuses_a_history_with_zeros_for_a_model_in_logs(tmp_path, capsys):
    import pandas as pd
    csv = _sales_csv(tmp_path / "s.csv")
    _train_forecast(tmp_path, capsys, csv, "--holdout", "false")
    frame = pd.read_csv(csv)
    frame.loc[[60, 65], "sales"] = 0.0
    frame.to_csv(tmp_path / "zero.csv", index=False)
    code, out, err = run(["forecast", str(tmp_path / "runs" / "forecast"), "--csv", str(tmp_path / "zero.csv")], capsys)
    assert code == 2 and "works in logs of target 'sales'" in err and "2 value(s) are <= 0" in err
    assert "2025-01-01" in err and "Traceback" not in err and "mean" not in out


def test_train_forecast_reports_how_many_values_it_interpolated(tmp_path, capsys):
    import json

    import pandas as pd
    csv = _sales_csv(tmp_path / "s.csv")
    frame = pd.read_csv(csv)
    frame.loc[[10, 20], "sales"] = None  # two NaN cells
    frame.drop(index=30).to_csv(csv, index=False)  # and one missing month
    out = _train_forecast(tmp_path, capsys, csv, "--nan", "interpolate", "--holdout", "false")
    assert "--nan interpolate: filled 3 missing value(s)" in out
    metrics = json.loads((tmp_path / "runs" / "forecast" / "metrics.json").read_text())
    assert metrics["fit"]["filled"] == [3]


def test_a_time_column_of_yyyymmdd_integers_is_read_as_dates(tmp_path, capsys, caplog):
    import json

    import numpy as np
    import pandas as pd
    days = pd.date_range("2023-01-01", periods=120, freq="D")
    pd.DataFrame({"when": days.strftime("%Y%m%d"), "load": 10 + np.sin(2 * np.pi * np.arange(120) / 7)}).to_csv(
        tmp_path / "d.csv", index=False)
    _train_forecast(tmp_path, capsys, tmp_path / "d.csv", "--time-col", "when", "--holdout", "false")
    metrics = json.loads((tmp_path / "runs" / "forecast" / "metrics.json").read_text())
    assert metrics["fit"]["season_length"] == 7
    code, out, err = run(["forecast", str(tmp_path / "runs" / "forecast"), "--csv", str(tmp_path / "d.csv"),
                          "--time-col", "when"], capsys)
    assert code == 0 and "2023-05-01" in out
    assert "time column 'when' holds YYYYMMDD integers (20230101 ... 20230430); read as dates" in caplog.text


def test_train_forecast_refuses_a_season_longer_than_the_data_allows(tmp_path, capsys):
    csv = _sales_csv(tmp_path / "s.csv")
    code, _, err = run(["train", "forecast", "--csv", str(csv), "--horizon", "6", "--season-length", "500",
                        "--run-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and "season_length=500 needs at least two seasons (1000 rows)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_future_covariates_say_why_there_is_no_forecast_png_and_forecast_plots_the_training_data(tmp_path, capsys):
    import numpy as np
    import pandas as pd
    csv = _sales_csv(tmp_path / "s.csv", promo=(np.arange(72) % 3 == 0).astype(float))
    out = _train_forecast(tmp_path, capsys, csv, "--future-covariates", "promo", "--holdout", "false")
    run_dir = tmp_path / "runs" / "forecast"
    assert "forecast.png not written: the forecast needs the 6 future rows of promo" in out
    assert f"rnnkit forecast {run_dir} --future-csv FILE --plot forecast.png" in out
    assert not (run_dir / "forecast.png").exists()
    ahead = pd.date_range("2026-01-01", periods=6, freq="MS")
    pd.DataFrame({"date": ahead.strftime("%Y-%m-%d"), "promo": [1.0, 0, 0, 1, 0, 0]}).to_csv(
        tmp_path / "f.csv", index=False)
    code, out, err = run(["forecast", str(run_dir), "--future-csv", str(tmp_path / "f.csv"), "--plot",
                          str(run_dir / "forecast.png")], capsys)
    assert code == 0, err
    assert (run_dir / "forecast.png").is_file() and "2026-06-01" in out
    csv.unlink()  # the training data is gone: the plot needs --csv
    code, _, err = run(["forecast", str(run_dir), "--future-csv", str(tmp_path / "f.csv"), "--plot",
                        str(tmp_path / "p.png")], capsys)
    assert code == 2 and "the history to draw is the training CSV" in err and "pass csv (--csv)" in err


def test_bench_memory_runs_the_suite_and_writes_json(capsys, tmp_path):
    import json

    out_json = tmp_path / "memory.json"
    code, out, _ = run(["bench", "memory", "--tasks", "adding", "--models", "gru,lstm_chrono", "--lengths", "10",
                        "--budget", "0.3", "--clock", "cpu", "--threads", "1", "--json", str(out_json)], capsys)
    assert code == 0, out
    data = json.loads(out_json.read_text())
    assert [(r["task"], r["model"], r["length"]) for r in data["results"]] == [("adding", "gru", 10),
                                                                              ("adding", "lstm_chrono", 10)]
    assert data["meta"]["threads"] == 1 and "1 thread," in data["meta"]["machine"]
    assert data["meta"]["clock"] == "cpu" and data["meta"]["budget"] == 0.3
    assert "| lstm_chrono |" in out and (tmp_path / "memory.md").exists()
    code, out, err = run(["bench", "memory", "--models", "nonesuch", "--budget", "0.1"], capsys)
    assert code != 0 and "nonesuch" in out + err


def test_bench_speed_refuses_the_memory_only_options(capsys):
    code, out, err = run(["bench", "speed", "--quick", "--budget", "5", "--tasks", "adding"], capsys)
    assert code != 0 and "--tasks, --budget apply to 'rnnkit bench memory' only" in " ".join((out + err).split())
    assert "Traceback" not in out + err


def test_diagnose_checks_its_options_before_the_work(tiny_run, tmp_path, capsys):
    """A blocked --out failed only after the whole computation (FileExistsError traceback), a folder or
    a name without suffix was reported as the plot while matplotlib wrote NAME.png, --cell was ignored
    with a bundle, and bundle mode took any --length."""
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--out", str(tmp_path / "afile" / "g.png")], "afile is a file, not a folder"),
        (["--out", str(tmp_path)], "is a folder"),
        (["--length", "1"], "--length: expected 2 to"),
        (["--length", "99999999999999999999"], "--length: expected 2 to"),
        (["--cell", ","], "expected at least one cell name"),
        ([str(tiny_run), "--cell", "rnn"], "--cell compares freshly initialised cells"),
        ([str(tiny_run), "--length", "0"], "--length: expected 2 to"),
    ]
    for args, match in cases:
        code, _, err = run(["diagnose", *args], capsys)
        assert code == 2 and match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    code, out, err = run(["diagnose", "--cell", "rnn,rnn", "--length", "10", "--out", str(tmp_path / "plain")], capsys)
    assert code == 0 and f"plot: {tmp_path / 'plain.png'}" in out.replace("\n", "")
    assert (tmp_path / "plain.png").is_file() and out.count("│ rnn ") == 1  # one row per distinct cell
    assert run(["ensemble", str(tiny_run), str(tiny_run), "--out", str(tmp_path / "ens")], capsys)[0] == 0
    code, _, err = run(["diagnose", str(tmp_path / "ens"), "--out", str(tmp_path / "e.png")], capsys)
    assert code == 2 and "is an ensemble" in err


def test_diagnose_of_an_adaptive_softmax_bundle_measures_real_gradients(tmp_path, capsys):
    """The loss was logsumexp of the last logits: with an adaptive softmax those are log-probabilities,
    so the loss was log 1 = 0 for every input and its gradients rounding noise (~1e-17)."""
    from rnnkit.export import save_bundle
    import torch

    from rnnkit.models import LanguageModel, LanguageModelConfig
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=30, embedding_size=8, hidden_size=16, cell="lstm",
                                              softmax_cutoffs=(10,)))
    save_bundle(model, tmp_path / "adaptive")
    code, out, err = run(["diagnose", str(tmp_path / "adaptive"), "--length", "12", "--out", str(tmp_path / "a.png")],
                         capsys)
    assert code == 0, err
    cells = next(line for line in out.splitlines() if "adaptive" in line and "│" in line).split("│")
    header = next(line for line in out.splitlines() if "grad_last" in line).split("┃")
    row = dict(zip((h.strip() for h in header), (c.strip() for c in cells)))
    assert float(row["grad_last"]) > 1e-3 and float(row["grad_first"]) > 0 and int(row["horizon_1e3"]) >= 1, row


def test_diagnose_refuses_an_unsupported_out_suffix_before_the_work(tmp_path, capsys, monkeypatch):
    from rnnkit.analysis import diagnose

    def no_work(*args, **kwargs):
        raise AssertionError("the analysis ran before --out was checked")

    monkeypatch.setattr(diagnose, "compare_cells", no_work)
    code, out, err = run(["diagnose", "--cell", "rnn", "--length", "10", "--out", str(tmp_path / "flow.xyz")], capsys)
    assert code == 2 and "--out: matplotlib cannot write '.xyz' files" in err and "Traceback" not in err, err


def test_diagnose_help_shows_the_cell_default(capsys, monkeypatch):
    """rich read '[default: rnn,lstm,gru,mingru]' in the --cell help as a markup tag and dropped it."""
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run(["diagnose", "--help"], capsys)
    assert code == 0 and "minlstm. [default: rnn,lstm,gru,mingru]" in out


def test_bench_memory_checks_threads_and_output_paths_first(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for args, match in ((["--threads", "0"], "--threads"), (["--json", str(tmp_path / "afile" / "m.json")], "not a folder"),
                        (["--json", str(tmp_path)], "is a folder")):
        code, _, err = run(["bench", "memory", "--quick", "--tasks", "adding", "--models", "rnn", *args], capsys)
        assert code == 2 and match in err and "Traceback" not in err, err


def test_ctrl_c_exits_130_with_a_word(monkeypatch, capsys):
    """typer turns KeyboardInterrupt into Exit(130), which click returns without standalone mode: the
    CLI dropped it and exited 0 in silence, so 'rnnkit train ... && next' went on."""
    import rnnkit.cli as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_print_table", interrupted)
    code, _, err = run(["datasets"], capsys)
    assert code == 130 and "interrupted" in err


def test_lm_data_options_checked_by_type_and_validation_streams_fit_the_processes(monkeypatch):
    from rnnkit.errors import ConfigError, DataError
    from rnnkit.recipes.lm import LMDataConfig, _val_streams

    for field, value in (("seq_len", 2.5), ("batch_size", "8"), ("val_fraction", "0.1"), ("text", 3)):
        with pytest.raises(ConfigError, match=f"data.{field}"):
            LMDataConfig(**{field: value})
    assert _val_streams(100_000, 32) == 8 and _val_streams(100_000, 4) == 4
    assert _val_streams(12, 16) == 6  # a short validation text: fewer streams, not 'too few for 8'
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert _val_streams(100_000, 12) == 6  # was 8, which three processes cannot split
    with pytest.raises(DataError, match="validation text: 5 tokens"):
        _val_streams(5, 12)
    from rnnkit.recipes.lm import train_language_model
    with pytest.raises(ConfigError, match="data.batch_size: 8 streams do not split over 3 processes"):
        # before the text is read (it was a ValueError at each process's first batch, after config.toml)
        train_language_model({}, LMDataConfig(text="/nonexistent.txt", batch_size=8), None)


def test_a_run_records_its_data_when_it_starts(tiny_run):
    """[data] was appended after training: a killed run's config.toml trained on pydocs instead."""
    from rnnkit.training import load_checkpoint
    data = tomllib.loads((tiny_run / "config.toml").read_text())["data"]
    assert Path(data["text"]).is_absolute() and Path(data["text"]).name == "corpus.txt"
    assert load_checkpoint(tiny_run / "checkpoints" / "last").trainer_state["record"]["data"] == data


def test_tuple_options_are_offered_and_the_lm_name_default_is_the_one_used(capsys):
    """betas and softmax_cutoffs had no flag although the help says every option is listed; the help
    said trainer.name defaults to 'run' while train lm writes runs/lm."""
    from rnnkit.cli import _train_group
    lm = _train_group().get_command(None, "lm")
    ctx = lm.make_context("lm", ["--trainer.betas", "0.8,0.95", "--model.softmax_cutoffs", "20,40"])
    assert ctx.params["trainer__betas"] == (0.8, 0.95) and ctx.params["model__softmax_cutoffs"] == (20, 40)
    with pytest.raises(Exception, match="comma-separated float"):
        lm.make_context("lm", ["--trainer.betas", "0.9,x"])
    code, out, _ = run(["train", "lm", "--help"], capsys)
    assert "[default: lm]" in " ".join(out.split()).split("--trainer.name", 1)[1][:300]


def test_long_lines_stay_whole_in_a_pipe(capsys):
    """rich wrapped at 80 columns in a pipe: the run summary broke as '1,654,629' / 'parameters', a
    forecast frame's rows split in two and demo's suggested command could not be copied."""
    from rnnkit.cli import console, err
    words = " ".join(f"word{i}" for i in range(40))  # ~280 characters
    console.print(words)
    err.print(words)
    out = capsys.readouterr()
    assert out.out.strip() == words and out.err.strip() == words


def test_resume_alone_continues_the_run_as_it_was_configured(tiny_run, tmp_path, capsys):
    """`train lm --trainer.name X --resume` rebuilt the default model (a 512-unit pydocs LSTM) and failed
    on 'size mismatch for embedding.weight'; now the run's config.toml is the base, flags on top."""
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_run, copy)
    code, out, err = run(["train", "lm", "--trainer.run_dir", str(tmp_path / "runs"), "--trainer.name", "tiny",
                          "--resume", "--trainer.max_steps", "27", "--quiet"], capsys)
    assert code == 0, err
    assert "resuming with the run's recorded configuration" in out and "27 steps" in out


def test_dynamic_decay_without_dynamic_is_refused(tiny_run, capsys):
    """It ran dynamic evaluation at lr 0 (an unbatched pass) and printed a different loss, as if the
    decay had acted."""
    code, _, err = run(["evaluate", str(tiny_run), "--dynamic-decay", "0.5"], capsys)
    assert code != 0 and "acts with --dynamic LR only" in err


def test_flags_are_shown_as_flags_and_commands_whole(capsys):
    """typer's rich help showed '--debug <bool>' and '--greedy --no-greedy <bool>' (and '--greedy true'
    then failed); the plain help shows flags as flags, and each command's summary whole."""
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "<bool>" not in out and "..." not in out.split("Commands:")[1]
    code, out, _ = run(["generate", "--help"], capsys)
    assert code == 0 and "<bool>" not in out and "--greedy / --no-greedy" in out and "RUN_OR_BUNDLE" in out


def test_optional_options_take_none_and_tuples_take_the_empty_default(tmp_path):
    """The help says 'None means no limit' and '() = full softmax', and both were refused; a limit set
    in a TOML file (or a run's config.toml on --resume) could not be lifted from the command line."""
    from rnnkit.cli import _train_group
    from rnnkit.cli_options import read_toml, resolve_sections
    from rnnkit.models.language_model import LanguageModelConfig
    from rnnkit.training import TrainerConfig
    toml = tmp_path / "run.toml"
    toml.write_text("[trainer]\nmax_time = 60.0\nmax_steps = 100\n")
    lm = _train_group().get_command(None, "lm")
    params = lm.make_context("lm", ["--trainer.max_time", "none", "--model.softmax_cutoffs", "()"]).params
    values = resolve_sections(params, read_toml(str(toml)), {"model": LanguageModelConfig, "trainer": TrainerConfig})
    assert values["trainer"]["max_time"] is None and values["trainer"]["max_steps"] == 100
    assert params["model__softmax_cutoffs"] == ()
    with pytest.raises(Exception, match="not a valid float"):
        lm.make_context("lm", ["--trainer.max_time", "nothing"])


def test_trainer_resume_is_resume_and_lm_runs_checkpoint_as_they_go(tiny_run, tmp_path, capsys):
    """--trainer.resume true built the default model and failed on 'size mismatch'; a train lm run wrote
    its only checkpoint at the end, so a killed run had nothing to resume."""
    assert tomllib.loads((tiny_run / "config.toml").read_text())["trainer"]["checkpoint_every"] == 500
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_run, copy)
    code, out, err = run(["train", "lm", "--trainer.run_dir", str(tmp_path / "runs"), "--trainer.name", "tiny",
                          "--trainer.resume", "true", "--trainer.max_steps", "27", "--quiet"], capsys)
    assert code == 0, err
    assert "resuming with the run's recorded configuration" in out and "27 steps" in out


def test_a_run_without_periodic_checkpoints_stays_so_on_resume(tiny_run, tmp_path, capsys):
    """config.toml leaves None out (TOML has no null), so a run started with --trainer.checkpoint_every
    none came back from --resume with train lm's default, a checkpoint every 500 steps."""
    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_run, copy)
    record = copy / "config.toml"
    record.write_text(record.read_text().replace("checkpoint_every = 500\n", ""))
    code, out, err = run(["train", "lm", "--trainer.run_dir", str(tmp_path / "runs"), "--trainer.name", "tiny",
                          "--resume", "--trainer.max_steps", "27", "--quiet"], capsys)
    assert code == 0, err
    assert "checkpoint_every" not in tomllib.loads(record.read_text())["trainer"]
    code, out, err = run(["train", "lm", "--trainer.run_dir", str(tmp_path / "runs"), "--trainer.name", "tiny",
                          "--resume", "--trainer.max_steps", "28", "--trainer.checkpoint_every", "7", "--quiet"],
                         capsys)
    assert code == 0, err
    assert tomllib.loads(record.read_text())["trainer"]["checkpoint_every"] == 7  # a flag still sets it


@pytest.mark.parametrize("seconds", ["0", "-1", "nan"])
def test_demo_refuses_a_budget_without_seconds(seconds, tmp_path, capsys):
    code, out, err = run(["demo", "--seconds", seconds, "--run-dir", str(tmp_path)], capsys)
    assert code == 2 and "--seconds: expected a number of seconds > 0" in err and "rnnkit demo" not in out


def test_train_detect_has_one_flag_for_the_nan_policy():
    """--nan and --model.nan both existed; whichever said interpolate won, silently."""
    from rnnkit import cli
    flags = [o for p in cli._train_group().commands["detect"].params for o in p.opts]
    assert "--nan" in flags and "--model.nan" not in flags


def test_debug_is_taken_anywhere_on_the_line(tmp_path, capsys):
    """'rnnkit evaluate X --debug' said "No such option '--debug'"; the traceback is what it asks for."""
    from rnnkit.errors import CheckpointError
    with pytest.raises(CheckpointError, match="no such bundle folder"):
        main(["evaluate", str(tmp_path / "absent"), "--debug"])


def test_bench_speed_describes_the_cpp_loops_it_runs(capsys, monkeypatch):
    """The machine line (and the JSON) said 'C++ loops not loaded yet' although the run used them."""
    import rnnkit.bench
    monkeypatch.setattr(rnnkit.bench, "run_speed", lambda quick: [])
    monkeypatch.setattr(rnnkit.bench, "format_table", lambda rows: "")
    code, out, err = run(["bench", "speed", "--quick"], capsys)
    assert code == 0, err
    assert out.startswith("machine: ") and "not loaded yet" not in out


def test_evaluate_takes_a_data_sets_test_split_and_reports_bits_per_character(tiny_run, tmp_path, capsys,
                                                                               monkeypatch):
    # `--dataset ptb` scored only the validation split: the standard test perplexity needed --text FILE
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.train.txt").write_text("to be or not to be\n" * 50, encoding="utf-8")
    (tmp_path / "ptb" / "ptb.valid.txt").write_text("zq xj vk wp qz jx kv pw\n" * 20, encoding="utf-8")
    (tmp_path / "ptb" / "ptb.test.txt").write_text("to be or not to be, that is the question.\n" * 20,
                                                   encoding="utf-8")
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path))
    scores = {}
    for split in ("validation", "test"):
        code, out, err = run(["evaluate", str(tiny_run), "--dataset", "ptb", "--split", split], capsys)
        assert code == 0, err
        words = out.split()
        scores[split] = float(words[1])
        # a character model: one token per character, so bits per character are its bits per token
        assert words[6] == "bits/char" and float(words[7]) == pytest.approx(float(words[5]), rel=1e-3)
    assert scores["test"] < scores["validation"] - 0.1  # the test file is the text it learned (25 steps)
    for args, match in ((["--split", "test"], "no test split"),  # trained on a text file
                        (["--split", "train"], "expected 'validation' or 'test'"),
                        (["--dataset", "pydocs", "--split", "test"], "has no test split (it has: train, val)"),
                        (["--text", str(tmp_path / "ptb" / "ptb.test.txt"), "--split", "test"], "scored whole")):
        code, _, err = run(["evaluate", str(tiny_run), *args], capsys)
        assert code != 0 and len(err.strip().splitlines()) == 1 and match in err, (args, err)


def test_train_detect_reports_how_many_values_it_interpolated(tmp_path, capsys):
    import json

    import numpy as np
    import pandas as pd
    t = pd.date_range("2024-01-01", periods=300, freq="h")
    y = 10 + np.sin(2 * np.pi * np.arange(300) / 24)
    y[[50, 51, 200]] = np.nan  # three NaN cells
    pd.DataFrame({"timestamp": t.strftime("%Y-%m-%d %H:%M"), "value": y}).to_csv(tmp_path / "s.csv", index=False)
    code, out, err = run(["train", "detect", "--csv", str(tmp_path / "s.csv"), "--time-col", "timestamp",
                          "--nan", "interpolate", "--model.window", "24", "--model.max_steps", "10",
                          "--run-dir", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    assert "--nan interpolate: filled 3 missing value(s)" in out  # it said nothing (the forecast command did)
    assert json.loads((tmp_path / "runs" / "detect" / "summary.json").read_text())["filled"] == 3


def test_unknown_input_is_one_note_line_in_the_cli(tiny_run):
    # a process of its own: in pytest the Python API's UnknownTokensWarning is recorded, not printed
    done = subprocess.run([sys.executable, "-m", "rnnkit.cli", "generate", str(tiny_run), "--prompt", "to be Ω",
                           "--max-tokens", "5", "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert err.count("mapped to <unk>") == 1 and "note: 1 unknown" in err and "Warning" not in err, err
