"""Long-range memory suite: how long a dependency each recurrence learns in a fixed CPU budget.

Tasks (:mod:`rnnkit.analysis._memory_tasks`): the adding problem (solved: MSE < 0.01, against 0.167 for
always answering 1), copy memory and selective copy (solved: > 99% accuracy on the recalled symbols),
and scikit-learn's 8x8 digits read pixel by pixel (64 steps) or row by row (8 steps) (solved: >= 97%
test accuracy). Contenders (:mod:`rnnkit.analysis._memory_models`): ``rnn`` (tanh), ``lstm``, ``gru``,
``indrnn``, ``mingru``, ``minlstm`` and a small causal ``transformer``.

Every (task, model, length) cell trains a fresh model with Adam (lr 1e-3, gradient norm clipped at 1,
batches of 64 fresh sequences) for at most ``budget`` seconds of wall-clock time, evaluating on a fixed
held-out set about 20 times along the way and stopping as soon as the bar is met. The digits, a finite
training set (augmented by shifts of up to one pixel), train for the whole budget with the learning rate
decayed linearly to zero over it
(budgeted training, Li, Yumer & Ramanan 2020) and report the test accuracy at the best point on a
validation split. Lengths run from short
to long; after a failure the longer lengths of that (task, model) are skipped. The budget counts
training and evaluation; the final evaluation may overrun it by its own duration.

Library entry point for ``rnnkit bench memory`` and ``benchmarks/memory.py``: :func:`run_memory_suite`,
then :func:`format_memory_tables` and :func:`write_report`.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import torch

from rnnkit.analysis._memory_models import MODELS, build_model
from rnnkit.analysis._memory_tasks import TASKS, MemoryTask

__all__ = ["MemoryResult", "TASKS", "MODELS", "train_cell", "check_lengths", "run_memory_suite", "longest_solved",
           "format_memory_tables", "write_report", "main"]

logger = logging.getLogger(__name__)

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


class MemoryResult(NamedTuple):
    """One cell of the suite: the best score seen (``value`` of ``metric``), whether it met the bar,
    optimizer ``steps`` and ``seconds`` used (of the budget's clock), and the model's parameter count."""

    task: str
    model: str
    length: int
    metric: str
    value: float
    solved: bool
    steps: int
    seconds: float
    params: int
    budget: float


def _evaluate(model: torch.nn.Module, task: MemoryTask, data: tuple) -> float:
    x, y = data
    chunk = max(8, 20_000 // max(1, x.shape[1]))  # bounds the Transformer's attention memory
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
    model.train()
    return task.score(out, y)


def _train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, task: MemoryTask, batch: tuple,
                max_grad_norm: float) -> None:
    x, y = batch
    loss = task.loss(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
    opt.step()


def train_cell(task: str | MemoryTask, model: str, length: int, budget: float, *, seed: int = 0,
               batch_size: int = 64, lr: float = 1e-3, max_grad_norm: float = 1.0,
               evaluations: int = 20, clock: str = "wall") -> MemoryResult:
    """Train ``model`` on ``task`` at ``length`` for at most ``budget`` seconds; see the module docstring.

    ``clock="wall"`` counts wall-clock seconds; ``"cpu"`` counts this process's CPU seconds (all its
    threads), which other programs sharing the machine do not eat into.
    """
    task = TASKS[task] if isinstance(task, str) else task
    if not budget > 0:
        raise ValueError(f"train_cell: budget must be > 0 seconds, got {budget!r}")
    if clock not in CLOCKS:
        raise ValueError(f"train_cell: clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    eval_data = task.eval_set(length)
    test_data = task.test_set(length) if task.test_set is not None else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(model, task, length)
    gen, opt = torch.Generator().manual_seed(seed + 1), torch.optim.Adam(net.parameters(), lr=lr)
    best = reported = math.inf if task.lower_is_better else -math.inf
    start = now()
    next_eval, steps = budget / evaluations, 0
    while True:
        _train_step(net, opt, task, task.batch(batch_size, length, gen), max_grad_norm)
        steps += 1
        elapsed = now() - start
        if test_data is not None:  # finite data, whole budget: budget-aware linear decay to zero
            opt.param_groups[0]["lr"] = lr * max(0.0, 1.0 - elapsed / budget)
        if elapsed >= next_eval or elapsed >= budget:
            value = _evaluate(net, task, eval_data)
            if (value < best) if task.lower_is_better else (value > best):
                best = value
                reported = value if test_data is None else _evaluate(net, task, test_data)
            next_eval = now() - start + budget / evaluations
            if (test_data is None and task.solved(best)) or now() - start >= budget:
                break
    params = sum(p.numel() for p in net.parameters())
    return MemoryResult(task.name, model, length, task.metric, float(reported), task.solved(reported), steps,
                        round(now() - start, 2), params, float(budget))


def _lengths_for(task: MemoryTask, lengths: Mapping[str, Sequence[int]] | Sequence[int] | None) -> list[int]:
    if task.extra_steps == 0 and task.name.startswith("digits"):
        return list(task.lengths)  # fixed by the data
    if lengths is None:
        return list(task.lengths)
    chosen = lengths.get(task.name, task.lengths) if isinstance(lengths, Mapping) else lengths
    return sorted(int(n) for n in chosen)


def check_lengths(tasks: Sequence[str], lengths: Mapping[str, Sequence[int]] | Sequence[int] | None,
                  what: str = "lengths") -> None:
    """Refuse, before any training, a length that one of ``tasks`` cannot take (shorter than its
    ``min_length``, e.g. selective copy's 16 symbols to recall), naming ``what`` and the task."""
    for name in tasks:
        task = TASKS[name]
        chosen = _lengths_for(task, lengths)
        if not chosen:
            raise ValueError(f"{what}: expected at least one length for task {name}, got none")
        short = [n for n in chosen if n < task.min_length]
        if short:
            raise ValueError(f"{what}: task {name} needs lengths >= {task.min_length}, got {short[0]}; "
                             f"drop {name} from the tasks or give longer lengths")


def run_memory_suite(tasks: Sequence[str] | None = None, models: Sequence[str] | None = None,
                     lengths: Mapping[str, Sequence[int]] | Sequence[int] | None = None, budget: float = 60.0, *,
                     seed: int = 0, threads: int | None = None,
                     progress: Callable[[MemoryResult], None] | None = None, **train_kwargs) -> list[MemoryResult]:
    """Run the suite; returns one :class:`MemoryResult` per cell that ran.

    ``tasks`` and ``models`` default to all (``TASKS``, ``MODELS``); ``lengths`` is one list for every
    length-swept task or a ``{task: lengths}`` dict (the digits tasks have fixed lengths). ``threads``
    sets ``torch.set_num_threads`` for the run (restored after); ``progress`` is called after each cell.
    """
    tasks = list(TASKS if tasks is None else tasks)
    models = list(MODELS if models is None else models)
    for what, names, known in (("tasks", tasks, TASKS), ("models", models, MODELS)):
        if not names:
            raise ValueError(f"run_memory_suite: {what} is empty; expected some of {', '.join(known)} "
                             "(None runs them all)")
    bad = [t for t in tasks if t not in TASKS] + [m for m in models if m not in MODELS]
    if bad:
        raise ValueError(f"unknown task or model {bad}; tasks: {', '.join(TASKS)}; models: {', '.join(MODELS)}")
    check_lengths(tasks, lengths)  # every cell's, before the first cell trains
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    results = []
    try:
        for name in tasks:
            task = TASKS[name]
            for model in models:
                for length in _lengths_for(task, lengths):
                    result = train_cell(task, model, length, budget, seed=seed, **train_kwargs)
                    logger.info("memory %s/%s T=%d: %s %.4g (%s) in %d steps, %.0f s", name, model, length,
                                result.metric, result.value, "solved" if result.solved else "not solved",
                                result.steps, result.seconds)
                    results.append(result)
                    if progress is not None:
                        progress(result)
                    if not result.solved:
                        break  # longer lengths are harder: skip them
    finally:
        torch.set_num_threads(saved_threads)
    return results


def longest_solved(results: Sequence[MemoryResult]) -> dict[tuple[str, str], int | None]:
    """``{(task, model): longest solved length or None}``."""
    best: dict[tuple[str, str], int | None] = {}
    for r in results:
        key = (r.task, r.model)
        best.setdefault(key, None)
        if r.solved and (best[key] is None or r.length > best[key]):
            best[key] = r.length
    return best


def _summary_cell(results: Sequence[MemoryResult], task: str, model: str) -> str:
    rows = [r for r in results if r.task == task and r.model == model]
    if not rows:
        return ""
    if task.startswith("digits"):
        r = rows[-1]
        return f"{100 * r.value:.1f}%" + (" ✓" if r.solved else "")
    solved = [r.length for r in rows if r.solved]
    failed = [r for r in rows if not r.solved]
    text = str(max(solved)) if solved else "none"
    if failed:
        f = failed[0]
        value = f"{f.value:.3g}" if f.metric == "MSE" else f"{100 * f.value:.1f}%"
        text += f" (T={f.length}: {value})"
    return text


def format_memory_tables(results: Sequence[MemoryResult]) -> str:
    """Markdown: longest solved length per (model, task) (digits: test accuracy), then every cell."""
    tasks = list(dict.fromkeys(r.task for r in results))
    models = list(dict.fromkeys(r.model for r in results))
    lines = ["| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    lines += [f"| {m} | " + " | ".join(_summary_cell(results, t, m) for t in tasks) + " |" for m in models]
    lines += ["", "| task | model | T | metric | value | solved | steps | seconds | params |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.task} | {r.model} | {r.length} | {r.metric} | {r.value:.4g} | {'yes' if r.solved else 'no'} | "
              f"{r.steps} | {r.seconds:.0f} | {r.params} |" for r in results]
    return "\n".join(lines)


def write_report(results: Sequence[MemoryResult], json_path: str | Path, md_path: str | Path | None = None,
                 meta: dict | None = None) -> None:
    """Write the results as strict JSON (``{"meta": ..., "results": [...]}``, NaN and infinities as
    ``null``) and the tables as Markdown, each file atomically (a reader never sees half of one)."""
    from rnnkit._files import write_text_atomic
    from rnnkit.bench import write_json

    payload = {"meta": meta or {}, "results": [r._asdict() for r in results]}
    write_json(json_path, payload)
    if md_path is not None:
        md_path = Path(md_path)
        md_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(md_path, format_memory_tables(results) + "\n")


_CLI_DOC = """Long-range memory table: the longest dependency each recurrence (and a small Transformer) learns in a
fixed budget per (task, model, length) cell. See rnnkit.analysis.memory for the rules.

    python benchmarks/memory.py --budget 300 --threads 2 --json benchmarks/results/memory.json
    python benchmarks/memory.py --tasks adding --models rnn,lstm,gru --lengths 100,200 --budget 60
    python benchmarks/memory.py --quick        # seconds: checks that every task and model runs

It prints one line per cell as it finishes, then the Markdown tables, and writes the JSON (and the
tables beside it as .md)."""


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _selection(ap: argparse.ArgumentParser, flag: str, text: str | None, known: Sequence[str]) -> list[str] | None:
    """The names a comma-separated option gives (``None``: not given, all); an empty list is refused."""
    names = _names(text)
    if names is not None and not names:
        ap.error(f"{flag}: expected comma-separated names, some of {','.join(known)}; got {text!r} "
                 f"(leave {flag} out for all)")
    return names


def main(argv: list[str] | None = None, prog: str = "rnnkit bench memory") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=_CLI_DOC,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", help=f"comma-separated, default all: {','.join(TASKS)}")
    ap.add_argument("--models", help=f"comma-separated, default all: {','.join(MODELS)}")
    ap.add_argument("--lengths", help="comma-separated lengths for the length-swept tasks (default per task)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of wall clock per cell (default 60; 1 with --quick)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="count the budget in wall-clock seconds (default) or this process's CPU seconds "
                         "(fairer on a machine shared with other jobs)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write results here (and tables as .md)")
    ap.add_argument("--quick", action="store_true", help="the shortest lengths, 1 s per cell unless --budget says")
    args = ap.parse_args(argv)
    from rnnkit._files import output_file
    from rnnkit.bench import machine_description
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads: expected a positive number of threads, got {args.threads}")
    if args.json is not None:  # checked before the hours of work, not after
        args.json = output_file(args.json, ".json", "--json")
        output_file(args.json.with_suffix(".md"), ".md", "--json's tables")
    tasks, models = _selection(ap, "--tasks", args.tasks, TASKS), _selection(ap, "--models", args.models, MODELS)
    lengths = None
    if args.lengths is not None:
        try:
            lengths = [int(n) for n in _names(args.lengths)]
        except ValueError:
            ap.error(f"--lengths: expected comma-separated whole numbers such as 100,200, got {args.lengths!r}")
        if not lengths:
            ap.error(f"--lengths: expected comma-separated whole numbers such as 100,200, got {args.lengths!r}")
    budget = args.budget if args.budget is not None else 1.0 if args.quick else 60.0
    if args.quick and lengths is None:
        lengths = {name: task.lengths[:1] for name, task in TASKS.items()}
    bad = [t for t in tasks or () if t not in TASKS] + [m for m in models or () if m not in MODELS]
    if not bad:  # (unknown names: run_memory_suite's own error)
        try:
            check_lengths(tasks or list(TASKS), lengths, "--lengths")  # before any cell trains
        except ValueError as exc:
            ap.error(str(exc))
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()

    def progress(r) -> None:
        print(f"{r.task:15s} {r.model:12s} T={r.length:<5d} {r.metric} {r.value:.4g} "
              f"{'solved' if r.solved else 'not solved'} ({r.steps} steps, {r.seconds:.0f} s)", flush=True)

    results = run_memory_suite(tasks, models, lengths, budget,
                               seed=args.seed, threads=args.threads, progress=progress, clock=args.clock)
    threads = torch.get_num_threads() if args.threads is None else args.threads
    machine = machine_description(threads)
    print(f"\nmachine: {machine}; budget {budget:g} {args.clock} s per cell; "
          f"total {time.perf_counter() - start:.0f} s\n")
    print(format_memory_tables(results))
    if args.json:
        meta = dict(machine=machine, budget=budget, clock=args.clock, seed=args.seed, threads=threads,
                    command=" ".join(sys.argv))
        write_report(results, args.json, args.json.with_suffix(".md"), meta)
    return 0
