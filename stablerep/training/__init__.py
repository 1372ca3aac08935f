"""Training: optimiser groups and schedules, checkpoints, the loop (one process or torchrun)."""

from stablerep.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)
from stablerep.training.loop import NonFiniteLossError, TrainResult, run_training_loop
from stablerep.training.optim import build_optimizer, lr_at, param_groups

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "TrainResult",
    "build_optimizer",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "lr_at",
    "param_groups",
    "run_training_loop",
    "save_checkpoint",
]
