"""The ``rnnkit`` command line (typer + rich). Thin: it parses, calls the library, prints and plots.

User mistakes (bad data, bad options, a corrupt bundle) print one ``error:`` line and exit 2;
``rnnkit --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from rnnkit import __version__
from rnnkit.cli_options import config_options, read_toml, resolve_sections

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Recurrent neural networks on sequential data: train, evaluate, generate, "
                       "complete, diagnose, benchmark.")
console = Console(soft_wrap=True)  # a line stays one line in a pipe or a log (rich cut them at 80 columns)
err = Console(stderr=True, soft_wrap=True)
_STATE = {"debug": False}

LM_CHECKPOINT_EVERY = 500  # steps between checkpoints of `train lm` (the weights and the optimizer state)
MAX_DIAGNOSE_LENGTH = 100_000  # ~1 s per 1,000 steps; longer runs out of memory before they end
DEMO_MODEL = {"cell": "lstm", "embedding_size": 64, "hidden_size": 256, "num_layers": 1}
DEMO_DATA = {"dataset": "pydocs", "tokenizer": "char", "batch_size": 32, "seq_len": 128}
DEMO_TRAINER = {"name": "demo", "max_time": 150.0, "lr": 3e-3, "max_grad_norm": 1.0, "schedule": "cosine",
                "warmup_steps": 50, "eval_every": 200, "checkpoint_every": 200, "log_every": 20}


def _version(value: bool) -> None:
    if value:
        console.print(f"rnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    _STATE["debug"] = debug
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(message)s")


# -- data sets ---------------------------------------------------------------------------------
@app.command()
def datasets() -> None:
    """List the named data sets and whether each is available here."""
    from rnnkit.data.registry import DATA_ENV, list_datasets
    table = Table(title=f"rnnkit data sets (files: ${DATA_ENV})")
    for col in ("name", "kind", "available", "description"):
        table.add_column(col)
    for info in list_datasets():
        avail = "[green]yes[/]" if info.available else f"[red]no[/] ({info.reason})"
        table.add_row(info.name, info.kind, avail, info.description)
    _print_table(table)


def _print_table(table) -> None:
    """A table at its natural width when the output is not a terminal (a pipe, a log): rich would fit
    it into 80 columns and cut every number to '6.6…'."""
    if console.is_terminal or os.environ.get("COLUMNS"):  # a terminal, or a width the user set
        console.print(table)
        return
    from rich.measure import Measurement
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    Console(width=max(console.width, natural)).print(table)  # print(width=) is capped at the console's


# -- language models ---------------------------------------------------------------------------
def _load_lm(path: Path):
    """A language model or an ensemble of them."""
    from rnnkit.export import load
    from rnnkit.models import LanguageModel, LanguageModelEnsemble
    model = load(path)  # a bundle, or a run folder holding bundle/
    if not isinstance(model, (LanguageModel, LanguageModelEnsemble)):
        from rnnkit.errors import ConfigError
        from rnnkit._files import a_or_an
        raise ConfigError(f"{path} holds {a_or_an(type(model).__name__)}, not a language model")
    return model


def _note_unknown(model, text: str) -> None:
    """The unknown-input note as one line (the Python API's UnknownTokensWarning is silenced in the CLI)."""
    from rnnkit.models.text_generation import unknown_note
    note = unknown_note(model, text)
    if note:
        err.print(f"note: {note}", soft_wrap=True, highlight=False)


@app.command(short_help="Generate text from a language model, streaming the tokens.")
def generate(run_or_bundle: Path = typer.Argument(..., metavar="RUN_OR_BUNDLE", help="A bundle folder or a run folder."),
             prompt: str = typer.Option("", "--prompt", "-p", help="Text to continue (a character or subword "
                                        "model needs at least one character; a word model starts an empty "
                                        "prompt at <eos>)."),
             max_tokens: int = typer.Option(200, "--max-tokens", "-n", help="Tokens to generate."),
             temperature: float = typer.Option(0.8, help="Sampling temperature (0 = greedy; model.generate's "
                                                "default is 1.0)."),
             top_k: Optional[int] = typer.Option(None, help="Sample among the k most likely tokens."),
             top_p: Optional[float] = typer.Option(None, help="Nucleus sampling: smallest set with mass p."),
             repetition_penalty: float = typer.Option(1.0, help="> 1 discourages repeating tokens."),
             seed: Optional[int] = typer.Option(None, help="Seed for reproducible samples."),
             greedy: bool = typer.Option(False, help="Always take the most likely token.")) -> None:
    """Generate text from a language model, streaming tokens as they come."""
    from rnnkit.errors import ConfigError
    from rnnkit.models.sampling import SamplingConfig
    if max_tokens <= 0:  # one error line, as the other checks (click's BadParameter prints its usage block)
        raise ConfigError(f"--max-tokens must be > 0, got {max_tokens}")
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,  # checked before any output
                              repetition_penalty=repetition_penalty, greedy=greedy)
    model = _load_lm(run_or_bundle)
    _note_unknown(model, prompt)
    pieces = model.stream(prompt, max_tokens, seed=seed, **vars(sampling))
    first = next(pieces)  # the prompt's own errors (empty, ...) before it is echoed
    sys.stdout.write(prompt + first)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


