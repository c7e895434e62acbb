"""Bundles: round trip (tied weights, nested configs, dtype, tokenizer), refusals, atomic replace."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest
import torch
from torch import nn

import rnnkit.export
from rnnkit.errors import CheckpointError
from rnnkit.export import BundleMixin, load_bundle, read_bundle_config, register_model, save_bundle
from rnnkit.training import Trainer, TrainerConfig
from rnnkit import _files


@dataclass(frozen=True)
class Inner:
    scale: float = 1.0


@dataclass(frozen=True)
class TiedConfig:
    vocab: int = 7
    hidden: int = 4
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)


class Out(NamedTuple):
    loss: torch.Tensor
    state: Any
    logits: torch.Tensor


@register_model("tests.TiedLM")
class TiedLM(BundleMixin, nn.Module):
    """Embedding and output layer share one weight matrix."""

    config_class = TiedConfig

    def __init__(self, config: TiedConfig = TiedConfig()) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.hidden)
        self.head = nn.Linear(config.hidden, config.vocab)
        self.head.weight = self.embed.weight
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, input_ids, targets=None, state=None):
        logits = self.head(self.embed(input_ids)) * self.config.inner.scale
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()) if targets is not None else None
        return Out(loss, None, logits)


@register_model("tests.Other")
class Other(BundleMixin, nn.Module):
    config_class = TiedConfig

    def __init__(self, config: TiedConfig = TiedConfig()) -> None:
        super().__init__()
        self.config = config
        self.w = nn.Linear(1, 1)


def _model(**kw) -> TiedLM:
    torch.manual_seed(0)
    return TiedLM(TiedConfig(sizes=(3, 4, 5), inner=Inner(scale=2.0), **kw))


def test_roundtrip_tied_nested_config(tmp_path):
    model = _model()
    model.steps += 5
    save_bundle(model, tmp_path / "b", extra={"note": "hi"})
    loaded = load_bundle(tmp_path / "b")
    assert isinstance(loaded, TiedLM) and not loaded.training
    assert loaded.config == model.config and loaded.config.sizes == (3, 4, 5)
    assert loaded.head.weight is loaded.embed.weight and int(loaded.steps) == 5
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    meta = read_bundle_config(tmp_path / "b")
    assert (meta["format"], meta["format_version"], meta["model_class"]) == ("rnnkit-bundle", 1, "tests.TiedLM")
    assert meta["extra"] == {"note": "hi"} and meta["config"]["inner"] == {"scale": 2.0} and meta["rnnkit_version"]
    assert rnnkit.export.load is load_bundle


def test_extra_kept_when_a_loaded_bundle_is_saved_again(tmp_path):
    save_bundle(_model(), tmp_path / "b", extra={"data": {"name": "tinyshakespeare"}, "val_loss": 1.5})
    loaded = load_bundle(tmp_path / "b")
    assert loaded.bundle_extra == {"data": {"name": "tinyshakespeare"}, "val_loss": 1.5}
    loaded.save(tmp_path / "c")  # nothing passed: the record travels with the model
    assert read_bundle_config(tmp_path / "c")["extra"] == loaded.bundle_extra
    loaded.save(tmp_path / "d", extra={"note": "fine-tuned"})  # an explicit record replaces it
    assert read_bundle_config(tmp_path / "d")["extra"] == {"note": "fine-tuned"}
    save_bundle(_model(), tmp_path / "e")  # a model that was never loaded has none
    assert read_bundle_config(tmp_path / "e")["extra"] == {}


def test_dtype_and_mixin(tmp_path):
    model = _model().double()
    model.save(tmp_path / "b")
    loaded = TiedLM.load(tmp_path / "b")
    assert loaded.embed.weight.dtype == torch.float64 and torch.equal(loaded.embed.weight, model.embed.weight)
    with pytest.raises(CheckpointError, match="expected an Other"):
        Other.load(tmp_path / "b")


def test_tokenizer_round_trip(tmp_path):
    from rnnkit.data.tokenizers import CharTokenizer

    tok = CharTokenizer().fit(["hello world"])
    save_bundle(_model(), tmp_path / "b", tokenizer=tok)
    loaded = load_bundle(tmp_path / "b")
    assert (tmp_path / "b" / "tokenizer.json").is_file()
    assert loaded.tokenizer.to_json() == tok.to_json()
    save_bundle(loaded, tmp_path / "c")  # the model's own tokenizer is kept by default
    assert load_bundle(tmp_path / "c").tokenizer.to_json() == tok.to_json()


def _edit_config(folder, **changes):
    meta = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if key == "hidden":
            meta["config"]["hidden"] = value
        elif key == "digest":
            meta["files"]["model.safetensors"] = value
        else:
            meta[key] = value
    (folder / "config.json").write_text(json.dumps(meta))


def _truncate(folder):
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:100])


@pytest.mark.parametrize("corrupt, message", [
    (lambda f: (f / "config.json").unlink(), r"config\.json: file not found"),
    (lambda f: (f / "config.json").write_text("{oops"), r"config\.json: not valid JSON"),
    (lambda f: _edit_config(f, format="something"), r"config\.json: expected format 'rnnkit-bundle'"),
    (lambda f: _edit_config(f, model_class="Nope"), r"config\.json: unknown model_class 'Nope'"),
    (lambda f: (f / "model.safetensors").unlink(), r"model\.safetensors: missing file"),
    (_truncate, r"model\.safetensors: SHA-256 does not match"),
    (lambda f: (_truncate(f), _edit_config(f, digest=None)), r"model\.safetensors: not a valid safetensors file"),
    (lambda f: _edit_config(f, hidden=3, digest=None), r"model\.safetensors: weights do not fit TiedLM \("
     r"embed\.weight \(7, 4\) in the file, \(7, 3\) in the model\).*another configuration"),
    (lambda f: _edit_config(f, hidden=5, digest=None), r"config\.json: the config describes a model of 43 values but"),
    (lambda f: _edit_config(f, config={"vocab": 7, "bogus": 1}), r"config\.json: config does not fit TiedLM"),
])
def test_corrupt_bundle_refused(tmp_path, corrupt, message):
    save_bundle(_model(), tmp_path / "b")
    corrupt(tmp_path / "b")
    with pytest.raises(CheckpointError, match=message) as info:
        load_bundle(tmp_path / "b")
    assert "\n" not in str(info.value)


def test_missing_folder_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such bundle folder"):
        load_bundle(tmp_path / "absent")


def test_save_refusals(tmp_path):
    class Plain(nn.Module):
        config = TiedConfig()

    with pytest.raises(TypeError, match="not registered"):
        save_bundle(Plain(), tmp_path / "p")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an rnnkit bundle"):
        save_bundle(_model(), tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    with pytest.raises(TypeError, match="JSON"):
        save_bundle(_model(), tmp_path / "x", extra={"bad": object()})
    with pytest.raises(ValueError, match="already belongs"):
        register_model("tests.TiedLM")(Other)
    with pytest.raises(TypeError, match="config_class"):
        register_model("tests.NoConfig")(type("NoConfig", (nn.Module,), {}))


def test_replace_is_atomic(tmp_path, monkeypatch):
    from rnnkit.data.tokenizers import CharTokenizer

    save_bundle(_model(), tmp_path / "b", tokenizer=CharTokenizer().fit(["ab"]))
    save_bundle(_model(hidden=6), tmp_path / "b")  # replaces the whole folder
    assert load_bundle(tmp_path / "b").config.hidden == 6 and not (tmp_path / "b" / "tokenizer.json").exists()

    def crash(src, dst):
        raise OSError("simulated crash")

    monkeypatch.setattr(_files, "_replace", crash)
    with pytest.raises(OSError):
        save_bundle(_model(hidden=8), tmp_path / "b")
    assert load_bundle(tmp_path / "b").config.hidden == 6
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_training_checkpoint_is_a_loadable_bundle(tmp_path):
    model = _model()
    data = [{"input_ids": torch.tensor([1, 2, 3]), "targets": torch.tensor([2, 3, 4])}] * 4
    cfg = TrainerConfig(run_dir=str(tmp_path), name="r", max_steps=2, batch_size=2, quiet=True,
                        tensorboard=False, plots=False, device="cpu")
    Trainer(model, cfg).fit(data)
    loaded = load_bundle(tmp_path / "r" / "checkpoints" / "last")
    assert isinstance(loaded, TiedLM) and torch.equal(loaded.embed.weight, model.embed.weight)


def test_a_folder_of_runs_is_not_taken_for_a_bundle_and_its_runs_are_named(tmp_path):
    # `rnnkit generate runs` said "runs/config.json: file not found"
    save_bundle(_model(), tmp_path / "runs" / "mine" / "bundle")
    (tmp_path / "runs" / "notes").mkdir()
    with pytest.raises(CheckpointError, match=r"runs: not a bundle folder \(no config.json\) nor a run folder .*"
                                              r"holds the runs mine: name one, e.g. .*runs/mine$"):
        rnnkit.load(tmp_path / "runs")
    with pytest.raises(CheckpointError, match=r"notes: not a bundle folder .*bundle/config.json\)$"):
        rnnkit.load(tmp_path / "runs" / "notes")


def test_a_trainer_run_without_a_bundle_says_so(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="a training run without a bundle .* model.save"):
        rnnkit.load(tmp_path / "run")


def test_load_refuses_before_building_what_the_weights_cannot_fill(tmp_path):
    """An edited vocab of 10**12 failed in the allocator (10**7: gigabytes and half a minute first)."""
    save_bundle(_model(), tmp_path / "b")
    _edit_config(tmp_path / "b", config={"vocab": 10 ** 12, "hidden": 4, "sizes": [3, 4, 5], "inner": {"scale": 2.0}})
    with pytest.raises(CheckpointError, match="describes a model of 5,000,000,000,001 values"):
        load_bundle(tmp_path / "b")


@pytest.mark.parametrize("change, message", [
    ({"dtype": "int64"}, "floating-point 'dtype'"), ({"format_version": True}, "format_version")])
def test_load_refuses_odd_config_values(tmp_path, change, message):
    save_bundle(_model(), tmp_path / "b")
    _edit_config(tmp_path / "b", **change)
    with pytest.raises(CheckpointError, match=message):
        load_bundle(tmp_path / "b")


def test_map_location_is_checked():
    for where, message in (("meta", "holds no values"), ("nowhere", "expected a device")):
        with pytest.raises(CheckpointError, match=message):
            load_bundle("unused", map_location=where)
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="no CUDA device"):
            load_bundle("unused", map_location="cuda")


def test_a_tokenizer_of_another_vocabulary_is_refused(tmp_path):
    from rnnkit import LanguageModel
    from rnnkit.data.tokenizers import CharTokenizer
    tok = CharTokenizer().fit(["abcdef"])
    with pytest.raises(ValueError, match="the tokenizer has .* tokens but the model's vocabulary has 31"):
        LanguageModel(vocab_size=31, hidden_size=8, embedding_size=4).save(tmp_path / "m", tokenizer=tok)
    model = LanguageModel(vocab_size=tok.vocab_size, hidden_size=8, embedding_size=4)
    model.save(tmp_path / "m", tokenizer=tok)
    other = CharTokenizer().fit(["abcdefghijklmnop"])
    (tmp_path / "m" / "tokenizer.json").write_text(other.to_json())
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["files"]["tokenizer.json"] = _files.sha256_file(tmp_path / "m" / "tokenizer.json")
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="belong to different models"):
        load_bundle(tmp_path / "m")


def test_save_paths_current_folder_home_and_unwritable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="is the current folder"):
        save_bundle(_model(), ".")  # renaming '.' failed with EBUSY (and would move the process's folder)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    save_bundle(_model(), "~/b")
    assert load_bundle("~/b").config.hidden == 4 and (tmp_path / "home" / "b" / "config.json").is_file()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match=r"cannot write .*afile/b"):  # named by the target, not the temp folder
        save_bundle(_model(), tmp_path / "afile" / "b")


def test_a_save_in_progress_in_another_process_is_not_swept(tmp_path):
    """The stale-temp sweep deleted a concurrent save's temporary folder mid-write."""
    import subprocess
    import sys
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        busy = tmp_path / f".b.tmp-{sleeper.pid}-xyz"
        busy.mkdir()
        stale = tmp_path / ".b.tmp-abc"  # a name without a process id, or of a process that ended
        stale.mkdir()
        save_bundle(_model(), tmp_path / "b")
        assert busy.is_dir() and not stale.exists()
    finally:
        sleeper.kill()


