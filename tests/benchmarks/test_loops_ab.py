"""benchmarks/loops_ab.py: each layer is timed with both loops (the environment switch reaches the
kernel) and RNNKIT_CPP is restored afterwards."""

from __future__ import annotations

import importlib.util
import pathlib

from rnnkit.kernels import fused_lstm

PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "loops_ab.py"


def _script():
    spec = importlib.util.spec_from_file_location("loops_ab_script", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_time_both_loops_and_restore_the_setting(monkeypatch):
    script = _script()
    monkeypatch.setenv("RNNKIT_CPP", "auto")
    seen = []
    real = fused_lstm._step_loops
    monkeypatch.setattr(fused_lstm, "_step_loops", lambda s, x: seen.append(real(s, x) is not None) or real(s, x))
    rows = script.measure(2, 5, 3, 4, rounds=1, layers={"LSTM(peephole=True)": dict(peephole=True)})
    assert [r["layer"] for r in rows] == ["LSTM(peephole=True)"]
    assert all(rows[0][k] > 0 for k in ("cpp_ms", "python_ms", "torch_nn_lstm_ms", "cpp_over_python"))
    from rnnkit.kernels import _cpp
    built = _cpp.status() == "on"
    assert seen == [built, False] * 2  # warm-up and one round: the C++ loops (where built), then Python
    import os
    assert os.environ["RNNKIT_CPP"] == "auto"