@app.command(short_help="Suggest the k most likely next words (or the word being typed).")
def complete(bundle: Path = typer.Argument(..., metavar="BUNDLE", help="A language-model bundle or run folder."),
             prefix: str = typer.Argument(..., metavar="PREFIX", help="The text typed so far."),
             k: int = typer.Option(3, "-k", help="How many suggestions.")) -> None:
    """Suggest the k most likely next words (the whole word when the prefix ends inside one)."""
    from rnnkit.data._tokenizer_base import trailing_word
    from rnnkit.models.text_generation import read_part
    model = _load_lm(bundle)
    _note_unknown(model, read_part(model, prefix))  # a word model does not read the word being typed
    found = model.complete(prefix, k)
    if not found:
        err.print(f"note: no word the model knows continues {trailing_word(prefix)!r}")
    for c in found:
        console.print(f"{c.word}\t{c.probability:.3f}", highlight=False)


@app.command(short_help="Loss, perplexity, bits per token and per character of a bundle on held-out text.")
def evaluate(bundle: Path = typer.Argument(..., metavar="BUNDLE", help="A bundle folder or a run folder."),
             text: Optional[Path] = typer.Option(None, help="A UTF-8 text file to evaluate on."),
             dataset: Optional[str] = typer.Option(None, help="A named data set (its validation split, or "
                                                   "--split)."),
             split: str = typer.Option("validation", help="With a data set (named or the one the bundle "
                                       "records): 'validation' or 'test' (e.g. Penn Treebank's test set)."),
             dynamic: float = typer.Option(0.0, help="Dynamic evaluation: after scoring each segment of 64 tokens, "
                                           "one SGD step with this learning rate on it (0: off; e.g. 0.01)."),
             dynamic_decay: float = typer.Option(0.0, help="With --dynamic: pull the weights back towards the "
                                                 "trained ones by this share after each step (0..1)."),
             also: Optional[list[Path]] = typer.Option(None, "--with", help="Another bundle over the same "
                                                       "vocabulary, scored with BUNDLE as an ensemble (each token's "
                                                       "probability the mean of the models'); repeat for more.")
             ) -> None:
    """Evaluate a bundle: loss, perplexity, bits per token and bits per character on held-out text.

    The text is read in order with the state carried; with --dynamic the model also adapts to the
    text as it reads it; with --with, an ensemble of bundles is scored. Without --text or --dataset,
    the validation text (--split test: the test text) of the data set the bundle records. Bits per
    character are the whole text's loss over its characters, comparable between character, word and
    subword models."""
    import math

    import torch

    from rnnkit.errors import ConfigError
    from rnnkit.models import LanguageModelEnsemble
    from rnnkit.recipes.lm import LMDataConfig, dynamic_loss, load_lm_text, stateful_loss
    model = _load_lm(bundle)
    if also:
        model = LanguageModelEnsemble([model] + [_load_lm(b) for b in also])
    if text is not None and dataset:
        raise ConfigError(f"give --text or --dataset, not both (got {text} and {dataset!r})")
    if split not in ("validation", "test"):
        raise ConfigError(f"--split: expected 'validation' or 'test', got {split!r}")
    if text is not None:
        if split != "validation":
            raise ConfigError(f"--split {split} picks a data set's split; --text {text} is scored whole")
        from rnnkit.data.text import read_text
        val = read_text(text)
    else:
        from rnnkit.export.bundle import read_bundle_config
        saved = read_bundle_config(bundle).get("extra", {}).get("data")
        if not isinstance(saved, dict) and not dataset:
            raise ConfigError(f"{bundle} does not record the data it was trained on; give --text FILE or --dataset NAME")
        data = LMDataConfig(**{**(saved or {}), **({"dataset": dataset, "text": ""} if dataset else {})})
        val = load_lm_text(data, split)[1]
    _note_unknown(model, val)
    if dynamic_decay != 0 and dynamic == 0:
        raise ConfigError(f"--dynamic-decay {dynamic_decay} acts with --dynamic LR only (dynamic evaluation); "
                          "give --dynamic too")
    ids = torch.tensor(model.tokenizer.encode(val))
    if dynamic != 0:
        loss = dynamic_loss(model, ids, seq_len=64, lr=dynamic, decay=dynamic_decay)
    else:
        loss = stateful_loss(model, ids, batch_size=8)
    bits = loss / math.log(2)
    console.print(f"loss {loss:.4f}  perplexity {math.exp(min(loss, 50)):.2f}  bits/token {bits:.4f}  "
                  f"bits/char {bits * ids.numel() / max(len(val), 1):.4f}")


