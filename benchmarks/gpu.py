#!/usr/bin/env python3
"""The kernels issue on a GPU: exactness of the CUDA paths, the GPU rows side by side with cuDNN, variants
and a profile, in one run (a lent GPU's time is short, so everything is here).

    python benchmarks/gpu.py [--json gpu.json] [--quick] [--device cuda] [--seconds 400]

1. Exactness: each layer whose CUDA path is rnnkit's own (the Triton row passes of the layer-norm LSTM and
   GRU, the Triton scans of MinGRU/MinLSTM, sequential and chunked, the device-agnostic fused kernels for
   peephole, zoneout and IndRNN) on the device in float32 and float64, against the same weights on the
   CPU in float64 through the cells' loop (the readable reference): outputs, final states and the
   gradients of the input and of every parameter, as max |a - b| / max(1, max |b|). The Triton kernels
   that ran are read from the profiler (their names), so the table says which path was measured.
2. Speed: ``rnnkit.bench``'s two GPU target rows, then variants (the same layers with ``RNNKIT_TRITON=0``,
   the sequential scan, the other layers) against cuDNN, each a forward + backward training step ending
   in ``torch.cuda.synchronize()``, timed in turn with the alternative (median of the pair ratios).
3. CUDA graphs: the layer-norm LSTM, GRU and MinGRU rows again with both contenders replayed as CUDA graphs
   (``torch.cuda.make_graphed_callables``; replayed outputs and gradients checked against eager ones).
4. Profile: one training step of the layer-norm LSTM, MinGRU at T=4096 and cuDNN's LSTM under
   ``torch.profiler``: wall time, the device's kernel time and the number of launches, and the top
   kernels.

``--device cpu --quick`` runs the same code on the CPU with tiny shapes (a check that the script runs;
tests/test_bench.py does that). Results: printed, and as JSON with ``--json`` (written after every section).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import pathlib
import platform
import time
import traceback

import torch

import rnnkit
from rnnkit import bench
from rnnkit.kernels import triton_scan

_DEADLINE = [float("inf")]
SECTIONS = ("exactness", "speed", "graphs", "profile")


@contextlib.contextmanager
def env(**values):
    """Environment variables for the calls inside (rnnkit reads RNNKIT_TRITON at each call)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def unfused_mingru():
    """MinGRU's gate math in torch around the generic chunked scan (instead of inside the kernels)."""
    triton_scan.FUSED_MINGRU = False
    try:
        yield
    finally:
        triton_scan.FUSED_MINGRU = True


@contextlib.contextmanager
def sequential_scan():
    """The Triton scan's single sequential pass at every length (instead of the chunked passes)."""
    saved = triton_scan.CHUNKED_MIN_T
    triton_scan.CHUNKED_MIN_T = 1 << 62
    try:
        yield
    finally:
        triton_scan.CHUNKED_MIN_T = saved


def describe(device: str) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": device}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, multiprocessors=p.multi_processor_count, memory_gib=round(p.total_memory / 2 ** 30),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def _kernel_names(prof) -> list[str]:
    names = set()
    for e in prof.key_averages():
        if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA or "row" in e.key or "scan" in e.key \
                or e.key.startswith(("chunk_", "gru_")):
            names.add(e.key)
    return sorted(n for n in names if any(k in n for k in ("fwd_row", "bwd_row", "scan_", "chunk_", "gru_")))


def _profiled(fn, device: str):
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
    return out, prof


def _errors(got, ref) -> float:
    worst = 0.0
    for u, v in zip(got, ref):
        if u is None or v is None:
            if (u if v is None else v) is not None and (u if v is None else v).abs().max() > 0:
                return float("inf")
            continue
        if u.numel():
            u = u.detach().to("cpu", torch.float64)
            worst = max(worst, (u - v).abs().max().item() / max(1.0, v.abs().max().item()))
    return worst


