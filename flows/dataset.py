"""Build, regenerate and fan out synthetic datasets.

`build-dataset`: (optionally sample captions) -> plan -> shard batches fanned out -> manifest ->
statistics and dataset card. Shards go out in batches (``shards_per_task``), so thousands of
shards are hundreds of task runs, at most ``concurrency`` at a time on this machine (one per GPU),
or as flow runs of the `synthesize-shards` deployment on the `gpu` work pool (``fan_out:
deployment``), where any number of GPU workers share them.
`regenerate-dataset`: the scheduled form; appends new captions and synthesises only new shards;
an unchanged request commits nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows.child_runs import start_child_run, wait_for_runs
from stablerep.config import SynthesisConfig
from tasks.artifacts import ShardProgress
from tasks.captions import sample_captions
from tasks.leases import flow_run_lease
from tasks.synthesis import plan_shards, publish_dataset, synthesize_shards, write_manifest


class CaptionRequest(BaseModel):
    """Captions to sample into the dataset root before synthesis (appended, never reordered)."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(description="caption file: .txt/.csv/.tsv/.jsonl/.parquet, local or s3://")
    n: int = Field(ge=1, description="captions to sample")
    seed: int = 0
    allow_fewer: bool = False


class DatasetRequest(BaseModel):
    """A synthetic dataset: where, from which captions, made how, fanned out how."""

    model_config = ConfigDict(extra="forbid")
    root: str = Field(description="dataset root: local path or s3://bucket/prefix")
    captions: CaptionRequest | None = Field(None, description="sample captions first (else ROOT has them)")
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    shards_per_task: int = Field(4, ge=1, description="shards per task run (or per GPU flow run)")
    concurrency: int = Field(1, ge=1, description="shard batches at once on this machine (one per GPU)")
    devices: list[str] | None = Field(None, description="one per concurrent batch, e.g. [cuda:0, cuda:1]")
    fan_out: Literal["local", "deployment"] = "local"
    shard_deployment: str = Field("synthesize-shards/gpu", description="for fan_out=deployment")
    batch_timeout_s: float | None = Field(None, gt=0, description="kill a shard batch after this long")
    executor: Literal["subprocess", "inline"] = Field("subprocess", description="inline: in the flow's process")
    batch_attempts: int = Field(3, ge=1, description="runs of a batch whose flow run crashed or failed "
                                "(fan_out=deployment)")
    lease_wait_s: float = Field(0, ge=0, description="wait this long for another build of the same root")

    @model_validator(mode="after")
    def _devices(self) -> DatasetRequest:
        if self.devices is not None and len(self.devices) < self.concurrency:
            raise ValueError(f"devices lists {len(self.devices)} device(s) for concurrency {self.concurrency}")
        return self