@app.command()
def ensemble(bundles: list[Path] = typer.Argument(..., metavar="BUNDLES", help="Two or more language-model bundles over the same vocabulary "
                                                  "(or run folders, or ensemble bundles, which count as their "
                                                  "members; every member weighs the same)."),
             out: Path = typer.Option(..., "--out", "-o", help="The new ensemble bundle's folder.")) -> None:
    """Join language models into one ensemble bundle.

    Each next-token probability is the mean of the members'; generate, complete and evaluate take
    the ensemble like any language model."""
    from rnnkit.errors import ConfigError
    from rnnkit.export.bundle import read_bundle_config
    from rnnkit.models import LanguageModelEnsemble
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} already exists and is not empty; choose a new folder (nothing is "
                          "overwritten, a member's bundle least of all)")
    joined = LanguageModelEnsemble([_load_lm(b) for b in bundles])
    if len(joined.members) < 2:
        raise ConfigError(f"an ensemble joins at least two language models, got {len(joined.members)}")
    data = read_bundle_config(bundles[0]).get("extra", {}).get("data")
    joined.save(out, extra={"members": [str(b) for b in bundles], **({"data": data} if isinstance(data, dict) else {})})
    console.print(f"{out}: an ensemble of {len(joined.members)} language models, "
                  f"{joined.num_parameters():,} parameters", highlight=False, soft_wrap=True)


# The trainer's loader options for map-style data sets: a language model reads data.batch_size
# contiguous streams of its text instead (LMStream), so these would be silently ignored.
_LM_STREAM_ONLY = ("batch_size", "drop_last", "num_workers")


def _run_file(toml: dict) -> dict:
    """A run's recorded ``config.toml`` (``[runtime]``, ``[model.config]``, every trainer field) as a run
    file for ``--config``: the model's fields, the trainer's without the loader options a language
    model does not use; anything else as it is."""
    if "runtime" not in toml:
        return toml
    out = {k: v for k, v in toml.items() if k != "runtime"}
    model = out.get("model", {})
    if isinstance(model.get("config"), dict):
        out["model"] = {k: v for k, v in model["config"].items() if k != "vocab_size"}
    out["trainer"] = {k: v for k, v in out.get("trainer", {}).items() if k not in _LM_STREAM_ONLY}
    return out


