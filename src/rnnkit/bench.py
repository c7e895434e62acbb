"""Speed benchmarks: rnnkit's layers against the real alternative, measured side by side.

Each row times two contenders in turn (A, B, A, B, ...) and reports the median of the per-pair ratios
``time(A) / time(B)``, which is robust to a shared machine's drift. ``run_speed`` returns the rows of
the kernels issue's targets table (plus informational rows); ``benchmarks/speed.py`` and
``rnnkit bench`` print them as a table and write JSON. Rows that need hardware this run does not have
(CUDA) are reported as "not measured", never guessed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

import rnnkit

__all__ = ["Row", "run_speed", "machine_description", "format_table", "to_json", "strict_json", "write_json",
           "json_path", "positive", "run_script"]


@dataclass(frozen=True)
class Row:
    name: str
    shape: str
    seconds_a: float | None
    seconds_b: float | None
    ratio: float | None  # time(A) / time(B): below 1 means rnnkit is faster; None when not measured
    target: str
    met: bool | None
    note: str = ""


def _train_step(module: torch.nn.Module, x: torch.Tensor, sync: Callable[[], None] | None = None,
                **kw) -> Callable[[], None]:
    """One forward + backward; ``sync`` (a device's synchronize) ends it, so that a timing covers the work."""
    def run() -> None:
        module.zero_grad(set_to_none=True)
        y, _ = module(x, **kw)
        y.sum().backward()
        if sync is not None:
            sync()
    return run


def _pair(a: Callable[[], None], b: Callable[[], None], repeats: int) -> tuple[float, float, float]:
    a(); b()  # warm-up
    ta, tb, ratios = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter(); a(); t1 = time.perf_counter(); b(); t2 = time.perf_counter()
        ta.append(t1 - t0); tb.append(t2 - t1); ratios.append((t1 - t0) / (t2 - t1))
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return med(ta), med(tb), med(ratios)


def _row(name: str, shape: str, a, b, repeats: int, bound: float | None, faster: bool = False,
         note: str = "") -> Row:
    """A measured row; ``bound`` is the target on ``time(A)/time(B)`` (at most), None for information."""
    ta, tb, r = _pair(a, b, repeats)
    if bound is None:
        return Row(name, shape, ta, tb, r, "information", None, note)
    target = f"<= {bound:g} (>= {1 / bound:g}x faster)" if faster else f"<= {bound:g}"
    return Row(name, shape, ta, tb, r, target, r <= bound, note)


def _layer_rows(B: int, T: int, I: int, H: int, repeats: int) -> list[Row]:
    """Forward + backward training steps at (B, T, I, H) against torch.nn."""
    x, shape, rows = torch.randn(B, T, I), f"B={B} T={T} I={I} H={H}", []
    for kind in ("LSTM", "GRU"):
        ln = getattr(rnnkit, kind)(I, H, batch_first=True, layer_norm=True)
        ref = getattr(torch.nn, kind)(I, H, batch_first=True)
        rows.append(_row(f"LayerNorm{kind} ({ln.select_backend()}) vs torch.nn.{kind}", shape,
                         _train_step(ln, x), _train_step(ref, x), repeats, 1.5))
    for kind in ("LSTM", "GRU"):
        rows.append(_row(f"rnnkit.{kind} (auto) vs torch.nn.{kind}", shape,
                         _train_step(getattr(rnnkit, kind)(I, H, batch_first=True), x),
                         _train_step(getattr(torch.nn, kind)(I, H, batch_first=True), x), repeats, 1.05))
    lengths = torch.randint(T // 4, T + 1, (B,), generator=torch.Generator().manual_seed(0))
    bi = rnnkit.LSTM(I, H, batch_first=True, bidirectional=True)
    rows.append(_row("bidirectional rnnkit.LSTM with lengths vs torch.nn.LSTM padded", shape + " U[T/4, T]",
                     _train_step(bi, x, lengths=lengths),
                     _train_step(torch.nn.LSTM(I, H, batch_first=True, bidirectional=True), x), repeats, 1.3))
    return rows


def _info_rows(B: int, T: int, I: int, H: int, repeats: int) -> list[Row]:
    """What else the kernels cover, and the cell path they replace, against torch.nn.LSTM."""
    x, shape, ref = torch.randn(B, T, I), f"B={B} T={T} I={I} H={H}", torch.nn.LSTM(I, H, batch_first=True)
    cases = [("LSTM peephole (fused, C++ loops)", rnnkit.LSTM(I, H, batch_first=True, peephole=True)),
             ("LSTM zoneout=0.1, training (fused, C++ loops)", rnnkit.LSTM(I, H, batch_first=True, zoneout=0.1)),
             ("LSTM recurrent_dropout=0.25, training (fused, C++ loops)",
              rnnkit.LSTM(I, H, batch_first=True, recurrent_dropout=0.25)),
             ("LayerNormLSTM zoneout=0.1, training (fused, C++ loops)",
              rnnkit.LSTM(I, H, batch_first=True, layer_norm=True, zoneout=0.1)),
             ("LayerNormLSTM on the old cell path", rnnkit.LSTM(I, H, batch_first=True, layer_norm=True,
                                                               backend="cell"))]
    rows = [_row(f"{name} vs torch.nn.LSTM", shape, _train_step(m, x), _train_step(ref, x), max(3, repeats // 2),
                 None) for name, m in cases]
    fused = rnnkit.IndRNN(I, H, batch_first=True)
    loop = rnnkit.IndRNN(I, H, batch_first=True, backend="cell")
    rows.append(_row(f"IndRNN ({fused.select_backend()}) vs the same IndRNN on the cell path", shape,
                     _train_step(fused, x), _train_step(loop, x), max(3, repeats // 2), None))
    return rows


def _single_thread_rows(B: int, T: int, I: int, H: int, repeats: int) -> list[Row]:
    """The layer-norm rows with both contenders on one thread: kernel efficiency without contention."""
    saved, rows = torch.get_num_threads(), []
    torch.set_num_threads(1)
    try:
        x, shape = torch.randn(B, T, I), f"B={B} T={T} I={I} H={H}"
        for kind in ("LSTM", "GRU"):
            rows.append(_row(f"LayerNorm{kind} vs torch.nn.{kind}, 1 thread each", shape,
                             _train_step(getattr(rnnkit, kind)(I, H, batch_first=True, layer_norm=True), x),
                             _train_step(getattr(torch.nn, kind)(I, H, batch_first=True), x), repeats, None))
    finally:
        torch.set_num_threads(saved)
    return rows


def _long_rows(B: int, T: int, I: int, H: int, repeats: int) -> list[Row]:
    """MinGRU's target row, then MinLSTM against torch's LSTM (information) on the same long batch."""
    x, shape = torch.randn(B, T, I), f"B={B} T={T} I={I} H={H}"
    return [_row("MinGRU (scan) vs torch.nn.GRU", shape, _train_step(rnnkit.MinGRU(I, H, batch_first=True), x),
                 _train_step(torch.nn.GRU(I, H, batch_first=True), x), repeats, 0.1, faster=True),
            _row("MinLSTM (scan) vs torch.nn.LSTM", shape, _train_step(rnnkit.MinLSTM(I, H, batch_first=True), x),
                 _train_step(torch.nn.LSTM(I, H, batch_first=True), x), repeats, None)]


def _step_row(I: int, H: int, repeats: int, steps: int = 500) -> Row:
    """Streaming: ``layer.step`` at B=1 in eval mode under no_grad against an eager ``LSTMCell`` call."""
    layer, cell = rnnkit.LSTM(I, H, batch_first=True).eval(), torch.nn.LSTMCell(I, H).eval()
    x1, st = torch.randn(1, I), layer.init_state(1)
    hc = (torch.zeros(1, H), torch.zeros(1, H))
    return _row("streaming rnnkit.LSTM.step vs torch.nn.LSTMCell (eval, no_grad)", f"B=1 I={I} H={H}, "
                f"{steps} calls", _no_grad_calls(lambda: layer.step(x1, st), steps),
                _no_grad_calls(lambda: cell(x1, hc), steps), repeats, 0.4)


def _no_grad_calls(fn: Callable[[], object], steps: int) -> Callable[[], None]:
    """A timed body: ``steps`` calls of ``fn`` under no_grad."""
    def run() -> None:
        with torch.no_grad():
            for _ in range(steps):
                fn()
    return run


def _one_step_rows(I: int, H: int, repeats: int, steps: int = 500) -> list[Row]:
    """Information: the one-step path of the layer-norm layers (``step``) against their cells' own eager
    equations (what a hand-written streaming loop runs), and a one-token ``forward`` (generation) against
    torch.nn.LSTM's; B=1, eval, no_grad."""
    x1, xs, rows = torch.randn(1, I), torch.randn(1, 1, I), []
    loop = lambda fn: _no_grad_calls(fn, steps)  # noqa: E731
    for kind in ("LSTM", "GRU"):
        layer = getattr(rnnkit, kind)(I, H, batch_first=True, layer_norm=True).eval()
        cell, st = layer.cells()[0], layer.init_state(1)
        one = type(st)(*(p[0] for p in st)) if isinstance(st, tuple) else st[0]
        rows.append(_row(f"streaming LayerNorm{kind}.step vs its cell's eager equations (eval, no_grad)",
                         f"B=1 I={I} H={H}, {steps} calls", loop(lambda: layer.step(x1, st)),
                         loop(lambda: cell.recurrence(cell.project_input(x1), one)), repeats, None))
    layer, ref = rnnkit.LSTM(I, H, batch_first=True).eval(), torch.nn.LSTM(I, H, batch_first=True).eval()
    st = layer.init_state(1)
    rows.append(_row("one-token forward (T=1) of rnnkit.LSTM vs torch.nn.LSTM (eval, no_grad)",
                     f"B=1 I={I} H={H}, {steps} calls", loop(lambda: layer(xs, st)), loop(lambda: ref(xs, tuple(st))),
                     repeats, None))
    return rows


_GPU_ROWS = ("LayerNormLSTM on CUDA vs torch.nn.LSTM (cuDNN)", "MinGRU scan on CUDA vs torch.nn.GRU (cuDNN)")


def _device_rows(device: str, B: int, T: int, I: int, H: int, long_B: int, long_T: int, repeats: int,
                 sync: Callable[[], None] | None) -> list[Row]:
    """The GPU targets on ``device``: the layer-norm LSTM (Triton row passes on CUDA) against torch's
    LSTM (cuDNN there), ``<= 1.3``; MinGRU's scan (Triton) against torch's GRU at T=4096, ``>= 50x``
    faster. Every call ends with ``sync``, so that the times cover the device's work."""
    x, shape = torch.randn(B, T, I, device=device), f"B={B} T={T} I={I} H={H}"
    ln = rnnkit.LSTM(I, H, batch_first=True, layer_norm=True).to(device)
    rows = [_row(_GPU_ROWS[0], shape, _train_step(ln, x, sync), _train_step(
        torch.nn.LSTM(I, H, batch_first=True).to(device), x, sync), repeats, 1.3)]
    xl = torch.randn(long_B, long_T, I, device=device)
    rows.append(_row(_GPU_ROWS[1], f"B={long_B} T={long_T} I={I} H={H}",
                     _train_step(rnnkit.MinGRU(I, H, batch_first=True).to(device), xl, sync),
                     _train_step(torch.nn.GRU(I, H, batch_first=True).to(device), xl, sync), repeats, 0.02,
                     faster=True))
    return rows


def _gpu_rows(B: int, T: int, I: int, H: int, long_B: int, long_T: int, repeats: int) -> list[Row]:
    if not torch.cuda.is_available():
        return [Row(name, "-", None, None, None, "-", None, "not measured: no CUDA device in this run")
                for name in _GPU_ROWS]
    return _device_rows("cuda", B, T, I, H, long_B, long_T, repeats, torch.cuda.synchronize)


def run_speed(B: int = 32, T: int = 256, I: int = 64, H: int = 256, repeats: int = 7,
              quick: bool = False) -> list[Row]:
    """Every row of the kernels issue's targets table, then informational rows and the GPU rows."""
    long_B, long_T, long_repeats = 8, 4096, 3
    if quick:
        B, T, I, H, repeats, long_B, long_T, long_repeats = 4, 32, 8, 16, 3, 2, 64, 3
    from rnnkit.kernels import _cpp
    _cpp.ops()  # build or load the optional C++ loops before anything is timed
    torch.manual_seed(0)
    rows = _layer_rows(B, T, I, H, repeats)
    long_rows = _long_rows(long_B, long_T, I, H, long_repeats)
    rows += [long_rows[0], _step_row(I, H, repeats, steps=50 if quick else 500), long_rows[1]]
    rows += _info_rows(B, T, I, H, repeats) + _single_thread_rows(B, T, I, H, repeats)
    rows += _one_step_rows(I, H, repeats, steps=50 if quick else 500)
    return rows + _gpu_rows(B, T, I, H, long_B, long_T, long_repeats)


def machine_description(threads: int | None = None) -> str:
    """CPU model, the torch threads used (``threads``, default torch's current setting), torch version
    and the load when measured, for the tables."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", 1-min load average {:.1f} on {} CPUs".format(os.getloadavg()[0], os.cpu_count())
    threads = torch.get_num_threads() if threads is None else threads
    from rnnkit.kernels import _cpp
    # the vector width torch's kernels (and the C++ loops' wide paths) dispatch to on this CPU: two VMs
    # both called "AMD EPYC" differed in it, and the streaming step's figures with them
    cpu = f"{cpu} ({torch.backends.cpu.get_cpu_capability()})"
    return (f"{cpu}, {threads} thread{'s' if threads != 1 else ''}, torch {torch.__version__}, "
            f"Python {platform.python_version()}, C++ loops {_cpp.status()}{load}")


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def format_table(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    lines = ["| row | shape | rnnkit s | alternative s | ratio | target | met |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "—" if r.met is None else ("yes" if r.met else "no")
        ratio = r.note if r.ratio is None else f"{r.ratio:.2f}×"
        lines.append(f"| {r.name} | {r.shape} | {_fmt(r.seconds_a, '.4f')} | {_fmt(r.seconds_b, '.4f')} | "
                     f"{ratio} | {r.target} | {met} |")
    return "\n".join(lines)


def to_json(rows: list[Row], machine: str | None = None) -> str:
    """The rows as JSON with ``machine`` (the description printed with the table, taken before the
    run; by default one taken now, whose load average is the run's own)."""
    return strict_json({"machine": machine or machine_description(), "rows": [asdict(r) for r in rows]}, indent=2)


# -- shared by the scripts in benchmarks/ -----------------------------------------------------------
def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def strict_json(value, **kwargs) -> str:
    """``json.dumps`` with NaN and infinities as ``null``: ``NaN`` is not JSON, and strict parsers
    (``jq``, JavaScript's ``JSON.parse``) refuse a whole results line for it."""
    return json.dumps(_finite(value), allow_nan=False, **kwargs)


def write_json(path, text_or_value) -> Path:
    """Write strict JSON (a value, or text from :func:`to_json`) to ``path`` atomically. Check the path
    with :func:`json_path` before the run, so that a long benchmark does not end in an error."""
    from rnnkit._files import write_text_atomic
    text = text_or_value if isinstance(text_or_value, str) else strict_json(text_or_value, indent=2)
    return write_text_atomic(json_path(path), text.rstrip("\n") + "\n")


def json_path(path, what: str = "--json") -> Path:
    """The JSON file ``path`` names (``.json`` added, its folder created), or a one-line error."""
    from rnnkit._files import output_file
    return output_file(path, ".json", what)


def positive(kind: type = float):
    """An argparse ``type``: a number of ``kind`` greater than 0, or the parser's one-line error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def run_script(main: Callable[[], None]) -> None:
    """Run a benchmark script's ``main``: a user's mistake (a bad option value, a missing data set) is
    one line ``error: ...`` and exit status 2, as with the ``rnnkit`` command, not a traceback."""
    from rnnkit.errors import RnnkitError
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except (RnnkitError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
