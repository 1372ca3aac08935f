"""Synthesis tasks: plan the shards, synthesise batches of shards, write the manifest."""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import task
from prefect.logging import get_run_logger

from stablerep.config import SynthesisConfig
from stablerep.plots import sample_grid
from stablerep.shards import committed_mark, config_hash, dataset_stats, read_manifest
from stablerep.synthesis import load_plan, resolve_native_defaults
from stablerep.synthesis.worker import finish_dataset
from tasks.artifacts import publish_dataset_artifacts
from tasks.retry import IO_RETRIES
from tasks.subprocess_run import run_stage


@task(name="plan-shards", **IO_RETRIES)
def plan_shards(root: str, cfg: SynthesisConfig) -> dict[str, Any]:
    """The dataset's shard plan (extended for appended captions) and which shards still need work."""
    cfg = resolve_native_defaults(cfg)  # the hash records the backend's own settings where unset
    plans = load_plan(root, cfg)
    chash = config_hash(cfg.hashed())
    pending = [p.index for p in plans if committed_mark(root, p.index, chash) is None]
    sizes = {p.index: len(p.captions) * cfg.images_per_caption for p in plans}
    return {"shards": [p.index for p in plans], "pending": pending, "images": sizes,
            "total_images": sum(sizes.values()), "done_images": sum(sizes[i] for i in sizes if i not in pending)}


def _batch_name() -> str:
    from prefect.runtime import task_run

    shards = task_run.parameters["shards"]
    return f"synthesize-shards-{shards[0]}-to-{shards[-1]}"


@task(name="synthesize-shards", task_run_name=_batch_name, **IO_RETRIES)
def synthesize_shards(root: str, cfg: SynthesisConfig, shards: list[int], *, device: str | None = None,
                      timeout_s: float | None = None, mode: Literal["subprocess", "inline"] = "subprocess") -> dict[str, Any]:
    """Synthesise ``shards`` of dataset ``root`` (idempotent: committed shards are skipped).

    One path, stablerep.stages.synthesize: ``subprocess`` (default) runs it in a child process that a timeout kills;
    ``inline`` runs in this process (no timeout; for tests and tiny work).
    """
    if device is not None:
        cfg = cfg.model_copy(update={"device": device})
    started = time.perf_counter()
    # imported here: stablerep.stages loads torch, timm and diffusers (5.5 s measured), which
    # processes that only plan or wait (fan-out parents) never need
    from stablerep.stages import SynthesisJob, synthesize

    job = SynthesisJob(captions=root, out=root, synthesis=cfg, shards=shards, progress=False)
    summary = synthesize(job) if mode == "inline" else run_stage("synthesize", job, timeout_s)
    get_run_logger().info("shards %s: wrote %s, skipped %s", shards, summary["written"], summary["skipped"])
    return {"shards": shards, "written": summary["written"], "skipped": summary["skipped"],
            "seconds": time.perf_counter() - started}


@task(name="write-manifest", **IO_RETRIES)
def write_manifest(root: str, cfg: SynthesisConfig) -> dict[str, Any]:
    """The manifest over every planned shard (an unchanged dataset keeps its manifest untouched)."""
    manifest = finish_dataset(root, load_plan(root, cfg), cfg)
    return {"root": root, "config_hash": manifest["config_hash"], "totals": manifest["totals"],
            "created": manifest["created"]}


@task(name="publish-dataset", retries=1)
def publish_dataset(root: str) -> dict[str, Any]:
    """Statistics table, dataset card and a grid of sample images in the UI."""
    stats = dataset_stats(root)
    publish_dataset_artifacts(root, stats, read_manifest(root), sample_grid(root))
    return stats["totals"]