def _train_lm(params: dict, base: dict | None = None) -> None:
    from rnnkit.errors import ConfigError
    from rnnkit.models.language_model import LanguageModelConfig
    from rnnkit.recipes.lm import LMDataConfig, train_language_model
    from rnnkit.training import TrainerConfig
    sections = {"model": LanguageModelConfig, "data": LMDataConfig, "trainer": TrainerConfig}
    config = params.get("config")
    if params.get("trainer__resume"):  # --trainer.resume true is --resume (it built the default model)
        params = {**params, "resume": True}
    if params.get("resume") and not config:
        # --resume alone continues the run as it was configured (its config.toml), not the defaults:
        # a default model did not fit the checkpoint's weights ('size mismatch for embedding.weight')
        recorded = Path(params.get("trainer__run_dir") or "runs") / (params.get("trainer__name") or "lm") / "config.toml"
        if recorded.is_file():
            config = str(recorded)
            if int(os.environ.get("RANK", "0")) == 0:
                console.print(f"resuming with the run's recorded configuration {recorded} (flags override it)",
                              soft_wrap=True, highlight=False)
    recorded_toml = read_toml(config)
    run_file = _run_file(recorded_toml)
    if "runtime" in recorded_toml:  # a run's record: TOML has no None, so a field it lacks was None there;
        # checkpoint_every is the one whose default (LM_CHECKPOINT_EVERY) is not None: a run started with
        # --trainer.checkpoint_every none wrote checkpoints every 500 steps once resumed
        run_file.setdefault("trainer", {}).setdefault("checkpoint_every", None)
    values = resolve_sections(params, run_file, sections, base)
    ignored = [k for k in _LM_STREAM_ONLY if k in values["trainer"]]
    if ignored:
        raise ConfigError(f"trainer.{ignored[0]} does not apply to language models: they read "
                          "data.batch_size contiguous streams of the text; set [data] batch_size instead")
    values["model"].setdefault("vocab_size", 2)  # replaced by the tokenizer's size
    values["trainer"].setdefault("name", "lm")
    # a checkpoint every LM_CHECKPOINT_EVERY steps, not only at the end: a killed or interrupted run
    # had nothing for --resume to continue
    values["trainer"].setdefault("checkpoint_every", LM_CHECKPOINT_EVERY)
    if params.get("quiet"):
        values["trainer"]["quiet"] = True
    if params.get("resume"):
        values["trainer"]["resume"] = True
    trainer_cfg = TrainerConfig(**values["trainer"])
    result = train_language_model(values["model"], LMDataConfig(**values["data"]), trainer_cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return result
    m = result.metrics
    console.print(f"validation loss {m['val_loss']:.4f} (stateful), perplexity {m['val_ppl']:.2f}, "
                  f"{m['bits_per_token']:.3f} bits/token, {m['params']:,} parameters, {m['steps']} steps",
                  soft_wrap=True)  # one line in a pipe or a log, not cut at 80 columns
    console.print(f"bundle: {result.bundle}   run: {trainer_cfg.out_dir}", soft_wrap=True)
    return result


def _train_group() -> click.Group:
    from rnnkit.models.language_model import LanguageModelConfig
    from rnnkit.recipes.lm import LMDataConfig
    from rnnkit.training import TrainerConfig
    group = click.Group("train", short_help="Train a model: lm, forecast or detect.",
                        help="Train a model: rnnkit train TASK [--config run.toml] [--SECTION.FIELD VALUE].")
    common = [click.Option(["--config"], type=click.Path(), default=None, help="TOML run file with [model], "
                           "[data], [trainer] tables."),
              click.Option(["--resume"], is_flag=True, help="Continue runs/<name> from its last checkpoint."),
              click.Option(["--quiet"], is_flag=True, help="No progress bar.")]
    lm = click.Command("lm", callback=lambda **p: _train_lm(p),
                       short_help="Language model on a named data set or a text file.", help=(
        "Language model on a named data set or --data.text FILE (char, word or BPE tokens)."),
        params=common + config_options("model", LanguageModelConfig, skip=("vocab_size",))
        + config_options("data", LMDataConfig) + config_options("trainer", TrainerConfig, skip=_LM_STREAM_ONLY,
                                                                defaults={"name": "lm", "checkpoint_every": LM_CHECKPOINT_EVERY}))
    group.add_command(lm)
    series_config = [click.Option(["--config"], type=click.Path(), default=None,
                                  help="TOML run file with [model] and [data] tables.")]
    group.add_command(_forecast_command(series_config))
    group.add_command(_detect_command(series_config))
    return group


def _run_options(name: str) -> list[click.Option]:
    return [click.Option(["--name"], default=None, help=f"Run name: the run is written to RUN_DIR/NAME. "
                                                         f"[default: {name}]"),
            click.Option(["--run-dir"], default="runs", show_default=True, help="Folder of the runs.")]


def _forecast_command(common: list) -> click.Command:
    from rnnkit.recipes.forecast import ForecastDataConfig, ForecastModelConfig

    def run(**params):
        from rnnkit.recipes.forecast import train_forecaster
        values = resolve_sections(params, read_toml(params.get("config")),
                                  {"model": ForecastModelConfig, "data": ForecastDataConfig})
        fc, bundle, metrics = train_forecaster(ForecastModelConfig(**values["model"]),
                                               ForecastDataConfig(**values["data"]), params["run_dir"],
                                               params["name"] or "forecast")
        if values["data"].get("nan") == "interpolate":
            console.print(f"--nan interpolate: filled {sum(metrics['fit']['filled'])} missing value(s) "
                          "(NaN cells and the cells of missing timestamps)", soft_wrap=True)
        for target, methods in metrics.get("holdout", {}).items():
            for method, row in methods.items():
                console.print(f"holdout {target} {method}: " + ", ".join(f"{k} {v:.4g}" for k, v in _flat(row).items()))
        if "forecast_png" in metrics:
            console.print(f"forecast.png {metrics['forecast_png']}", soft_wrap=True)
        console.print(f"bundle: {bundle}")
    return click.Command("forecast", callback=run, short_help="Forecaster on a CSV series with a time column.", help=(
        "Forecaster (ES-normalised recurrent network) on a CSV with a time column: "
        "rnnkit train forecast --csv data.csv --time-col date --target sales --horizon 24"),
        params=common + _run_options("forecast") + config_options("data", ForecastDataConfig, plain=True)
        + config_options("model", ForecastModelConfig))


def _detect_command(common: list) -> click.Command:
    from rnnkit.models.anomaly import DetectorConfig
    from rnnkit.recipes.forecast import DetectDataConfig

    def run(**params):
        from rnnkit.recipes.forecast import train_detector
        values = resolve_sections(params, read_toml(params.get("config")),
                                  {"model": DetectorConfig, "data": DetectDataConfig})
        det, bundle, summary = train_detector(DetectorConfig(**values["model"]), DetectDataConfig(**values["data"]),
                                              params["run_dir"], params["name"] or "detect")
        if "filled" in summary:
            console.print(f"--nan interpolate: filled {summary['filled']} missing value(s) (NaN cells)")
        console.print(f"{len(summary['windows'])} anomaly window(s); bundle: {bundle}")
        if "metrics" in summary:
            console.print(f"on the rows from {summary['evaluated_from']} (after those fitted on): " + ", ".join(
                f"{k} {v:.3g}{' h' if k == 'delay' else ''}" for k, v in _flat(summary["metrics"]).items()))
    return click.Command("detect", callback=run, short_help="Anomaly detector on a CSV series.", help=(
        "Anomaly detector fitted on the first part of a series: rnnkit train detect --csv log.csv "
        "--time-col timestamp --target value (or --dataset nab/nyc_taxi)"),
        params=common + _run_options("detect") + config_options("data", DetectDataConfig, plain=True)
        + config_options("model", DetectorConfig, skip=("nan",)))  # --nan sets it: one flag for one setting


def _flat(row) -> dict:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)} \
        if isinstance(row, dict) else {}


