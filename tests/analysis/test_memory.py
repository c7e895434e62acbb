"""Memory suite smoke tests on tiny settings (the real table is benchmarks/memory.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from rnnkit.analysis import memory
from rnnkit.analysis.memory import (TASKS, format_memory_tables, longest_solved, run_memory_suite, train_cell,
                                    write_report)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("task", ["adding", "copy", "selective_copy"])
def test_synthetic_tasks_shapes(task):
    t = TASKS[task]
    x, y = t.batch(3, 20, torch.Generator().manual_seed(0))
    assert x.shape[:2] == (3, 20 + t.extra_steps)
    model = memory.build_model("transformer", t, 20)
    out = model(x)
    assert t.loss(out, y).ndim == 0 and math.isfinite(t.score(out, y))


def test_digits_tasks():
    pytest.importorskip("sklearn")
    x, y = TASKS["digits_pixel"].eval_set(64)
    assert tuple(x.shape) == (180, 64, 1) and tuple(y.shape) == (180,) and 0 <= x.min() and x.max() <= 1
    x, _ = TASKS["digits_row"].test_set(8)
    assert tuple(x.shape) == (360, 8, 8)
    result = train_cell("digits_row", "gru", 8, 0.3, batch_size=8)
    assert result.metric == "test accuracy" and 0 <= result.value <= 1 and result.steps >= 1


def test_failure_skips_longer_lengths(tmp_path):
    seen = []
    results = run_memory_suite(["adding", "copy"], ["rnn", "mingru"], [8, 16], budget=0.2, progress=seen.append,
                               evaluations=2, batch_size=8)
    assert seen == results and {(r.task, r.model) for r in results} == {
        (t, m) for t in ("adding", "copy") for m in ("rnn", "mingru")}
    assert all(r.length == 8 and not r.solved and r.steps >= 1 and r.params > 0 for r in results)
    assert all(v is None for v in longest_solved(results).values())
    write_report(results, tmp_path / "m.json", tmp_path / "m.md", meta={"budget": 0.2})
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["meta"]["budget"] == 0.2 and len(data["results"]) == 4
    assert "| model | adding | copy |" in (tmp_path / "m.md").read_text()


def test_solved_moves_to_the_next_length(monkeypatch):
    easy = dataclasses.replace(TASKS["adding"], threshold=100.0)  # any MSE counts as solved
    monkeypatch.setitem(TASKS, "adding", easy)
    results = run_memory_suite(["adding"], ["gru"], {"adding": [6, 3]}, budget=5.0, clock="cpu", batch_size=4)
    assert [(r.length, r.solved) for r in results] == [(3, True), (6, True)]
    assert longest_solved(results) == {("adding", "gru"): 6}
    assert "| gru | 6 |" in format_memory_tables(results)


def test_errors():
    with pytest.raises(ValueError, match="unknown task or model"):
        run_memory_suite(["adding"], ["rnn", "mamba"], budget=1)
    with pytest.raises(ValueError, match="budget"):
        train_cell("adding", "rnn", 10, 0)
    with pytest.raises(ValueError, match="clock"):
        train_cell("adding", "rnn", 10, 1, clock="gpu")


def test_benchmark_script_writes_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("memory_benchmark", ROOT / "benchmarks" / "memory.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "memory.json"
    assert script.main(["--tasks", "adding", "--models", "lstm", "--lengths", "5", "--budget", "0.2",
                        "--json", str(out)]) == 0
    assert json.loads(out.read_text())["results"][0]["model"] == "lstm"
    assert out.with_suffix(".md").exists() and "adding" in capsys.readouterr().out


def test_shift_images_moves_each_image_by_at_most_one_pixel():
    from rnnkit.analysis._memory_tasks import shift_images

    images = torch.zeros(200, 8, 8)
    images[:, 3, 4] = 1.0  # one lit pixel per image
    out = shift_images(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and torch.equal(out.sum((1, 2)), images.sum((1, 2)))
    ys, xs = out.nonzero()[:, 1], out.nonzero()[:, 2]
    assert set(ys.tolist()) == {2, 3, 4} and set(xs.tolist()) == {3, 4, 5}  # every shift occurs, none larger
    edge = torch.zeros(1, 8, 8)
    edge[0, 0, 0] = 1.0
    shifted = torch.stack([shift_images(edge, torch.Generator().manual_seed(s))[0] for s in range(30)])
    assert shifted.sum((1, 2)).min() == 0  # a pixel pushed off the border is lost, not wrapped around
    assert shifted[:, 7, :].sum() == 0 and shifted[:, :, 7].sum() == 0


def test_every_tasks_lengths_are_checked_before_the_first_cell(monkeypatch, capsys):
    """selective_copy needs T >= 16: a length of 8 was refused only when its cells were reached, after the
    other tasks' cells had trained, and no table or JSON was written."""
    ran = []
    monkeypatch.setattr(memory, "train_cell", lambda *args, **kwargs: ran.append(args))
    with pytest.raises(ValueError, match="task selective_copy needs lengths >= 16, got 8"):
        run_memory_suite(["adding", "copy", "selective_copy"], ["rnn"], [8], budget=1)
    with pytest.raises(ValueError, match="task adding needs lengths >= 2"):
        run_memory_suite(["adding"], ["rnn"], {"adding": [1, 5]}, budget=1)
    with pytest.raises(SystemExit) as exit_:
        memory.main(["--tasks", "adding,selective_copy", "--models", "rnn", "--lengths", "8", "--budget", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--lengths: task selective_copy needs lengths >= 16" in err and not ran


@pytest.mark.parametrize("args, match", [(["--tasks", ","], "--tasks: expected comma-separated names"),
                                         (["--models", " , "], "--models: expected comma-separated names"),
                                         (["--lengths", ","], "--lengths: expected comma-separated whole numbers"),
                                         (["--lengths", "10,x"], "--lengths: expected comma-separated whole numbers")])
def test_an_empty_selection_is_refused_not_read_as_all(args, match, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(memory, "train_cell", lambda *a, **k: ran.append(a))
    with pytest.raises(SystemExit) as exit_:
        memory.main(["--tasks", "adding", "--models", "rnn", "--budget", "1", *args])
    assert exit_.value.code == 2 and match in capsys.readouterr().err and not ran
    with pytest.raises(ValueError, match="tasks is empty"):
        run_memory_suite([], ["rnn"], budget=1)


def test_report_is_strict_json_written_atomically(tmp_path, monkeypatch):
    import os

    result = memory.MemoryResult("adding", "rnn", 10, "MSE", math.nan, False, 3, 0.1, 50, 0.2)
    path = tmp_path / "m.json"
    write_report([result], path, tmp_path / "m.md", meta={"budget": math.inf})

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data["results"][0]["value"] is None and data["meta"]["budget"] is None
    # a crash mid-write leaves the previous file whole: the text goes to a temporary file renamed over it

    tables, replace = (tmp_path / "m.md").read_text(), os.replace

    def crash(src, dst):
        if Path(dst).suffix == suffix:
            raise OSError("disk full")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    for suffix in (".json", ".md"):
        with pytest.raises(OSError, match="disk full"):
            write_report([result._replace(value=1.0, model="gru")], path, tmp_path / "m.md")
        if suffix == ".json":
            assert json.loads(path.read_text(), parse_constant=refuse) == data
    assert (tmp_path / "m.md").read_text() == tables
    assert sorted(os.listdir(tmp_path)) == ["m.json", "m.md"]  # no temporary file left behind
