"""Corpus import tasks: one phase of stablerep.stages.import_dataset each, so a flow can run the
per-input phases (index, write) as one task per input file and the rest once."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from tasks.retry import IO_RETRIES


def _run(job: dict[str, Any], **update: Any) -> dict[str, Any]:
    # imported here: stablerep.stages loads torch, timm and diffusers (5.5 s measured), which a
    # planning process never needs; the import phases themselves run without them
    from stablerep.stages import ImportJob, import_dataset

    return import_dataset(ImportJob.model_validate({**job, "progress": False, **update}))


def _input_name() -> str:
    from prefect.runtime import task_run

    return f"{task_run.task_name}-{task_run.parameters['index']}"


@task(name="import-request", **IO_RETRIES)
def open_import(job: dict[str, Any]) -> dict[str, Any]:
    """Resolve the sources to input files and record the request in the root."""
    return _run(job, phase="request")


@task(name="index-input", task_run_name=_input_name, **IO_RETRIES)
def index_input(job: dict[str, Any], index: int) -> dict[str, Any]:
    """Read input file ``index`` once: caption ids, image checks, where each image's bytes are."""
    return _run(job, phase="index", inputs=[index])


@task(name="plan-import", **IO_RETRIES)
def plan_import(job: dict[str, Any]) -> dict[str, Any]:
    """Merge the indexes into captions.parquet and the shard plan (under the root's writer lease)."""
    return _run(job, phase="plan")


@task(name="write-input-shards", task_run_name=_input_name, **IO_RETRIES)
def write_input(job: dict[str, Any], index: int) -> dict[str, Any]:
    """Write and commit the output shards of input file ``index`` (committed ones are skipped)."""
    summary = _run(job, phase="write", inputs=[index])
    get_run_logger().info("input %d: wrote %d shard(s), %d already committed", index, summary["written"],
                          summary["skipped"])
    return summary


@task(name="import-manifest", **IO_RETRIES)
def finish_import(job: dict[str, Any]) -> dict[str, Any]:
    """The manifest, with the sources' lineage and the rows skipped by reason."""
    return _run(job, phase="manifest")


@task(name="import-corpus", **IO_RETRIES)
def import_corpus(job: dict[str, Any]) -> dict[str, Any]:
    """Every phase in this task's process (for recipes that import a small sample)."""
    return _run(job, phase="all")
