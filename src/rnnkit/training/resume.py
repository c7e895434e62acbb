"""Between a :class:`~rnnkit.training.Trainer` and its checkpoints: what is saved, how it comes back.

Checkpoints are written only where no gradient is pending (right after an optimizer step or at an
epoch boundary), so the saved position ``(epoch, batch, chunk)``, the carried recurrent state,
the optimizer/scheduler state and the RNG states describe the same instant. RNG states and the
carried state are gathered from every process (rank 0 writes them all); on resume each process
takes its own, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from rnnkit.errors import CheckpointError, ConfigError
from rnnkit._files import load_weights, one_line
from rnnkit.training._rng import capture_rng, restore_rng
from rnnkit.training._tree import flatten_tree, unflatten_tree
from rnnkit.training.callbacks import TrainerState
from rnnkit.training.checkpoint import CheckpointData, find_checkpoint, load_checkpoint, save_checkpoint
from rnnkit.training.distributed import barrier, gather_tensors

if TYPE_CHECKING:
    from rnnkit.training.trainer import Trainer

__all__ = ["ResumePoint", "write_checkpoint", "resume_from", "restore_generators", "replace_earlier_run"]

log = logging.getLogger("rnnkit.training")
EARLIER_RUN = "earlier-run"  # checkpoints/earlier-run: an earlier run's checkpoints, moved aside by a new run


@dataclass(frozen=True)
class ResumePoint:
    """The next micro-batch to run and the state carried into it, taken when no gradient is pending."""

    epoch: int = 0
    batch: int = 0
    chunk: int = 0
    carry: Any = None


def _gather_by_rank(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{"rank<r>/<name>": tensor}`` for every process (a collective: every rank must call it)."""
    out: dict[str, Tensor] = {}
    for name in sorted(tensors):
        for rank, tensor in enumerate(gather_tensors(tensors[name])):
            out[f"rank{rank}/{name}"] = tensor
    return out


def _select_rank(tensors: dict[str, Tensor], rank: int, what: str) -> dict[str, Tensor]:
    """This rank's tensors; rank 0's (with a warning) if the checkpoint came from fewer processes."""
    for candidate in (rank, 0):
        prefix = f"rank{candidate}/"
        mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if mine or not tensors:
            if candidate != rank:
                log.warning("checkpoint has no %s for rank %d; using rank 0's", what, rank)
            return mine
    return {}