@app.command(short_help="Train a small LSTM on Python's docs and show what it learnt.")
def demo(seconds: float = typer.Option(150.0, help="Training wall-clock budget in seconds."),
         run_dir: str = typer.Option("runs", help="Folder for the run (runs/demo).")) -> None:
    """Train a character-level LSTM on Python's documentation and show what it learned."""
    from rnnkit.errors import ConfigError
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"--seconds: expected a number of seconds > 0, got {seconds}")
    console.print(f"[bold]rnnkit demo[/]: a character-level LSTM learns English and Python from Python's "
                  f"own documentation ({seconds:.0f} s of training on this machine)")
    trainer = {**DEMO_TRAINER, "max_time": seconds, "run_dir": run_dir}
    result = _train_lm({}, {"model": DEMO_MODEL, "data": DEMO_DATA, "trainer": trainer})
    model = result.model
    # a seed per prompt: with one shared seed a weak model soon forgets the prompt and the two
    # samples end in the same text, which reads like a bug
    for seed, prompt in enumerate(("The ", "def ")):
        console.print(f"\n[bold]sample[/] (prompt {prompt!r}, temperature 0.7, seed {seed}):")
        console.print(prompt + model.generate(prompt, 240, seed=seed, temperature=0.7), highlight=False,
                      markup=False)
    console.print("\n[bold]predictive text[/]: after 'import o' the model suggests "
                  + ", ".join(f"{c.word!r} ({c.probability:.2f})" for c in model.complete("import o", 3)))
    console.print(f"\nloss curve: {Path(run_dir) / 'demo' / 'loss.png'}   try: rnnkit generate "
                  f"{result.bundle} --prompt 'The '")


