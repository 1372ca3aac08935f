"""Synthesis tasks: plan the shards, synthesise batches of shards, write the manifest."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.logging import get_run_logger

from stablerep.config import SynthesisConfig
from tasks.retry import IO_RETRIES
from tasks.subprocess_run import run_stablerep


@task(name="plan-shards", **IO_RETRIES)
def plan_shards(root: str, cfg: SynthesisConfig) -> dict[str, Any]:
    """The dataset's shard plan (extended for appended captions) and which shards still need work."""
    from stablerep.shards import committed_mark, config_hash
    from stablerep.synthesis import load_plan, resolve_native_defaults

    cfg = resolve_native_defaults(cfg)  # the hash records the backend's own settings where unset
    plans = load_plan(root, cfg)
    chash = config_hash(cfg.hashed())
    pending = [p.index for p in plans if committed_mark(root, p.index, chash) is None]
    sizes = {p.index: len(p.captions) * cfg.images_per_caption for p in plans}
    return {"shards": [p.index for p in plans], "pending": pending, "images": sizes,
            "total_images": sum(sizes.values()), "done_images": sum(sizes[i] for i in sizes if i not in pending)}


def _request_file(cfg: SynthesisConfig, directory: str) -> str:
    path = Path(directory) / "request.json"
    path.write_text(json.dumps(cfg.model_dump(mode="json")), encoding="utf-8")
    return str(path)


def _batch_name() -> str:
    from prefect.runtime import task_run

    shards = task_run.parameters["shards"]
    return f"synthesize-shards-{shards[0]}-to-{shards[-1]}"


@task(name="synthesize-shards", task_run_name=_batch_name, **IO_RETRIES)
def synthesize_shards(root: str, cfg: SynthesisConfig, shards: list[int], *, device: str | None = None,
                      timeout_s: float | None = None, mode: Literal["subprocess", "inline"] = "subprocess") -> dict[str, Any]:
    """Synthesise ``shards`` of dataset ``root`` (idempotent: committed shards are skipped).

    ``subprocess`` (default) runs `stablerep synthesize` in a child process that a timeout kills;
    ``inline`` runs in this process (no timeout; for tests and tiny work).
    """
    if device is not None:
        cfg = cfg.model_copy(update={"device": device})
    started = time.perf_counter()
    if mode == "inline":
        from stablerep.synthesis import build_dataset, create_backend

        result = build_dataset(root, root, cfg, create_backend(cfg), progress=False, shards=shards)
        summary = {"written": result.written, "skipped": result.skipped}
    else:
        with tempfile.TemporaryDirectory(prefix="stablerep-request-") as tmp:
            summary = run_stablerep(["synthesize", "--captions", root, "--out", root, "--request",
                                     _request_file(cfg, tmp), "--shards", ",".join(map(str, shards))], timeout_s)
    get_run_logger().info("shards %s: wrote %s, skipped %s", shards, summary["written"], summary["skipped"])
    return {"shards": shards, "written": summary["written"], "skipped": summary["skipped"],
            "seconds": time.perf_counter() - started}


@task(name="write-manifest", **IO_RETRIES)
def write_manifest(root: str, cfg: SynthesisConfig) -> dict[str, Any]:
    """The manifest over every planned shard (an unchanged dataset keeps its manifest untouched)."""
    from stablerep.synthesis import load_plan
    from stablerep.synthesis.worker import finish_dataset

    manifest = finish_dataset(root, load_plan(root, cfg), cfg)
    return {"root": root, "config_hash": manifest["config_hash"], "totals": manifest["totals"],
            "created": manifest["created"]}


@task(name="publish-dataset", retries=1)
def publish_dataset(root: str) -> dict[str, Any]:
    """Statistics table, dataset card and a grid of sample images in the UI."""
    from stablerep.plots import sample_grid
    from stablerep.shards import dataset_stats, read_manifest
    from tasks.artifacts import publish_dataset as publish

    stats = dataset_stats(root)
    publish(root, stats, read_manifest(root), sample_grid(root))
    return stats["totals"]
