"""Checkpoints now live one floor down, in :mod:`stablerep.checkpoint` (evaluation and the generator
load them too); kept here so that ``stablerep.training.checkpoint`` imports keep working."""

from stablerep.checkpoint import (
    LoadedCheckpoint,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    load_model_weights_from,
    read_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from stablerep.errors import CheckpointError

__all__ = ["CheckpointError", "LoadedCheckpoint", "checkpoint_name", "latest_checkpoint",
           "load_checkpoint", "load_model_weights", "load_model_weights_from", "read_checkpoint",
           "read_checkpoint_meta", "save_checkpoint"]
