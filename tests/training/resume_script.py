"""Training run used by the SIGKILL resume test (run as a script, not collected by pytest).

    python resume_script.py RUN_DIR NAME STALL_AT_STEP RESUME(0|1)

With STALL_AT_STEP > 0 the run writes ``RUN_DIR/NAME.stalled`` after that step and then sleeps,
so that the test can kill it with SIGKILL at a known point (after the checkpoint of step 8).
The configuration mixes everything a resume must restore: dropout (RNG), a shuffled data set,
TBPTT chunks with accumulation across batch and epoch boundaries, AdamW, cosine warmup, clipping.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from tiny_models import TinyLM, lm_data  # noqa: E402

from rnnkit.training import Callback, Trainer, TrainerConfig  # noqa: E402


class Stall(Callback):
    def __init__(self, run_dir: str, name: str, at: int) -> None:
        self.marker, self.at = Path(run_dir) / f"{name}.stalled", at

    def on_step_end(self, trainer, metrics):
        if metrics["step"] == self.at:
            self.marker.write_text(str(metrics["step"]))
            time.sleep(600)


def main(run_dir: str, name: str, stall_at: int, resume: bool) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(1234)
    model = TinyLM(dropout=0.3)
    config = TrainerConfig(run_dir=run_dir, name=name, max_steps=14, batch_size=4, tbptt_steps=5,
                           grad_accum_steps=2, checkpoint_every=4, eval_every=5, log_every=1, seed=7,
                           deterministic=True, optimizer="adamw", weight_decay=0.01, schedule="cosine",
                           warmup_steps=2, max_grad_norm=0.5, quiet=True, tensorboard=False, plots=False,
                           device="cpu", resume=resume)
    callbacks = [Stall(run_dir, name, stall_at)] if stall_at else []
    Trainer(model, config, callbacks=callbacks).fit(lm_data(n=12, t=12), lm_data(n=8, seed=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")
