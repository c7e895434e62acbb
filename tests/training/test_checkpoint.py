"""Checkpoints: exact resume (in process and after SIGKILL), corruption refused, atomic writes."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import TinyLM, TinyRegressor, TokenStream, lm_data, reg_data

from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.training import Trainer, load_checkpoint, save_checkpoint
from rnnkit import _files
from rnnkit._files import sha256_file
from rnnkit.training.checkpoint import find_checkpoint

HERE = Path(__file__).parent


def _write(folder: Path, step: int) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_checkpoint(folder, model=model, trainer_state={"step": step, "epoch": 0, "batch": step, "chunk": 0},
                    optim_state={"optimizer": opt.state_dict(), "scheduler": None, "scaler": None},
                    rng={"rank0/torch": torch.get_rng_state()}, carry={"rank0/state": torch.zeros(1, 2, 4)})


def _rehash(folder: Path, name: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = sha256_file(folder / name)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_roundtrip_and_manifest(tmp_path):
    _write(tmp_path / "last", step=3)
    data = load_checkpoint(tmp_path / "last")
    assert data.trainer_state["step"] == 3 and data.carry["rank0/state"].shape == (1, 2, 4)
    manifest = json.loads((tmp_path / "last" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.pt", "rng.safetensors", "state.safetensors",
                                      "trainer_state.json"}
    assert not list(tmp_path.glob(".last*"))


def _flip_byte(folder: Path) -> None:
    raw = bytearray((folder / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(raw))


def _truncate_rehashed(folder: Path) -> None:
    (folder / "rng.safetensors").write_bytes((folder / "rng.safetensors").read_bytes()[:20])
    _rehash(folder, "rng.safetensors")


def _evil_pickle(folder: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {folder / 'pwned'}",))

    torch.save({"optimizer": Evil()}, folder / "optimizer.pt")
    _rehash(folder, "optimizer.pt")


@pytest.mark.parametrize("corrupt, message", [
    (_flip_byte, r"model\.safetensors: SHA-256 does not match"),
    (lambda f: (f / "optimizer.pt").unlink(), r"optimizer\.pt: missing file"),
    (_truncate_rehashed, r"rng\.safetensors: not a valid safetensors file"),
    (lambda f: (f / "manifest.json").write_text("{nope"), r"manifest\.json: not valid JSON"),
    (_evil_pickle, r"optimizer\.pt: holds an object other than tensors and plain containers \(posix\.system\)"),
])
def test_corrupt_checkpoint_refused(tmp_path, corrupt, message):
    _write(tmp_path / "last", step=1)
    corrupt(tmp_path / "last")
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(tmp_path / "last")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "last" / "pwned").exists()


def test_trainer_resume_refuses_corrupt_last(make_config):
    cfg = make_config(max_steps=2)
    Trainer(TinyLM(), cfg).fit(lm_data())
    _flip_byte(cfg.out_dir / "checkpoints" / "last")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Trainer(TinyLM(), cfg.replace(max_steps=4, resume=True)).fit(lm_data())


def test_crash_before_first_rename_keeps_old_last(tmp_path, monkeypatch):
    _write(tmp_path / "last", step=1)

    def crash(src, dst):
        raise OSError("simulated crash")

    monkeypatch.setattr(_files, "_replace", crash)
    with pytest.raises(OSError, match="simulated"):
        _write(tmp_path / "last", step=2)
    assert load_checkpoint(tmp_path / "last").trainer_state["step"] == 1
    assert not list(tmp_path.glob(".last.tmp-*"))


def test_crash_between_renames_recovers_previous(tmp_path, monkeypatch):
    _write(tmp_path / "last", step=1)
    real, calls = os.replace, []

    def crash_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("simulated crash")
        real(src, dst)

    monkeypatch.setattr(_files, "_replace", crash_second)
    with pytest.raises(OSError):
        _write(tmp_path / "last", step=2)
    assert not (tmp_path / "last").exists() and find_checkpoint(tmp_path / "last") == tmp_path / ".last.old"
    assert load_checkpoint(tmp_path / "last").trainer_state["step"] == 1
    monkeypatch.setattr(_files, "_replace", real)
    _write(tmp_path / "last", step=3)
    assert load_checkpoint(tmp_path / "last").trainer_state["step"] == 3 and not (tmp_path / ".last.old").exists()


def test_a_checkpoint_without_its_manifest_is_refused_not_replaced(make_config, caplog):
    cfg = make_config(max_steps=2)
    Trainer(TinyLM(), cfg).fit(lm_data())
    last = cfg.out_dir / "checkpoints" / "last"
    (last / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete checkpoint \\(no manifest.json"):
        Trainer(TinyLM(), cfg.replace(max_steps=4, resume=True)).fit(lm_data())
    assert (last / "model.safetensors").is_file()  # nothing was written over it
    with caplog.at_level("WARNING"):
        Trainer(TinyLM(), cfg.replace(max_steps=1)).fit(lm_data())  # resume=False: a new run, as asked
    assert "checkpoints are moved to" in caplog.text and (last / "manifest.json").is_file()


def test_resume_warns_that_the_checkpoints_optimizer_settings_win(make_config, caplog):
    cfg = make_config(max_steps=2)
    Trainer(TinyLM(), cfg).fit(lm_data())
    with caplog.at_level("WARNING"):
        trainer = Trainer(TinyLM(), cfg.replace(max_steps=3, resume=True, lr=0.05, weight_decay=0.3))
        trainer.fit(lm_data())
    assert "lr, weight_decay changed, but a resumed run continues the checkpoint's optimizer" in caplog.text
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.lr)


def test_resume_refuses_a_carried_state_of_other_streams(make_config):
    from rnnkit.data.text import LMStream
    ids = torch.arange(400) % 11
    cfg = make_config(max_steps=3)
    Trainer(TinyLM(), cfg).fit(LMStream(ids, 4, 10))
    with pytest.raises(CheckpointError, match="state of 4 streams over 1 process\\(es\\), this run reads 2 over 1"):
        Trainer(TinyLM(), cfg.replace(max_steps=5, resume=True)).fit(LMStream(ids, 2, 10))
    state = Trainer(TinyLM(), cfg.replace(max_steps=5, resume=True)).fit(LMStream(ids, 4, 10))
    assert state.step == 5


def test_a_state_class_is_never_imported_from_a_checkpoint(tmp_path, monkeypatch):
    """Importing runs a module's code: only classes of modules already loaded are rebuilt."""
    import importlib

    from rnnkit.training._tree import _namedtuple_class
    ran = tmp_path / "ran"
    (tmp_path / "rk_probe_state.py").write_text(
        f"import pathlib, typing\npathlib.Path({str(ran)!r}).touch()\n"
        "class State(typing.NamedTuple):\n    h: object\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "rk_probe_state", raising=False)
    assert _namedtuple_class("rk_probe_state:State") is None and not ran.exists()
    module = importlib.import_module("rk_probe_state")  # the model's own code imported it: then it is used
    assert _namedtuple_class("rk_probe_state:State") is module.State
    monkeypatch.delitem(sys.modules, "rk_probe_state")


def test_in_process_resume_is_exact_with_stateful_stream(make_config, tmp_path):
    stream = TokenStream(torch.arange(163) % 11, rows=4, steps=10)  # 4 batches, 8 steps per epoch
    val = TokenStream(torch.arange(97) % 7, rows=2, steps=8)
    opts = dict(tbptt_steps=5, deterministic=True, schedule="cosine", schedule_steps=9, warmup_steps=2,
                optimizer="adamw", weight_decay=0.1, max_grad_norm=1.0, eval_every=3, log_every=1)
    whole = TinyLM(dropout=0.2)
    part = copy.deepcopy(whole)
    Trainer(whole, make_config(name="whole", max_steps=9, **opts)).fit(stream, val)
    Trainer(part, make_config(name="part", max_steps=4, **opts)).fit(stream, val)
    saved = load_checkpoint(tmp_path / "runs" / "part" / "checkpoints" / "last").trainer_state
    assert (saved["epoch"], saved["batch"], saved["chunk"]) == (0, 2, 0) and saved["carry_spec"]["kind"] == "tensor"
    fresh = TinyLM(dropout=0.2)  # other initial weights: everything must come from the checkpoint
    state = Trainer(fresh, make_config(name="part", max_steps=9, resume=True, **opts)).fit(stream, val)
    assert state.step == 9
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), fresh.state_dict().values()))
    with open(tmp_path / "runs" / "part" / "metrics.csv", newline="") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh) if r["loss"]]
    assert steps == list(range(1, 10))


