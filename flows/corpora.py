"""`import-dataset`: a corpus with real images (img2dataset output, WebDataset, Hugging Face
Parquet, a CSV of image paths) into a dataset root of our layout, one task per input file.

request -> index (a task per input file, concurrently) -> plan (under the root's writer lease) ->
write (a task per input file) -> manifest -> statistics and sample grid in the UI. Every phase
skips what is committed, so a rerun after a crash redoes only what is missing.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import wait
from pydantic import BaseModel, ConfigDict, Field

from stablerep.corpora.importer import ImportConfig
from tasks.corpora import finish_import, index_input, open_import, plan_import, write_input
from tasks.synthesis import publish_dataset


class ImportRequest(BaseModel):
    """A corpus to import: where it is, where it goes, what to keep of it."""

    model_config = ConfigDict(extra="forbid")
    sources: list[str] = Field(min_length=1, description="files, folders, globs or brace patterns; local or s3://")
    root: str = Field(description="dataset root to write: local path or s3://bucket/prefix")
    config: ImportConfig = Field(default_factory=ImportConfig)
    lease_wait_s: float = Field(0, ge=0, description="wait this long for another writer of the root")


def _all_done(futures: list, what: str) -> list[dict[str, Any]]:
    wait(futures)
    failed = [f for f in futures if not f.state.is_completed()]
    if failed:
        raise RuntimeError(f"{len(failed)} {what} task(s) failed after retries (committed work is kept; a rerun "
                           f"redoes only the rest): {failed[0].state.message}")
    return [f.result() for f in futures]


@flow(name="import-dataset", log_prints=True)
def import_dataset_flow(request: ImportRequest) -> dict[str, Any]:
    """Import the corpus, one task per input file for the index and write phases."""
    logger = get_run_logger()
    job = {"sources": request.sources, "out": request.root, "config": request.config.model_dump(mode="json"),
           "owner": "import-dataset flow run", "lease_wait_s": request.lease_wait_s}
    inputs = open_import(job)["inputs"]
    logger.info("%d input file(s) in %s", inputs, ", ".join(request.sources))
    indexed = _all_done([index_input.submit(job, i) for i in range(inputs)], "index")
    logger.info("indexed %d rows, %d usable", sum(r["rows"] for r in indexed), sum(r["usable"] for r in indexed))
    plan = plan_import(job)
    logger.info("%d captions, %d images in %d shard(s)", plan["captions"], plan["images"], plan["shards"])
    written = _all_done([write_input.submit(job, i) for i in plan["inputs_with_shards"]], "write")
    summary = finish_import(job)
    publish_dataset(request.root)
    return {**summary, "written": sum(w["written"] for w in written), "skipped": sum(w["skipped"] for w in written)}