# -- time series -------------------------------------------------------------------------------
@app.command(short_help="Forecast the next horizon with a trained forecaster.")
def forecast(bundle: Path = typer.Argument(..., metavar="BUNDLE", help="A forecaster bundle or run folder."),
             csv: Optional[Path] = typer.Option(None, help="History to forecast from (default: the training data)."),
             time_col: Optional[str] = typer.Option(None, help="The timestamp column."),
             target: Optional[str] = typer.Option(None, help="Target column(s), comma-separated."),
             future_csv: Optional[Path] = typer.Option(None, help="Known future covariates for the horizon."),
             plot: Optional[Path] = typer.Option(None, help="Write a PNG: history, forecast, interval band."),
             duplicates: str = typer.Option("refuse", help="Rows of --csv (and --future-csv) that repeat a "
                                            "timestamp: refuse, or keep the first, the last, or their mean.")) -> None:
    """Forecast the next horizon with a trained forecaster; prints mean and quantiles."""
    from rnnkit._files import output_file
    from rnnkit.recipes.forecast import forecast_from_bundle
    plot = output_file(plot, ".png", "--plot") if plot else None  # the name printed is the file written
    frame = forecast_from_bundle(bundle, str(csv) if csv else None, time_col, target, str(plot) if plot else None,
                                 str(future_csv) if future_csv else None, duplicates=duplicates)
    console.print(frame.to_string(), markup=False, highlight=False)
    if plot:
        console.print(f"plot: {plot}")


@app.command()
def detect(bundle: Path = typer.Argument(..., metavar="BUNDLE", help="An anomaly-detector bundle or run folder."),
           csv: Path = typer.Option(..., help="The series to scan."),
           time_col: Optional[str] = typer.Option(None, help="The timestamp column."),
           target: Optional[str] = typer.Option(None, help="The value column(s) the detector was fitted on, "
                                                "comma-separated (default: those of its training CSV for a "
                                                "detector of several columns; else the CSV's one value column)."),
           plot: Optional[Path] = typer.Option(None, help="Write a PNG with the flagged windows shaded.")) -> None:
    """Flag anomaly windows in a series with a trained detector."""
    from rnnkit._files import output_file
    from rnnkit.recipes.forecast import detect_from_bundle
    plot = output_file(plot, ".png", "--plot") if plot else None
    windows = detect_from_bundle(bundle, str(csv), time_col, target, str(plot) if plot else None)
    for w in windows:
        console.print(f"{w[0]}  {w[1]}  score {w[2]:.3g}", highlight=False)
    console.print(f"{len(windows)} window(s)" + (f"; plot: {plot}" if plot else ""))