def write_checkpoint(trainer: Trainer, name: str = "last") -> Path:
    """Save ``trainer``'s checkpoint ``name`` (every rank calls this; rank 0 writes)."""
    point: ResumePoint = trainer._point
    carry, spec = flatten_tree(point.carry)
    rng, carry = _gather_by_rank(capture_rng()), _gather_by_rank(carry)
    folder = trainer.checkpoint_dir / name
    if trainer.env.is_main:
        state = {**trainer.state.to_dict(), "epoch": point.epoch, "batch": point.batch, "chunk": point.chunk,
                 "carry_spec": spec, "world_size": trainer.env.world_size, "streams": _streams(trainer),
                 "config": trainer.config.to_dict(), "record": trainer.record}
        optim = {"optimizer": trainer.optimizer.state_dict(),
                 "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
                 "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None}
        save_checkpoint(folder, model=trainer.model, trainer_state=state, optim_state=optim, rng=rng, carry=carry)
        log.debug("checkpoint %s written at step %d", folder, trainer.state.step)
    barrier()
    return folder


def _streams(trainer: Trainer) -> int | None:
    """The parallel streams of stateful training data (an LMStream's batch_size), else None."""
    data = getattr(trainer, "train_data", None)
    return getattr(data, "batch_size", None) if getattr(data, "stateful", False) else None


def _check_streams(trainer: Trainer, saved: dict[str, Any], carry: Any, path: Path) -> None:
    """A carried state fits only the streams and processes it was saved with: refuse another split
    in one line (the model would fail on the state's batch size deep inside)."""
    if carry is None:
        return
    was, now = (saved.get("streams"), saved.get("world_size", 1)), (_streams(trainer), trainer.env.world_size)
    if was[1] != now[1] or (None not in (was[0], now[0]) and was[0] != now[0]):
        raise CheckpointError(f"{path}: the checkpoint carries the recurrent state of {was[0]} streams over "
                              f"{was[1]} process(es), this run reads {now[0]} over {now[1]}; resume with the same "
                              "batch size and number of processes, or start a new run")


def _load_optim(trainer: Trainer, data: CheckpointData) -> None:
    saved = data.optim_state
    try:
        trainer.optimizer.load_state_dict(saved["optimizer"])
        for name in ("scheduler", "scaler"):
            target = getattr(trainer, name)
            if target is not None and saved.get(name) is not None:
                target.load_state_dict(saved[name])
            elif (target is None) != (saved.get(name) is None):
                log.warning("resume: the checkpoint's %s does not match this configuration; starting it fresh", name)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{data.path / 'optimizer.pt'}: does not fit this optimizer ({one_line(exc)})") from exc


_OPTIMIZER_OPTIONS = ("optimizer", "lr", "weight_decay", "betas", "eps",
                      "plateau_factor", "plateau_patience")  # restored with the optimizer and scheduler


def _changed(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return sorted(k for k in current if k in saved and saved[k] != current[k] and k != "resume")


def resume_from(trainer: Trainer) -> CheckpointData | None:
    """Load ``checkpoints/last`` into model, optimizer, scheduler and state; None if there is none.

    RNG states are returned inside the data and restored by :func:`restore_generators` at the very
    end of setup, so that nothing in between draws from them.
    """
    folder = find_checkpoint(trainer.checkpoint_dir / "last")
    if folder is None:  # a warning: a mistyped name must not pass for a resumed run
        log.warning("resume: no checkpoint in %s; starting a new run", trainer.checkpoint_dir)
        replace_earlier_run(trainer)  # a new run all the same: an earlier run's best is not this one's
        return None
    data = load_checkpoint(folder)
    saved = data.trainer_state
    # before the weights (the caller's model is left as it was): another text (say) gives another
    # vocabulary, whose size mismatch hid the cause
    _check_record(saved.get("record"), trainer.record, data.path)
    changed = _changed(saved.get("config", {}), trainer.config.to_dict())
    if "tbptt_steps" in changed and saved.get("chunk"):
        was, now = saved["config"]["tbptt_steps"], trainer.config.tbptt_steps
        raise ConfigError(f"resume: the checkpoint in {data.path} stopped inside a batch, at chunk {saved['chunk']} "
                          f"of tbptt_steps={was}; with tbptt_steps={now} the rest of that batch would be skipped "
                          f"or repeated: resume with tbptt_steps={was}, or start a new run")
    load_weights(trainer.model, data.weights_path, device=str(trainer.device))
    if getattr(trainer.model, "tokenizer", None) is None and (data.path / "tokenizer.json").is_file():
        from rnnkit.export.bundle import attach_tokenizer

        attach_tokenizer(trainer.model, data.path)
    _load_optim(trainer, data)
    if changed:
        log.info("resume: options changed since the checkpoint: %s", ", ".join(changed))
        kept = [k for k in changed if k in _OPTIMIZER_OPTIONS]
        if kept:  # the optimizer's and scheduler's saved state carries them
            log.warning("resume: %s changed, but a resumed run continues the checkpoint's optimizer and "
                        "schedule (recorded as such); start a new run (another name, or resume=False) to use "
                        "the new values", ", ".join(kept))
            # the run's record (config.toml, the next checkpoint) says what it really uses
            trainer.config = trainer.config.replace(**{k: saved["config"][k] for k in kept})
    trainer.state = TrainerState.from_dict(saved)
    try:
        carry = _select_rank(data.carry, trainer.env.rank, "carried state")
        carry = unflatten_tree(carry, saved.get("carry_spec", {"kind": "none"}), trainer.device)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{data.path / 'state.safetensors'}: does not match trainer_state.json ({exc})") from exc
    _check_streams(trainer, saved, carry, data.path)
    trainer._carry = carry
    trainer._point = ResumePoint(saved["epoch"], saved["batch"], saved["chunk"], carry)
    log.info("resumed from %s at step %d (epoch %d, batch %d)", folder, saved["step"], saved["epoch"], saved["batch"])
    return data


def _check_record(saved: Any, current: dict[str, Any], path: Path) -> None:
    """Refuse a resume whose recorded inputs (a recipe's ``[data]``) differ from the checkpoint's: the
    saved position (batch, chunk, carried state) indexes that stream. Checkpoints without a record
    (older ones, plain Trainer runs) are not checked."""
    if not isinstance(saved, dict) or not current:
        return
    for table, values in current.items():
        before = saved.get(table)
        if not isinstance(before, dict) or not isinstance(values, dict):
            continue
        diff = [f"{k} {before.get(k)!r} -> {values.get(k)!r}" for k in sorted(set(before) | set(values))
                if before.get(k) != values.get(k)]
        if diff:
            raise ConfigError(f"resume: the [{table}] options changed since the checkpoint in {path} "
                              f"({'; '.join(diff)}); a resumed run must read the same stream: restore them, "
                              "or start a new run (another name, or without --resume)")


def restore_generators(trainer: Trainer, data: CheckpointData) -> None:
    """Set this process's RNGs to the states saved with the checkpoint."""
    try:
        restore_rng(_select_rank(data.rng, trainer.env.rank, "RNG states"))
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{data.path / 'rng.safetensors'}: incomplete RNG states ({exc})") from exc


def replace_earlier_run(trainer: Trainer) -> None:
    """A new run (``resume=False``) in the folder of an earlier one: say so, and move the earlier run's
    checkpoints aside, to ``checkpoints/earlier-run/`` (which resume never reads; it replaces the one an
    even earlier run left). Left in place until the new run's first save, a kill before it let
    ``--resume`` continue the earlier run (its weights, seed and step) under the new run's config.toml
    and metrics, and a ``best`` the new run never wrote outlived it; deleted, a run repeated by mistake
    without ``--resume`` lost the checkpoints it could have continued from."""
    if not trainer.env.is_main:
        return None
    folder = trainer.checkpoint_dir
    earlier = [folder / name for name in ("last", "best", ".last.old", ".best.old")  # .old: a swap's leftover
               if (folder / name).exists() or (folder / name).is_symlink()]
    if not earlier:
        return None
    aside = folder / EARLIER_RUN
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside)
    elif aside.exists() or aside.is_symlink():
        aside.unlink()
    aside.mkdir()
    for path in earlier:
        path.rename(aside / path.name)  # a symbolic link moves as a link: what it points to stays
    log.warning("starting a new run in %s: the earlier run's checkpoints are moved to %s (resume=True, "
                "--resume on the command line, continues a run instead; move them back to continue it)",
                trainer.out_dir, aside)
    return None
    folder = trainer.checkpoint_dir
    earlier = [p for name in ("last", "best", ".last.old", ".best.old")  # .old: a swap's leftover
               for p in [folder / name] if p.exists() or p.is_symlink()]
    if earlier:
        log.warning("starting a new run in %s: the earlier run's checkpoints are removed (resume=True, --resume "
                    "on the command line, continues a run instead)", trainer.out_dir)
    for path in earlier:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return None