def test_a_subword_bundle_without_tokenizers_says_what_to_install(tmp_path, monkeypatch):
    """The message said 'not a valid tokenizer ... re-save it' of a valid file whose package was missing."""
    from rnnkit import LanguageModel
    from rnnkit.data import subword
    from rnnkit.recipes.lm import build_tokenizer
    tok = build_tokenizer("bpe", "the cat sat on the mat " * 50, 60)
    LanguageModel(vocab_size=tok.vocab_size, hidden_size=8, embedding_size=4).save(tmp_path / "m", tokenizer=tok)

    def missing():
        raise ImportError("SubwordTokenizer needs the Hugging Face 'tokenizers' package; "
                          "install it with: pip install 'rnnkit[text]'")

    monkeypatch.setattr(subword, "_hf", missing)
    with pytest.raises(CheckpointError, match=r"pip install 'rnnkit\[text\]'") as info:
        load_bundle(tmp_path / "m")
    assert "not a valid" not in str(info.value)


def test_saving_over_a_bundle_keeps_files_a_user_added(tmp_path):
    """The folder is replaced whole: a README.md put beside the bundle's files was deleted silently."""
    save_bundle(_model(), tmp_path / "b")
    (tmp_path / "b" / "README.md").write_text("notes")
    with pytest.raises(ValueError, match="also holds README.md; replacing it would delete them"):
        save_bundle(_model(hidden=6), tmp_path / "b")
    assert (tmp_path / "b" / "README.md").read_text() == "notes" and load_bundle(tmp_path / "b").config.hidden == 4
