"""Distributed: environment parsing, collectives when alone, and DDP == one process (torchrun, gloo)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import TinyRegressor, reg_data

from rnnkit.errors import ConfigError
from rnnkit.training import DatasetBatches
from rnnkit.training.distributed import all_reduce_sum, detect_env, gather_tensors, launch, torchrun_command

HERE = Path(__file__).parent


def test_detect_env():
    assert detect_env({}).world_size == 1 and detect_env({}).is_main
    env = detect_env({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"})
    assert (env.rank, env.local_rank, env.world_size, env.is_main, env.distributed) == (1, 1, 2, False, True)
    with pytest.raises(ConfigError, match="RANK"):
        detect_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        detect_env({"WORLD_SIZE": "two"})


def test_collectives_alone_are_identity():
    t = torch.arange(6.0).reshape(2, 3)
    assert torch.equal(all_reduce_sum(t), t)
    assert len(gather_tensors(t)) == 1 and torch.equal(gather_tensors(t)[0], t)
    cmd = torchrun_command("x.py", ["a"], nproc_per_node=3)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc_per_node=3" in cmd


def test_dataset_shards_cover_the_global_batch():
    data = reg_data(n=16)
    one = DatasetBatches(data, 8, seed=5)
    two = DatasetBatches(data, 4, seed=5, world_size=2)
    assert len(one) == len(two) == 2
    for epoch in (0, 1):
        for full, *parts in zip(one.iter_batches(epoch), two.iter_batches(epoch, 0, 2), two.iter_batches(epoch, 1, 2)):
            key = lambda x: tuple(x.flatten().tolist())  # noqa: E731
            assert sorted(map(key, full["x"])) == sorted(key(x) for p in parts for x in p["x"])
    assert [b["x"].shape[0] for b in one.iter_batches(0, start=1)] == [8]


def _stderr(proc) -> str:
    """A failed launch's stderr for the assertion: its start (a child's own error or abort message comes
    before torchrun's summary, which alone fills the end) and its end."""
    err = proc.stderr
    return err if len(err) <= 6000 else err[:3000] + "\n[...]\n" + err[-3000:]


def _val_loss(run: Path) -> float:
    with open(run / "metrics.csv", newline="") as fh:
        return [float(r["val_loss"]) for r in csv.DictReader(fh) if r.get("val_loss")][-1]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


@pytest.mark.slow
def test_ddp_matches_one_process_and_resumes_exactly(tmp_path):
    script, runs = HERE / "ddp_script.py", tmp_path / "runs"
    env = {"OMP_NUM_THREADS": "1"}
    single = subprocess.Popen([sys.executable, str(script), str(runs), "single", "8"])
    ddp = launch(script, [runs, "ddp", 4], nproc_per_node=2, env=env, timeout=300)
    assert ddp.returncode == 0, _stderr(ddp)
    # one torchrun job at a time: two concurrent `torchrun --standalone` jobs on one machine can abort
    # ("terminate called without an active exception" in a worker; seen on a loaded 2-core CI machine)
    part = launch(script, [runs, "part", 4, 3, 0], nproc_per_node=2, env=env, timeout=300)  # stops at step 3
    assert part.returncode == 0, _stderr(part)
    assert single.wait(300) == 0
    one, two = _weights(runs / "single"), _weights(runs / "ddp")
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-6, rtol=0), name
    torch.manual_seed(0)
    initial = TinyRegressor().double().state_dict()
    assert any(not torch.equal(initial[k], one[k]) for k in one)  # training moved the weights
    assert _val_loss(runs / "ddp") == pytest.approx(_val_loss(runs / "single"), abs=1e-9)
    rng = load_file(str(runs / "ddp" / "checkpoints" / "last" / "rng.safetensors"))
    assert {"rank0/torch", "rank1/torch"} <= set(rng)
    # "part" stopped after step 3 (mid-batch, a carried state per process); resume it to step 5
    resumed = launch(script, [runs, "part", 4, 5, 1], nproc_per_node=2, env=env, timeout=300)
    assert resumed.returncode == 0, _stderr(resumed)
    full, resumed = _weights(runs / "ddp"), _weights(runs / "part")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_evaluation_shards_count_every_item_once():
    # 13 items on 2 ranks: training pads rank 1 with a repeated item; evaluation must not, or the
    # reported validation loss would weigh that item twice
    data = reg_data(n=13)
    batches = DatasetBatches(data, 4, shuffle=False, world_size=2)
    key = lambda x: tuple(x.flatten().tolist())  # noqa: E731
    padded = [key(x) for r in (0, 1) for b in batches.iter_batches(0, r, 2) for x in b["x"]]
    unpadded = [key(x) for r in (0, 1) for b in batches.iter_batches(0, r, 2, pad=False) for x in b["x"]]
    assert len(padded) == 14 and len(set(padded)) == 13
    assert len(unpadded) == 13 and sorted(unpadded) == sorted(key(data[i]["x"]) for i in range(13))


def test_evaluation_over_ranks_equals_one_process(monkeypatch):
    # the ranks' weighted sums, added as all_reduce_sum would, give the one-process mean exactly
    from rnnkit.training import evaluation

    torch.manual_seed(0)
    model = TinyRegressor().double()  # float64: batches grouped differently still sum exactly enough
    data = DatasetBatches(reg_data(n=13, dtype=torch.float64), 4, shuffle=False)
    one = evaluation.evaluate_model(model, data, device=torch.device("cpu"))["loss"]
    parts = []
    monkeypatch.setattr(evaluation, "all_reduce_sum", lambda t: parts.append(t.clone()) or t)
    for rank in (0, 1):
        evaluation.evaluate_model(model, data, device=torch.device("cpu"), rank=rank, world_size=2)
    total = parts[0] + parts[1]
    assert float(total[1] / total[0]) == pytest.approx(one, rel=1e-12)


def test_a_rank_without_validation_batches_packs_every_metric_name(monkeypatch):
    """A rank with no batches packed only 'loss' while the others packed 'loss, acc': all_reduce sizes
    differed and torchrun hung. The names are agreed on across ranks first (union_names)."""
    from typing import NamedTuple

    from rnnkit.training import evaluation

    class Out(NamedTuple):
        loss: torch.Tensor
        acc: torch.Tensor

    class WithAcc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x, y, state=None):
            return Out(((x.sum((1, 2)) * self.w - y.reshape(-1)) ** 2).mean(), torch.tensor(0.5))

    data = DatasetBatches(reg_data(n=1), 4, shuffle=False)
    seen = []
    monkeypatch.setattr(evaluation, "union_names", lambda names: seen.append(list(names)) or ["loss", "acc"])
    monkeypatch.setattr(evaluation, "all_reduce_sum", lambda t: t + torch.tensor([1.0, 2.0, 0.5], dtype=t.dtype))
    # rank 1 of 2 has no item: it knows no names, yet packs a value for each name rank 0 has
    result = evaluation.evaluate_model(WithAcc(), data, device=torch.device("cpu"), rank=1, world_size=2)
    assert seen == [[]] and set(result) == {"loss", "acc"} and result["acc"] == pytest.approx(0.5)
