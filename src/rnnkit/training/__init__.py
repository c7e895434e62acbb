"""rnnkit.training: the Trainer (TBPTT, clipping, accumulation, AMP, DDP), checkpoints and run logs.

Typical use::

    from rnnkit.training import Trainer, TrainerConfig
    config = TrainerConfig(name="lm", max_steps=2000, lr=2e-3, max_grad_norm=1.0, eval_every=200)
    state = Trainer(model, config).fit(train_data, val_data)
"""

from __future__ import annotations

from rnnkit.training.batches import DatasetBatches
from rnnkit.training.callbacks import Callback, TrainerState
from rnnkit.training.checkpoint import CheckpointData, load_checkpoint, save_checkpoint
from rnnkit.training.config import TrainerConfig
from rnnkit.training.distributed import DistEnv, detect_env, launch
from rnnkit.training.trainer import Trainer

__all__ = ["Trainer", "TrainerConfig", "TrainerState", "Callback", "DatasetBatches", "CheckpointData",
           "save_checkpoint", "load_checkpoint", "DistEnv", "detect_env", "launch"]