def _batches(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def _fan_out_local(request: DatasetRequest, batches: list[list[int]], images: dict[int, int],
                   progress: ShardProgress) -> tuple[list[str], int]:
    """Keep up to ``concurrency`` batches running, each on its own device; returns (failures, 0):
    a failed batch is retried by its task's own retry policy, never run again here."""
    devices = list(request.devices or [None] * request.concurrency)[:request.concurrency]
    free, queue, running, failed = list(devices), list(batches), {}, []
    while queue or running:
        while queue and free:
            batch, device = queue.pop(0), free.pop(0)
            future = synthesize_shards.submit(request.root, request.synthesis, batch, device=device,
                                              timeout_s=request.batch_timeout_s, mode=request.executor)
            running[future] = (batch, device)
        future = next(as_completed(list(running)))
        batch, device = running.pop(future)
        free.append(device)
        future.wait()  # records the final state (state alone may still read Pending from the API)
        state = future.state
        if state.is_completed():
            progress.add(sum(images[i] for i in batch))
        else:
            failed.append(f"shards {batch}: {state.message or state.name}")
    return failed, 0


def _fan_out_deployment(request: DatasetRequest, batches: list[list[int]], images: dict[int, int],
                        progress: ShardProgress) -> tuple[list[str], int]:
    """One flow run of the shard deployment per batch; wait for all, counting commits as they land.

    A batch whose flow run Crashed (its process or host died; a lost host is marked Crashed by the
    stack's missing-heartbeat automation) or Failed (its task's retries spent, or the engine lost
    the API) runs again, up to ``batch_attempts`` runs in all: the new run skips the shards the
    earlier ones committed. A cancelled batch is not run again. API calls survive a busy server
    (child_runs retries them). Returns (failures, batches run again)."""
    logger = get_run_logger()

    def submit(batch: list[int], attempt: int):
        # the key holds the attempt: a repeated call after a lost response returns the same run
        return start_child_run(request.shard_deployment, key=f"{batch[0]}-{batch[-1]}-{attempt}", parameters={
            "root": request.root, "synthesis": request.synthesis.model_dump(mode="json"), "shards": batch,
            "batch_timeout_s": request.batch_timeout_s})

    runs = {submit(batch, 1): (batch, 1) for batch in batches}
    failed: list[str] = []
    reruns = 0

    def on_final(run):
        nonlocal reruns
        state = run.state
        batch, attempt = runs.pop(run.id)
        if state.is_completed():
            progress.add(sum(images[i] for i in batch))
            return None
        if (state.is_crashed() or state.is_failed()) and attempt < request.batch_attempts:
            logger.warning("shards %s: flow run %s %s (%s); running the batch again (run %d of %d)",
                           batch, run.id, state.name, (state.message or "no message")[:300], attempt + 1,
                           request.batch_attempts)
            again = submit(batch, attempt + 1)
            runs[again] = (batch, attempt + 1)
            reruns += 1
            return [again]
        failed.append(f"shards {batch}: flow run {run.id} {state.name} after {attempt} run(s)")
        return None

    wait_for_runs(list(runs), on_final)
    return failed, reruns


def run_build(request: DatasetRequest) -> dict[str, Any]:
    """The build, holding the dataset root's writer lease from the first caption to the manifest:
    a second build of the same root waits ``lease_wait_s`` for it, then fails naming this run."""
    with flow_run_lease(request.root, wait_s=request.lease_wait_s):
        return _build(request)


def _build(request: DatasetRequest) -> dict[str, Any]:
    logger = get_run_logger()
    added = None
    if request.captions is not None:
        c = request.captions
        added = sample_captions(c.source, request.root, c.n, c.seed, c.allow_fewer)["added"]
    plan = plan_shards(request.root, request.synthesis)
    images = {int(k): v for k, v in plan["images"].items()}
    pending = plan["pending"]
    logger.info("%d planned shards, %d to synthesise (%d of %d images committed)",
                len(plan["shards"]), len(pending), plan["done_images"], plan["total_images"])
    progress = ShardProgress(plan["total_images"], plan["done_images"], f"dataset {request.root}")
    batches = _batches(pending, request.shards_per_task)
    fan_out = _fan_out_deployment if request.fan_out == "deployment" else _fan_out_local
    failed, reruns = fan_out(request, batches, images, progress) if batches else ([], 0)
    if failed:
        raise RuntimeError(f"{len(failed)} shard batch(es) failed after retries; committed shards are kept and "
                           f"a rerun redoes only these: {'; '.join(failed[:5])}")
    manifest = write_manifest(request.root, request.synthesis)
    publish_dataset(request.root)
    return {"root": request.root, "captions_added": added, "shards_written": sum(map(len, batches)),
            "shards": len(plan["shards"]), "batches": len(batches), "batches_rerun": reruns, **manifest}


@flow(name="build-dataset", log_prints=True)
def build_dataset(request: DatasetRequest) -> dict[str, Any]:
    """Synthesise a dataset of K images per caption into Parquet shards (committed shards skipped)."""
    return run_build(request)


@flow(name="regenerate-dataset", log_prints=True)
def regenerate_dataset(request: DatasetRequest) -> dict[str, Any]:
    """The scheduled regeneration: sample the corpus again, append the captions the dataset lacks,
    synthesise only their shards. Nothing changes when the corpus and request did not."""
    if request.captions is None:
        raise ValueError("regenerate-dataset needs request.captions (the corpus to sample from)")
    return run_build(request)


@flow(name="synthesize-shards", log_prints=True)
def synthesize_shards_flow(root: str, synthesis: SynthesisConfig, shards: list[int],
                           batch_timeout_s: float | None = None) -> dict[str, Any]:
    """One batch of shards: the unit of work the `gpu` work pool's workers pick up."""
    return synthesize_shards(root, synthesis, shards, timeout_s=batch_timeout_s)
