"""Caption tasks: sample a corpus into a dataset root (appending, never reordering)."""

from __future__ import annotations

from typing import Any

from prefect import task

from stablerep import captions
from stablerep.shards.captions import load_captions, merge_captions
from stablerep.world import write_procedural_captions
from tasks.retry import IO_RETRIES


@task(name="sample-captions", **IO_RETRIES)
def sample_captions(source: str, root: str, n: int, seed: int = 0, allow_fewer: bool = False) -> dict[str, Any]:
    """Sample ``n`` captions of ``source`` and append those ROOT/captions.parquet lacks."""
    result = captions.sample_captions(source, n, seed, allow_fewer=allow_fewer, progress=False)
    added = captions.merge_captions(root, result.table)
    return {"root": root, "sampled": result.stats["sampled"], "added": added, "eligible": result.stats["eligible"]}


@task(name="procedural-captions", **IO_RETRIES)
def procedural_captions(url: str, n: int, seed: int = 0) -> str:
    """Write ``n`` captions of the procedural grammar to ``url`` (a text file) and return it."""
    return write_procedural_captions(url, n, seed)


@task(name="copy-captions", **IO_RETRIES)
def copy_captions(source_root: str, root: str) -> dict[str, Any]:
    """Append the captions of dataset root ``source_root`` that ROOT/captions.parquet lacks (a
    synthetic dataset of a real root's captions shares its caption ids)."""
    return {"root": root, "added": merge_captions(root, load_captions(source_root))}
