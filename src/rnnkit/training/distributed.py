"""Running the same Trainer under ``torchrun``: environment, process group, collectives, launching.

``torchrun --nproc_per_node N train.py`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in every
process; :func:`detect_env` reads them and the trainer starts the process group (gloo on CPU, NCCL
on CUDA), wraps the model in DistributedDataParallel and lets only rank 0 write files. Every helper
here is a no-op in a single process, so code calling it needs no branches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from rnnkit.errors import ConfigError

__all__ = ["DistEnv", "detect_env", "init_process_group", "is_initialized", "all_reduce_sum", "union_names",
           "gather_tensors", "barrier", "launch", "torchrun_command"]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a distributed run (``world_size == 1`` when alone)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and logs (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def detect_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (as set by ``torchrun``); defaults to one process."""
    environ = os.environ if environ is None else environ
    values = {}
    for key, default in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)):
        raw = environ.get(key, str(default))
        try:
            values[key] = int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {key}: expected an integer, got {raw!r}") from None
    env = DistEnv(rank=values["RANK"], local_rank=values["LOCAL_RANK"], world_size=values["WORLD_SIZE"])
    if env.world_size < 1 or not 0 <= env.rank < env.world_size:
        raise ConfigError(f"distributed environment: expected 0 <= RANK < WORLD_SIZE, got RANK={env.rank} "
                          f"WORLD_SIZE={env.world_size}")
    return env


def init_process_group(env: DistEnv, device: torch.device) -> bool:
    """Start the default process group (gloo on CPU, NCCL on CUDA) unless alone or already started.

    Returns True when this call started it (so the caller should destroy it when done).
    """
    if not env.distributed or dist.is_initialized():
        return False
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    return True


def is_initialized() -> bool:
    """True inside a started process group."""
    return dist.is_available() and dist.is_initialized()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum ``values`` over all processes (a copy; unchanged in a single process)."""
    if not is_initialized():
        return values.clone()
    out = values.detach().to(_comm_device()).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(values.device)


def gather_tensors(tensor: Tensor) -> list[Tensor]:
    """Every process's ``tensor`` (shapes may differ, dtypes must match), in rank order, on CPU."""
    if not is_initialized():
        return [tensor.detach().cpu()]
    device, world = _comm_device(), dist.get_world_size()
    if tensor.ndim > 8:
        raise ValueError(f"gather_tensors: expected at most 8 dimensions, got {tensor.ndim}")
    header = torch.zeros(9, dtype=torch.int64, device=device)
    header[0] = tensor.ndim
    header[1 : 1 + tensor.ndim] = torch.tensor(tensor.shape, dtype=torch.int64)
    headers = [torch.empty_like(header) for _ in range(world)]
    dist.all_gather(headers, header)
    shapes = [tuple(h[1 : 1 + int(h[0])].tolist()) for h in headers]
    size = max(max(torch.Size(s).numel() for s in shapes), 1)
    flat = torch.zeros(size, dtype=tensor.dtype, device=device)
    flat[: tensor.numel()] = tensor.detach().reshape(-1).to(device)
    parts = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(parts, flat)
    return [p[: torch.Size(s).numel()].reshape(s).cpu() for p, s in zip(parts, shapes)]


def union_names(names: Sequence[str]) -> list[str]:
    """Every name any process has, in order of first appearance by rank (``names`` itself when alone):
    collectives that pack one value per name need the same list everywhere (a rank without validation
    batches knows no metric names, and a shorter all_reduce hangs the others)."""
    if not is_initialized():
        return list(names)
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, list(names))
    return list(dict.fromkeys(n for part in everyone for n in part))


def barrier() -> None:
    """Wait for every process (no-op when alone)."""
    if is_initialized():
        dist.barrier()


def torchrun_command(script: str | os.PathLike, args: Sequence[str] = (), *, nproc_per_node: int = 2) -> list[str]:
    """The command line that runs ``script`` under ``torchrun --standalone`` with this interpreter."""
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node: expected >= 1, got {nproc_per_node}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc_per_node}", os.fspath(script), *map(str, args)]


def launch(script: str | os.PathLike, args: Sequence[str] = (), *, nproc_per_node: int = 2,
           env: Mapping[str, str] | None = None, timeout: float | None = None,
           cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run ``script`` on ``nproc_per_node`` local processes via ``torchrun``; output is captured.

    ``env`` entries are added to the current environment. The caller checks ``returncode``.
    """
    command = torchrun_command(script, args, nproc_per_node=nproc_per_node)
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(command, env=full_env, cwd=cwd, timeout=timeout, capture_output=True, text=True)