def _train_rows(run: Path) -> list[tuple[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return [(r["step"], r["loss"]) for r in csv.DictReader(fh) if r["loss"]]


@pytest.mark.slow
def test_resume_after_sigkill_is_exact(tmp_path):
    script, runs = str(HERE / "resume_script.py"), tmp_path / "runs"
    runs.mkdir()
    ref = subprocess.Popen([sys.executable, script, str(runs), "ref", "0", "0"])
    victim = subprocess.Popen([sys.executable, script, str(runs), "victim", "10", "0"])
    deadline = time.monotonic() + 120
    while not (runs / "victim.stalled").exists():
        assert victim.poll() is None and time.monotonic() < deadline, "the run to kill ended or hung"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(30) == -signal.SIGKILL
    saved = load_checkpoint(runs / "victim" / "checkpoints" / "last").trainer_state
    assert saved["step"] == 8 and (saved["epoch"], saved["batch"], saved["chunk"]) == (1, 2, 1)  # mid-epoch
    resumed = subprocess.run([sys.executable, script, str(runs), "victim", "0", "1"], timeout=120)
    assert resumed.returncode == 0 and ref.wait(120) == 0
    _assert_same_weights(runs / "ref", runs / "victim")
    assert _train_rows(runs / "ref") == _train_rows(runs / "victim")
    assert len(_train_rows(runs / "ref")) == 14
    shutil.rmtree(runs)


def test_resume_records_the_values_it_really_uses_and_warns_without_a_checkpoint(make_config, caplog):
    """The checkpoint's optimizer wins: config.toml and the next checkpoint said lr=0.05 anyway."""
    cfg = make_config(max_steps=2)
    Trainer(TinyLM(), cfg).fit(lm_data())
    Trainer(TinyLM(), cfg.replace(max_steps=3, resume=True, lr=0.05)).fit(lm_data())
    assert tomllib.loads((cfg.out_dir / "config.toml").read_text())["trainer"]["lr"] == cfg.lr
    assert load_checkpoint(cfg.out_dir / "checkpoints" / "last").trainer_state["config"]["lr"] == cfg.lr
    with caplog.at_level("WARNING"):
        Trainer(TinyLM(), cfg.replace(name="typo", max_steps=1, resume=True)).fit(lm_data())
    assert "resume: no checkpoint in" in caplog.text  # was an info line: a mistyped name passed silently


def test_resume_refuses_changed_recorded_inputs(make_config):
    """A recipe's [data] (say seq_len) indexes the stream the saved position points into."""
    cfg = make_config(max_steps=2)
    Trainer(TinyLM(), cfg, record={"data": {"seq_len": 8, "text": "a.txt"}}).fit(lm_data())
    assert tomllib.loads((cfg.out_dir / "config.toml").read_text())["data"] == {"seq_len": 8, "text": "a.txt"}
    with pytest.raises(ConfigError, match=r"\[data\] options changed .*seq_len 8 -> 16"):
        Trainer(TinyLM(), cfg.replace(max_steps=3, resume=True),
                record={"data": {"seq_len": 16, "text": "a.txt"}}).fit(lm_data())
    with pytest.raises(ConfigError, match=r"\[data\] options changed .*text 'a.txt' -> 'b.txt'"):
        # another text, another vocabulary: the cause is named, not the weights' size mismatch it makes
        Trainer(TinyLM(vocab=13), cfg.replace(max_steps=3, resume=True),
                record={"data": {"seq_len": 8, "text": "b.txt"}}).fit(lm_data())
    state = Trainer(TinyLM(), cfg.replace(max_steps=3, resume=True),
                    record={"data": {"seq_len": 8, "text": "a.txt"}}).fit(lm_data())
    assert state.step == 3


def test_resume_after_dropped_micro_batches_is_exact(make_config, tmp_path):
    """max_epochs with grad_accum_steps=3 over 10 batches drops one micro-batch at the end: its dropout
    draws were in the saved RNG state, so the resumed run's next steps drew other masks."""
    data = reg_data(n=40)
    opts = dict(grad_accum_steps=3, batch_size=4, deterministic=True, lr=1e-2)
    torch.manual_seed(0)
    whole = TinyRegressor(dropout=0.3)
    part = copy.deepcopy(whole)
    Trainer(whole, make_config(name="whole", max_epochs=3, **opts)).fit(data)
    Trainer(part, make_config(name="part", max_epochs=1, **opts)).fit(data)
    Trainer(part, make_config(name="part", max_epochs=3, resume=True, **opts)).fit(data)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), part.state_dict().values()))


