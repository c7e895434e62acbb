"""rnnkit.bench: the speed suite runs every row (tiny shapes), and its GPU rows' code path measures on
whatever device it is given (here the CPU, as a stand-in for CUDA)."""

from __future__ import annotations

import json

import torch

from rnnkit import bench


def test_quick_suite_has_every_row_and_marks_gpu_rows_unmeasured_without_cuda():
    rows = bench.run_speed(quick=True, repeats=1)
    names = [r.name for r in rows]
    for part in ("LayerNormLSTM", "LayerNormGRU", "MinGRU (scan)", "MinLSTM (scan)", "streaming", "bidirectional",
                 "IndRNN (fused)", "LayerNormLSTM.step", "LayerNormGRU.step", "one-token forward"):
        assert any(part in n for n in names), part
    measured = [r for r in rows if r.ratio is not None]
    assert all(r.seconds_a > 0 and r.seconds_b > 0 for r in measured)
    gpu = [r for r in rows if r.name in bench._GPU_ROWS]
    assert len(gpu) == 2
    if not torch.cuda.is_available():
        assert all(r.ratio is None and "not measured" in r.note for r in gpu)
    table = bench.format_table(rows)
    assert table.count("\n") == len(rows) + 1
    assert len(json.loads(bench.to_json(rows))["rows"]) == len(rows)


def test_the_gpu_rows_measure_on_the_device_they_are_given():
    synced = []
    rows = bench._device_rows("cpu", 2, 8, 3, 4, 1, 16, 1, lambda: synced.append(1))
    assert [r.name for r in rows] == list(bench._GPU_ROWS)
    assert all(r.ratio is not None and r.ratio > 0 for r in rows)
    assert rows[0].target == "<= 1.3" and rows[1].target.startswith("<= 0.02 (>= 50x faster)")
    assert rows[1].met == (rows[1].ratio <= 0.02)
    assert len(synced) >= 8  # every timed call (and the warm-ups) ended with the device's synchronize


def test_results_json_is_strict_and_script_errors_are_one_line(tmp_path, capsys):
    """nab.py printed 'NaN' (not JSON: jq and JSON.parse refuse the line); `bench speed --json FOLDER`
    failed after the whole run; a missing data set ended benchmark scripts in a traceback."""
    import pytest

    from rnnkit.errors import DataError
    line = bench.strict_json({"delay": float("nan"), "rows": [float("inf"), 1.5]})
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) == \
        {"delay": None, "rows": [None, 1.5]}
    path = bench.write_json(tmp_path / "new" / "r", {"x": float("-inf")})
    assert path.name == "r.json" and json.loads(path.read_text()) == {"x": None}

    def missing():
        raise DataError("data set 'ptb': not found")
    with pytest.raises(SystemExit) as stop:
        bench.run_script(missing)
    assert stop.value.code == 2 and capsys.readouterr().err == "error: data set 'ptb': not found\n"
    from rnnkit.cli import main
    with pytest.raises(SystemExit) as stop:
        main(["bench", "speed", "--quick", "--json", str(tmp_path)])  # a folder: refused before the run
    assert stop.value.code != 0 and "is a folder" in capsys.readouterr().err


def test_gpu_script_runs_its_sections_on_the_cpu(tmp_path):
    """benchmarks/gpu.py (what measured the GPU rows on a lent H200) runs the same code on the CPU with tiny
    shapes: every exactness case compares against the float64 cells within its bounds, every speed row is
    measured, and the CUDA-graph section says it needs CUDA."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--quick", "--repeats", "1",
                           "--sections", "exactness,speed,graphs", "--json", str(out)], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert len(result["exactness"]) == 14 and all(r.get("ok") for r in result["exactness"]), result["exactness"]
    assert all(r["ratio"] and r["ratio"] > 0 for r in result["speed"]), result["speed"]
    assert result["graphs"] == [{"skipped": "CUDA graphs need a CUDA device"}]


def test_gpu_script_refuses_bad_options_before_running(capsys):
    """An unknown section at the end of --sections failed only after the sections before it had run
    (minutes of a lent GPU); --device took any string (torch's traceback)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for args, message in ((["--sections", "exactness,speeed"], "error: --sections: expected some of exactness, "
                                                              "speed, graphs, profile, got 'exactness,speeed'"),
                          (["--device", "tpu"], "argument --device: invalid choice: 'tpu'")):
        done = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", *args], cwd=root,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert "exactness" not in done.stdout  # nothing ran
