"""Training task: one encoder, in a child process (or torchrun for several GPUs), resumable."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from stablerep.config import RunConfig
from tasks.artifacts import artifact_key, png_markdown
from tasks.retry import IO_RETRIES
from tasks.subprocess_run import run_stablerep

Launcher = Literal["subprocess", "torchrun", "inline"]


def _run_name() -> str:
    from prefect.runtime import task_run

    run = task_run.parameters['run']
    return f"train-{run.loss.method}-seed-{run.train.seed}"


@task(name="train-encoder", task_run_name=_run_name, **IO_RETRIES)
def train_encoder(run: RunConfig, data: str, run_dir: str, *, launcher: Launcher = "subprocess",
                  nproc_per_node: int = 1, timeout_s: float | None = None) -> dict[str, Any]:
    """Train ``run`` on dataset ``data`` into ``run_dir``. A retry resumes from the newest checkpoint.

    ``subprocess`` runs `stablerep train` in a child process (a timeout kills it), ``torchrun``
    launches ``nproc_per_node`` ranks on this machine, ``inline`` trains in this process.
    """
    if launcher == "inline":
        from stablerep.data.shards import build_shard_batches
        from stablerep.training import train

        result = train(run, build_shard_batches(data, run), run_dir, progress=False)
        summary = {"run_dir": run_dir, "steps": result.steps_done, "final_loss": result.final_loss,
                   "checkpoint": result.checkpoint}
    else:
        with tempfile.TemporaryDirectory(prefix="stablerep-run-") as tmp:
            config = Path(tmp) / "run.yaml"
            config.write_text(yaml.safe_dump(run.model_dump(mode="json")), encoding="utf-8")
            args = ["train", "--config", str(config), "--data", data, "--out", run_dir]
            torchrun = ["--standalone", f"--nproc-per-node={nproc_per_node}"] if launcher == "torchrun" else None
            summary = run_stablerep(args, timeout_s, torchrun=torchrun)
    publish_training(run, run_dir, summary)
    return summary


def publish_training(run: RunConfig, run_dir: str, summary: dict[str, Any]) -> None:
    """A results table and the loss curve in the UI."""
    from stablerep.plots import loss_curve, read_metrics

    records = read_metrics(run_dir)
    method = run.loss.method
    last = records[-1] if records else {}
    create_table_artifact(key=artifact_key("training", method), description=f"Training run {run_dir}", table=[{
        "method": method, "run_dir": run_dir, "steps": summary.get("steps"),
        "final_loss": round(summary.get("final_loss") or float("nan"), 4),
        "images_per_s": round(last.get("images_per_s", float("nan")), 1), "backbone": run.model.backbone,
        "captions_per_batch": run.data.captions_per_batch, "images_per_caption": run.data.images_per_caption}])
    if records:
        create_markdown_artifact(key=artifact_key("loss-curve", method), description=f"Loss curve: {run_dir}",
                                 markdown=png_markdown(f"{method}: loss", loss_curve(records, f"{method} loss")))