class _StopAt:
    """A callback that stops the run with an exception at ``step`` (a kill before any checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, metrics) -> None:
        if trainer.state.step >= self.step:
            raise KeyboardInterrupt


def test_a_new_run_of_the_same_name_moves_the_earlier_runs_checkpoints_aside(make_config, caplog):
    """Left until the new run's first save, a kill before it let resume continue the earlier run
    (its weights and step) under the new run's config.toml and metrics; deleted, a run repeated by
    mistake without resume lost what it could have continued from: they are moved aside."""
    cfg = make_config(max_steps=4, eval_every=2, save_best=True)
    Trainer(TinyLM(), cfg).fit(lm_data(), lm_data(seed=1))
    checkpoints = cfg.out_dir / "checkpoints"
    assert (checkpoints / "last").is_dir() and (checkpoints / "best").is_dir()
    new = cfg.replace(max_steps=50, seed=5, save_best=False, eval_every=None, checkpoint_every=40)
    with caplog.at_level("WARNING"), pytest.raises(KeyboardInterrupt):
        Trainer(TinyLM(), new, callbacks=[_StopAt(3)]).fit(lm_data())
    assert "the earlier run's checkpoints are moved to" in caplog.text
    assert not (checkpoints / "last").exists() and not (checkpoints / "best").exists()
    aside = checkpoints / "earlier-run"
    assert load_checkpoint(aside / "last").trainer_state["step"] == 4 and (aside / "best").is_dir()
    state = Trainer(TinyLM(), new.replace(max_steps=2, resume=True)).fit(lm_data())
    assert state.step == 2  # a new start, not step 4 of the earlier run
    (checkpoints / "last").rename(checkpoints / "new-last")
    (aside / "last").rename(checkpoints / "last")  # moved back: the earlier run continues
    assert Trainer(TinyLM(), cfg.replace(max_steps=5, resume=True)).fit(lm_data(), lm_data(seed=1)).step == 5


def test_resume_without_a_checkpoint_moves_an_earlier_best_aside(make_config):
    cfg = make_config(max_steps=4, eval_every=2, save_best=True)
    Trainer(TinyLM(), cfg).fit(lm_data(), lm_data(seed=1))
    shutil.rmtree(cfg.out_dir / "checkpoints" / "last")
    Trainer(TinyLM(), cfg.replace(max_steps=2, resume=True, save_best=False, eval_every=None)).fit(lm_data())
    assert not (cfg.out_dir / "checkpoints" / "best").exists()
    assert (cfg.out_dir / "checkpoints" / "earlier-run" / "best").is_dir()


def test_a_file_where_the_last_checkpoint_belongs_is_named(make_config):
    cfg = make_config(max_steps=2, checkpoint_every=1)
    (cfg.out_dir / "checkpoints").mkdir(parents=True)
    (cfg.out_dir / "checkpoints" / "last").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="expected a checkpoint folder, found a file"):
        Trainer(TinyLM(), cfg.replace(resume=True)).fit(lm_data())
    Trainer(TinyLM(), cfg).fit(lm_data())  # a new run moves it aside (it saved once, then failed on .last.old)
    assert load_checkpoint(cfg.out_dir / "checkpoints" / "last").trainer_state["step"] == 2
    assert not (cfg.out_dir / "checkpoints" / ".last.old").exists()
    assert (cfg.out_dir / "checkpoints" / "earlier-run" / "last").is_file()


def test_the_recorded_configuration_of_a_resumed_run_starts_a_new_run(make_config):
    """config.toml is what users reuse (--config runs/NAME/config.toml --trainer.name OTHER)."""
    cfg = make_config(max_steps=2)
    Trainer(TinyLM(), cfg).fit(lm_data())
    Trainer(TinyLM(), cfg.replace(max_steps=3, resume=True)).fit(lm_data())
    record = tomllib.loads((cfg.out_dir / "config.toml").read_text())
    assert record["trainer"]["resume"] is False and record["runtime"]["resumed"] is True


def test_resume_inside_a_batch_refuses_another_tbptt_length(make_config):
    """The saved chunk index means another position under another chunk length: the rest of the batch
    was skipped (or repeated), logged at INFO only."""
    stream = TokenStream(torch.arange(163) % 11, rows=4, steps=10)
    cfg = make_config(max_steps=3, tbptt_steps=5)
    Trainer(TinyLM(), cfg).fit(stream)
    assert load_checkpoint(cfg.out_dir / "checkpoints" / "last").trainer_state["chunk"] == 1
    model = TinyLM()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match="stopped inside a batch, at chunk 1 of tbptt_steps=5.*tbptt_steps=8"):
        Trainer(model, cfg.replace(max_steps=5, tbptt_steps=8, resume=True)).fit(stream)
    assert all(torch.equal(a, b) for a, b in zip(before.values(), model.state_dict().values()))  # untouched
    assert Trainer(TinyLM(), cfg.replace(max_steps=5, resume=True)).fit(stream).step == 5