# -- analysis and benchmarks -------------------------------------------------------------------
@app.command(short_help="Run a benchmark (speed or memory) and print its table.")
def bench(what: str = typer.Argument("speed", metavar="WHAT", help="speed or memory"),
          quick: bool = typer.Option(False, help="Tiny shapes, to check it runs."),
          json_out: Optional[Path] = typer.Option(None, "--json", help="Write the rows as JSON here."),
          tasks: Optional[str] = typer.Option(None, help="memory: comma-separated tasks (default all)."),
          models: Optional[str] = typer.Option(None, help="memory: comma-separated models (default all)."),
          lengths: Optional[str] = typer.Option(None, help="memory: comma-separated sequence lengths."),
          budget: Optional[float] = typer.Option(None, help="memory: seconds per cell (default 60)."),
          clock: Optional[str] = typer.Option(None, help="memory: 'wall' (default) or 'cpu' seconds."),
          threads: Optional[int] = typer.Option(None, help="memory: torch threads.")) -> None:
    """Run a benchmark and print its table (speed: benchmarks/speed.py; memory: benchmarks/memory.py)."""
    memory_only = {"--tasks": tasks, "--models": models, "--lengths": lengths, "--budget": budget,
                   "--clock": clock, "--threads": threads}
    given = [flag for flag, value in memory_only.items() if value is not None]
    if what == "speed" and given:
        raise typer.BadParameter(f"{', '.join(given)} apply to 'rnnkit bench memory' only; "
                                 "'bench speed' takes --quick and --json")
    if what == "speed":
        from rnnkit.bench import format_table, json_path, machine_description, run_speed, to_json, write_json
        from rnnkit.kernels import _cpp
        json_out = json_path(json_out) if json_out else None  # before the run, not after it
        _cpp.ops()  # the optional C++ loops built or loaded first: the description said "not loaded yet"
        machine = machine_description()  # the load before the run
        rows = run_speed(quick=quick)
        console.print(f"machine: {machine}")
        console.print(format_table(rows), markup=False, highlight=False)
        if json_out:
            write_json(json_out, to_json(rows, machine))
    elif what == "memory":
        from rnnkit.analysis import memory
        argv = ["--quick"] if quick else []
        for flag, value in (("--json", json_out), *memory_only.items()):
            if value is not None:
                argv += [flag, str(value)]
        raise typer.Exit(memory.main(argv))
    else:
        raise typer.BadParameter(f"expected 'speed' or 'memory', got {what!r}")


