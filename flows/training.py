"""Train an encoder (StableRep, StableRep+, SimCLR or CLIP) on a shard dataset."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from stablerep.config import load_config
from tasks.training import train_encoder


class TrainRequest(BaseModel):
    """A training run: a preset plus overrides, a dataset and where the run lives."""

    model_config = ConfigDict(extra="forbid")
    data: str = Field(description="shard dataset root (local or s3://)")
    run_dir: str = Field(description="run directory: config, metrics, checkpoints")
    preset: str = Field("tiny_cpu", description="configs/NAME.yaml or a YAML path")
    overrides: list[str] = Field(default_factory=list, description="key=value, e.g. loss.method=simclr")
    launcher: Literal["subprocess", "torchrun", "inline"] = "subprocess"
    nproc_per_node: int = Field(1, ge=1, description="torchrun ranks (GPUs) on the worker")
    timeout_s: float | None = Field(None, gt=0)


@flow(name="train-encoder", log_prints=True)
def train_encoder_flow(request: TrainRequest) -> dict[str, Any]:
    """Validate the config before any work, then train (a retry resumes from the last checkpoint)."""
    run = load_config(request.preset, request.overrides)
    return train_encoder(run, request.data, request.run_dir, launcher=request.launcher,
                         nproc_per_node=request.nproc_per_node, timeout_s=request.timeout_s)
