"""Training run used by the DDP test (run as a script or under torchrun, not collected by pytest).

    python ddp_script.py RUN_DIR NAME BATCH_SIZE [MAX_STEPS RESUME]   # one process
    torchrun --nproc_per_node 2 ddp_script.py RUN_DIR NAME B [...]      # two processes, B each

Three micro-batches (TBPTT chunks, two per batch) make a step, so steps end mid-batch with a
carried state.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from tiny_models import TinyRegressor, reg_data  # noqa: E402

from rnnkit.training import Trainer, TrainerConfig  # noqa: E402


def main(run_dir: str, name: str, batch_size: int, max_steps: int = 5, resume: bool = False) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = TinyRegressor().double()
    config = TrainerConfig(run_dir=run_dir, name=name, max_steps=max_steps, batch_size=batch_size,
                           tbptt_steps=4, grad_accum_steps=3, max_grad_norm=1.0, lr=1e-2, eval_every=5,
                           log_every=1, seed=3, quiet=True, tensorboard=False, plots=False, device="cpu",
                           deterministic=True, resume=resume)
    train = reg_data(n=16, t=8, dtype=torch.float64)
    val = reg_data(n=8, t=8, seed=1, dtype=torch.float64)
    Trainer(model, config).fit(train, val)


if __name__ == "__main__":
    extra = sys.argv[4:]
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *([int(extra[0]), extra[1] == "1"] if extra else []))