@app.command(short_help="Gradient flow through time of cells or a bundle: table and PNG.")
def diagnose(bundle: Optional[Path] = typer.Argument(None, metavar="BUNDLE", help="A bundle to diagnose (else compare cells)."),
             cell: Optional[str] = typer.Option(None, help="Comma-separated recurrences to compare (without a "
                                                "bundle): some of rnn, rnn_relu, lstm, lstm_fb1, lstm_ln, gru, "
                                                "gru_ln, indrnn, mingru, minlstm. [default: rnn,lstm,gru,mingru]"),
             length: int = typer.Option(200, help=f"Sequence length (2 to {MAX_DIAGNOSE_LENGTH:,})."),
             out: Path = typer.Option(Path("gradient_flow.png"), help="Where to write the plot.")) -> None:
    """Gradient flow through time: norms of dL/dh_t and of the recurrent Jacobians, table + PNG.

    A bundle is run on random tokens, with the loss the cross-entropy of its last prediction against
    a random next token."""
    import warnings

    from rnnkit import analysis
    from rnnkit.analysis.plots import figure_file
    from rnnkit.errors import ConfigError
    if not 2 <= length <= MAX_DIAGNOSE_LENGTH:
        raise ConfigError(f"--length: expected 2 to {MAX_DIAGNOSE_LENGTH:,} steps, got {length}")
    out = figure_file(out, "--out")  # checked before the work (suffix too); the name printed is the file written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        if bundle is not None:
            import torch

            from rnnkit.models import LanguageModelEnsemble
            if cell is not None:
                raise ConfigError("--cell compares freshly initialised cells; with a bundle, the bundle's own "
                                  "recurrent layers are diagnosed (drop --cell, or drop the bundle)")
            model = _load_lm(bundle)  # the recurrent layers of a language model, on random text
            if isinstance(model, LanguageModelEnsemble):
                raise ConfigError(f"{bundle} is an ensemble; diagnose one of its members' bundles")
            ids = torch.randint(0, model.config.vocab_size, (4, length + 1), generator=torch.Generator().manual_seed(0))
            # the last prediction's cross-entropy against a fixed random next token: it depends on the input
            # with a full or an adaptive softmax (whose "logits" are log-probabilities: their logsumexp is 0)
            rows = analysis.diagnose_module(
                model.eval(), ids[:, :-1], out, name=bundle.name,
                loss_fn=lambda o: torch.nn.functional.cross_entropy(o.logits[:, -1], ids[:, -1]))
        else:
            rows = analysis.diagnose_cells("rnn,lstm,gru,mingru" if cell is None else cell, length, out)
    table = Table(title=f"gradient flow over {length} steps")
    for key in rows[0]:
        table.add_column(str(key))
    for row in rows:
        table.add_row(*(f"{v:.3g}" if isinstance(v, float) else "-" if v is None else str(v) for v in row.values()))
    _print_table(table)
    for w in caught:
        err.print(f"warning: {w.message}")
    console.print(f"plot: {out}")


# -- entry point -------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _run(argv: list[str] | None) -> None:
    from rnnkit.errors import RnnkitError, UnknownTokensWarning
    command = typer.main.get_command(app)
    command.add_command(_train_group(), "train")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:  # anywhere on the line, as the hint says 'rnnkit --debug ...' after a failed command
        argv = ["--debug"] + [a for a in argv if a != "--debug"]
    try:
        with warnings.catch_warnings():  # the commands print their own note: line for unknown input
            warnings.simplefilter("ignore", UnknownTokensWarning)
            code = command.main(args=argv, prog_name="rnnkit", standalone_mode=False)
    except (RnnkitError, ValueError, TypeError, OSError) as exc:  # OSError: a file the user named
        if debug or _is_click_error(exc):
            raise
        hint = "" if isinstance(exc, RnnkitError) else " (rnnkit --debug ... shows the traceback)"
        print(f"error: {_one_line(exc)}{hint}", file=sys.stderr)  # one line, never wrapped
        sys.exit(2)
    except KeyboardInterrupt:
        code = 130
    # without standalone mode, click returns an Exit's code instead of exiting: Ctrl-C arrives here as
    # 130 (typer turns KeyboardInterrupt into Exit(130)); dropping it made an interrupted run exit 0
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        if code == 130:
            print("interrupted", file=sys.stderr)
        sys.exit(code)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Each command's docstring with its paragraphs reflowed: rich keeps a docstring's line breaks
    inside a paragraph, which broke help lines in mid-sentence at the source's width."""
    import inspect

    for info in typer_app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if doc:
            info.help = "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


_reflow_help(app)


def _is_click_error(exc: BaseException) -> bool:
    return hasattr(exc, "exit_code") and hasattr(exc, "show")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning user errors into one line."""
    try:
        _run(argv)
    except Exception as exc:  # click's and typer's own (vendored) click exceptions: usage errors
        if type(exc).__name__ in ("Exit",) and hasattr(exc, "exit_code"):
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            print("aborted", file=sys.stderr)
            sys.exit(1)
        if _is_click_error(exc):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