def _run(layer, x, h0, lengths, gy_seed=1):
    """Outputs, final state parts and the gradients of x, h0 and every parameter."""
    x = x.detach().requires_grad_()
    h0 = [h.detach().requires_grad_() for h in h0]
    state = h0[0] if len(h0) == 1 else tuple(h0)
    y, hn = layer(x, state, lengths=lengths)
    parts = list(hn) if isinstance(hn, tuple) else [hn]
    g = torch.Generator().manual_seed(gy_seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t)).sum() for t in [y, *parts])
    params = list(layer.parameters())
    grads = torch.autograd.grad(loss, [x, *h0, *params], allow_unused=True)
    return [y, *parts], list(grads)


def _cases(quick: bool):
    B, I, H = (3, 5, 12) if quick else (5, 12, 50)
    T, L = (9, 20) if quick else (37, 300)
    lens = [T, T // 2, 1, T - 3, 2][:B]
    return [
        ("LayerNormLSTM", rnnkit.LSTM, dict(layer_norm=True), T, None),
        ("LayerNormLSTM 2 layers bidirectional, lengths", rnnkit.LSTM,
         dict(layer_norm=True, num_layers=2, bidirectional=True), T, lens),
        ("LayerNormLSTM zoneout=0.2 (eval)", rnnkit.LSTM, dict(layer_norm=True, zoneout=0.2), T, None),
        ("LayerNormGRU", rnnkit.GRU, dict(layer_norm=True), T, None),
        ("LayerNormGRU 2 layers bidirectional, lengths", rnnkit.GRU,
         dict(layer_norm=True, num_layers=2, bidirectional=True), T, lens),
        ("LayerNormGRU zoneout=0.2 (eval)", rnnkit.GRU, dict(layer_norm=True, zoneout=0.2), T, None),
        ("MinGRU (sequential scan)", rnnkit.MinGRU, {}, T, None),
        ("MinGRU (chunked scan, gates in the kernels)", rnnkit.MinGRU, {}, L, None),
        ("MinGRU 2 layers bidirectional, lengths (chunked, gates in the kernels)", rnnkit.MinGRU,
         dict(num_layers=2, bidirectional=True), L, [L, L // 3, 1, L - 7, 5][:B]),
        ("MinLSTM (chunked scan), lengths", rnnkit.MinLSTM, {}, L, [L, 2, L // 2, 17, L - 1][:B]),
        ("LSTM peephole (fused)", rnnkit.LSTM, dict(peephole=True), T, lens),
        ("LSTM zoneout=0.2 (eval, fused)", rnnkit.LSTM, dict(zoneout=0.2), T, None),
        ("GRU with lengths", rnnkit.GRU, {}, T, lens),
        ("IndRNN (fused)", rnnkit.IndRNN, {}, T, lens),
    ], B, I, H


def exactness(device: str, quick: bool) -> list[dict]:
    cases, B, I, H = _cases(quick)
    rows = []
    for name, cls, kw, T, lens in cases:
        if time.monotonic() > _DEADLINE[0]:
            rows.append({"case": name, "skipped": "time budget"})
            continue
        try:
            torch.manual_seed(0)
            ref_layer = cls(I, H, batch_first=True, **kw).double().eval()
            cell = copy.deepcopy(ref_layer)
            cell.backend = "cell"
            x = torch.randn(B, T, I, dtype=torch.float64) * 2
            n = ref_layer.num_layers * ref_layer.num_directions
            nparts = 2 if cls is rnnkit.LSTM else 1
            h0 = [torch.randn(n, B, H, dtype=torch.float64) * 0.5 for _ in range(nparts)]
            lengths = None if lens is None else torch.tensor(lens)
            ref = _run(cell, x, h0, lengths)
            row = {"case": name, "shape": f"B={B} T={T} I={I} H={H}"}
            for dt in (torch.float32, torch.float64):
                layer = copy.deepcopy(ref_layer).to(device=device, dtype=dt)
                (got, prof) = _profiled(lambda: _run(layer, x.to(device, dt), [h.to(device, dt) for h in h0],
                                                     lengths), device)
                tag = "f32" if dt == torch.float32 else "f64"
                row[f"{tag}_values"] = _errors(got[0], ref[0])
                row[f"{tag}_grads"] = _errors(got[1], ref[1])
                row[f"{tag}_kernels"] = _kernel_names(prof)
            row["ok"] = (row["f32_values"] <= 1e-4 and row["f32_grads"] <= 1e-3 and row["f64_values"] <= 1e-10
                         and row["f64_grads"] <= 1e-9)
        except Exception as exc:  # one case's failure must not hide the others
            row = {"case": name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        rows.append(row)
        print(row if "traceback" not in row else {k: v for k, v in row.items()}, flush=True)
    return rows


def _with(fn, ctx_factory):
    def run():
        with ctx_factory():
            fn()
    return run


def speed(device: str, quick: bool, repeats: int) -> list[bench.Row]:
    sync = torch.cuda.synchronize if device == "cuda" else None
    B, T, I, H, LB, LT = (4, 32, 8, 16, 2, 600) if quick else (32, 256, 64, 256, 8, 4096)
    long_rep = 1 if quick else 3
    torch.manual_seed(0)
    rows = bench._device_rows(device, B, T, I, H, LB, LT, repeats, sync)  # the two target rows
    x = torch.randn(B, T, I, device=device)
    xl = torch.randn(LB, LT, I, device=device)
    shape, lshape = f"B={B} T={T} I={I} H={H}", f"B={LB} T={LT} I={I} H={H}"
    lstm = torch.nn.LSTM(I, H, batch_first=True).to(device)
    gru = torch.nn.GRU(I, H, batch_first=True).to(device)
    step = lambda m, inp=x, **kw: bench._train_step(m.to(device), inp, sync, **kw)  # noqa: E731
    no_triton = lambda: env(RNNKIT_TRITON="0")  # noqa: E731
    cases = [
        ("LayerNormLSTM, RNNKIT_TRITON=0 (torch-op steps) vs torch.nn.LSTM", shape,
         _with(step(rnnkit.LSTM(I, H, batch_first=True, layer_norm=True)), no_triton), step(lstm), repeats),
        ("LayerNormGRU (Triton rows) vs torch.nn.GRU", shape,
         step(rnnkit.GRU(I, H, batch_first=True, layer_norm=True)), step(gru), repeats),
        ("LayerNormGRU, RNNKIT_TRITON=0 vs torch.nn.GRU", shape,
         _with(step(rnnkit.GRU(I, H, batch_first=True, layer_norm=True)), no_triton), step(gru), repeats),
        ("rnnkit.LSTM (auto) vs torch.nn.LSTM", shape, step(rnnkit.LSTM(I, H, batch_first=True)), step(lstm), repeats),
        ("rnnkit.GRU (auto) vs torch.nn.GRU", shape, step(rnnkit.GRU(I, H, batch_first=True)), step(gru), repeats),
        ("bidirectional rnnkit.LSTM with lengths vs torch.nn.LSTM padded", shape + " U[T/4, T]",
         step(rnnkit.LSTM(I, H, batch_first=True, bidirectional=True),
              lengths=torch.randint(T // 4, T + 1, (B,), generator=torch.Generator().manual_seed(0))),
         step(torch.nn.LSTM(I, H, batch_first=True, bidirectional=True)), repeats),
        ("LSTM peephole (fused) vs torch.nn.LSTM", shape, step(rnnkit.LSTM(I, H, batch_first=True, peephole=True)),
         step(lstm), repeats),
        ("LSTM zoneout=0.1, training (fused) vs torch.nn.LSTM", shape,
         step(rnnkit.LSTM(I, H, batch_first=True, zoneout=0.1)), step(lstm), repeats),
        ("IndRNN (fused) vs torch.nn.LSTM", shape, step(rnnkit.IndRNN(I, H, batch_first=True)), step(lstm), repeats),
        ("MinGRU, sequential Triton scan vs torch.nn.GRU", lshape,
         _with(step(rnnkit.MinGRU(I, H, batch_first=True), xl), sequential_scan), step(gru, xl), long_rep),
        ("MinGRU, chunked Triton scan with the gate math in torch vs torch.nn.GRU", lshape,
         _with(step(rnnkit.MinGRU(I, H, batch_first=True), xl), unfused_mingru), step(gru, xl), long_rep),
        ("MinGRU, RNNKIT_TRITON=0 (chunked torch scan) vs torch.nn.GRU", lshape,
         _with(step(rnnkit.MinGRU(I, H, batch_first=True), xl), no_triton), step(gru, xl), long_rep),
        ("MinLSTM (Triton scan) vs torch.nn.LSTM", lshape, step(rnnkit.MinLSTM(I, H, batch_first=True), xl),
         step(lstm, xl), long_rep),
    ]
    for name, sh, a, b, rep in cases:
        if time.monotonic() > _DEADLINE[0]:
            rows.append(bench.Row(name, sh, None, None, None, "information", None, "skipped: time budget"))
            continue
        try:
            rows.append(bench._row(name, sh, a, b, rep, None))
        except Exception as exc:
            rows.append(bench.Row(name, sh, None, None, None, "information", None,
                                  f"failed: {type(exc).__name__}: {str(exc)[:300]}"))
        print(rows[-1], flush=True)
    return rows


def _graphed(module, x):
    """``module`` (on the device) under ``torch.cuda.make_graphed_callables``: its forward and backward
    replayed as CUDA graphs (one launch each instead of one per kernel). Returns the graphed callable
    and the largest difference of its outputs and parameter gradients from the eager module's."""
    def outputs_and_grads(fn):
        module.zero_grad(set_to_none=True)
        y, state = fn(x)
        parts = [y, *(state if isinstance(state, tuple) else (state,))]
        sum((p * (k + 1)).sum() for k, p in enumerate(parts)).backward()
        return [p.detach().clone() for p in parts] + [q.grad.detach().clone() for q in module.parameters()]

    eager = outputs_and_grads(module)
    graphed = torch.cuda.make_graphed_callables(module, (x,))
    replay = outputs_and_grads(graphed)
    return graphed, max((u - v).abs().max().item() / max(1.0, v.abs().max().item()) for u, v in zip(replay, eager))


def graphs(device: str, quick: bool, repeats: int) -> list[dict]:
    """The GPU rows with both contenders replayed as CUDA graphs (``torch.cuda.make_graphed_callables``),
    which removes the per-kernel launch cost that bounds both on this machine, and the rnnkit layers
    graphed against the plain cuDNN calls the issue's rows name."""
    if device != "cuda":
        return [{"skipped": "CUDA graphs need a CUDA device"}]
    B, T, I, H, LB, LT = (4, 32, 8, 16, 2, 600) if quick else (32, 256, 64, 256, 8, 4096)
    sync = torch.cuda.synchronize
    out = []
    cases = [("LayerNormLSTM", lambda: rnnkit.LSTM(I, H, batch_first=True, layer_norm=True),
              lambda: torch.nn.LSTM(I, H, batch_first=True), (B, T, I), repeats, 1.3),
             ("LayerNormGRU", lambda: rnnkit.GRU(I, H, batch_first=True, layer_norm=True),
              lambda: torch.nn.GRU(I, H, batch_first=True), (B, T, I), repeats, None),
             ("MinGRU", lambda: rnnkit.MinGRU(I, H, batch_first=True), lambda: torch.nn.GRU(I, H, batch_first=True),
              (LB, LT, I), 3, 0.02)]
    for name, make, make_ref, shp, rep, bound in cases:
        if time.monotonic() > _DEADLINE[0]:
            out.append({"case": name, "skipped": "time budget"})
            continue
        row = {"case": name, "shape": "B={} T={} I={}".format(*shp) + f" H={H}"}
        try:
            torch.manual_seed(0)
            x = torch.randn(*shp, device=device)
            ours, ref = make().to(device), make_ref().to(device)
            g_ours, row["graph_vs_eager_rnnkit"] = _graphed(ours, x)
            g_ref, row["graph_vs_eager_torch"] = _graphed(ref, x)

            def step(module, fn):
                def run():
                    module.zero_grad(set_to_none=True)
                    y, _ = fn(x)
                    y.sum().backward()
                    sync()
                return run
            both = bench._row(f"{name} graphed vs torch.nn graphed", row["shape"], step(ours, g_ours),
                              step(ref, g_ref), rep, bound, faster=bound is not None and bound < 1)
            plain = bench._row(f"{name} graphed vs torch.nn (cuDNN, eager)", row["shape"], step(ours, g_ours),
                               step(ref, ref), rep, bound, faster=bound is not None and bound < 1)
            row["both_graphed"] = both.__dict__
            row["vs_eager_cudnn"] = plain.__dict__
        except Exception as exc:
            row.update(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:])
        out.append(row)
        print(row, flush=True)
    return out


def profile(device: str, quick: bool) -> list[dict]:
    B, T, I, H, LB, LT = (4, 32, 8, 16, 2, 600) if quick else (32, 256, 64, 256, 8, 4096)
    out = []
    cases = [("LayerNormLSTM (Triton rows)", rnnkit.LSTM(I, H, batch_first=True, layer_norm=True), (B, T, I)),
             ("torch.nn.LSTM (cuDNN)", torch.nn.LSTM(I, H, batch_first=True), (B, T, I)),
             ("LayerNormGRU (Triton rows)", rnnkit.GRU(I, H, batch_first=True, layer_norm=True), (B, T, I)),
             ("MinGRU (Triton scan)", rnnkit.MinGRU(I, H, batch_first=True), (LB, LT, I)),
             ("torch.nn.GRU (cuDNN)", torch.nn.GRU(I, H, batch_first=True), (LB, LT, I))]
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    for name, m, shp in cases:
        if time.monotonic() > _DEADLINE[0]:
            break
        try:
            m = m.to(device)
            run = bench._train_step(m, torch.randn(*shp, device=device),
                                    torch.cuda.synchronize if device == "cuda" else None)
            run(); run()
            t0 = time.perf_counter(); run(); wall = time.perf_counter() - t0
            _, prof = _profiled(run, device)
            ka = prof.key_averages()
            kern = [e for e in ka if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
            dev_us = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) for e in kern)
            try:
                table = ka.table(sort_by=sort, row_limit=12)
            except Exception:
                table = ka.table(sort_by="self_cpu_time_total", row_limit=12)
            row = {"case": name, "shape": "B={} T={} I={}".format(*shp) + f" H={H}", "wall_ms": wall * 1e3,
                   "device_kernel_ms": dev_us / 1e3, "launches": sum(e.count for e in kern), "table": table}
        except Exception as exc:
            row = {"case": name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        out.append(row)
        print({k: v for k, v in row.items() if k != "table"}, flush=True)
        if "table" in row:
            print(row["table"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=pathlib.Path, default=None, help="write the results as JSON here (after "
                    "every section)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, to check the script runs")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu",
                    help="where to run (default: cuda when there is one)")
    ap.add_argument("--repeats", type=bench.positive(int), default=7, help="timed pairs per speed row")
    ap.add_argument("--seconds", type=bench.positive(float), default=float("inf"),
                    help="stop starting new cases after this long (the sections' remaining cases say skipped)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated, in order, some of: {', '.join(SECTIONS)}")
    args = ap.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:  # before anything runs: a typo at the end cost the sections before it
        raise ValueError(f"--sections: expected some of {', '.join(SECTIONS)}, got {args.sections!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device in this run")
    if args.json:
        args.json = bench.json_path(args.json)
    _DEADLINE[0] = time.monotonic() + args.seconds
    result: dict = {"machine": describe(args.device)}
    print(result["machine"], flush=True)
    for section in sections:
        t0 = time.monotonic()
        if section == "exactness":
            result["exactness"] = exactness(args.device, args.quick)
        elif section == "speed":
            rows = speed(args.device, args.quick, args.repeats)
            result["speed"] = [r.__dict__ for r in rows]
            print(bench.format_table(rows), flush=True)
        elif section == "profile":
            result["profile"] = profile(args.device, args.quick)
        elif section == "graphs":
            result["graphs"] = graphs(args.device, args.quick, args.repeats)
        result.setdefault("section_seconds", {})[section] = round(time.monotonic() - t0, 1)
        print(f"== {section}: {time.monotonic() - t0:.1f} s", flush=True)
        if args.json:
            bench.write_json(args.json, result)


if __name__ == "__main__":
    bench.run_script(main)
