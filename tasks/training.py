"""Training task: one encoder, in a child process (or torchrun for several GPUs or nodes), resumable."""

from __future__ import annotations

from typing import Any, Literal

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from stablerep.config import RunConfig
from stablerep.plots import loss_curve, read_metrics
from tasks.artifacts import artifact_key, png_markdown
from tasks.retry import IO_RETRIES
from tasks.subprocess_run import run_stage

Launcher = Literal["subprocess", "torchrun", "inline"]


def _run_name() -> str:
    from prefect.runtime import task_run

    run = task_run.parameters['run']
    return f"train-{run.loss.method}-seed-{run.train.seed}"


def torchrun_options(nproc_per_node: int, nnodes: int = 1, rdzv_endpoint: str | None = None,
                     rdzv_id: str | None = None, rdzv_timeout_s: float = 600, node_rank: int = 0) -> list[str]:
    """torchrun's options: one machine (``--standalone``) or node ``node_rank`` of ``nnodes`` that
    meet at the c10d rendezvous ``rdzv_endpoint`` (host:port; the node on that host serves it)
    under the job id ``rdzv_id``. Ranks are given out in order of arrival; no node restarts on its
    own (the parent flow fails the whole group instead)."""
    if nnodes == 1:
        return ["--standalone", f"--nproc-per-node={nproc_per_node}"]
    if not rdzv_endpoint or not rdzv_id:
        raise ValueError(f"{nnodes} nodes need a rendezvous endpoint (host:port) and a job id")
    return [f"--nnodes={nnodes}", f"--nproc-per-node={nproc_per_node}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id}",
            f"--rdzv-conf=join_timeout={int(rdzv_timeout_s)}", "--max-restarts=0",
            f"--local-addr={node_address(rdzv_endpoint, node_rank)}"]


def node_address(endpoint: str, node_rank: int) -> str:
    """The address this node announces: its address on the route to ``endpoint`` (host:port).

    torchrun would otherwise announce its host name, which a container often cannot resolve
    (Docker writes its own /etc/hosts), and the node given rank 0 then hangs. A node is known by
    (address, pid): when several nodes share one host, as containers with their own PID
    namespaces whose pids can coincide, each takes its own loopback address 127.0.0.<rank + 1>.
    """
    import socket

    host, _, port = endpoint.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # UDP connect: no packet is sent
        probe.connect((host.strip("[]"), int(port)))
        address = probe.getsockname()[0]
    return f"127.0.0.{node_rank + 1}" if address.startswith("127.") else address


@task(name="train-encoder", task_run_name=_run_name, **IO_RETRIES)
def train_encoder(run: RunConfig, data: str, run_dir: str, *, launcher: Launcher = "subprocess",
                  nproc_per_node: int = 1, timeout_s: float | None = None,
                  torchrun: list[str] | None = None, publish: bool = True) -> dict[str, Any]:
    """Train ``run`` on dataset ``data`` into ``run_dir``. A retry resumes from the newest checkpoint.

    One path, stablerep.stages.train: ``subprocess`` runs it in a child process (a timeout kills it), ``torchrun``
    launches ``nproc_per_node`` ranks on this machine (or, with ``torchrun`` options from
    `torchrun_options`, this node's ranks of a multi-node job), ``inline`` trains in this process.
    ``publish``: the results table and loss curve (a multi-node job publishes once, from its parent).
    """
    # imported here: stablerep.stages loads torch, timm and diffusers (5.5 s measured), which
    # processes that only plan or wait (fan-out parents) never need
    from stablerep.stages import TrainingJob, train

    job = TrainingJob(run=run, data=data, run_dir=run_dir, progress=False)
    if launcher == "inline":
        summary = train(job)
    else:
        if launcher == "torchrun":
            torchrun = torchrun or torchrun_options(nproc_per_node)
        summary = run_stage("train", job, timeout_s, torchrun=torchrun if launcher == "torchrun" else None)
    if publish:
        publish_training(run, run_dir, summary)
    return summary


def training_summary(run_dir: str) -> dict[str, Any]:
    """What `stablerep train` reports, read back from a finished run directory."""
    # imported here: stablerep.checkpoint loads torch (2.5 s measured), which the flow's process
    # does not need when training runs in a child process
    from stablerep.checkpoint import latest_checkpoint

    records = read_metrics(run_dir)
    if not records:
        raise RuntimeError(f"{run_dir}: no metrics.jsonl; the training run wrote nothing")
    return {"run_dir": run_dir, "steps": records[-1]["step"], "final_loss": records[-1]["loss"],
            "checkpoint": latest_checkpoint(run_dir)}


def publish_training(run: RunConfig, run_dir: str, summary: dict[str, Any]) -> None:
    """A results table and the loss curve in the UI."""
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
