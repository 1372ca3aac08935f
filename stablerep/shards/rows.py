"""Plain reading of a dataset's committed shards, row by row (no batching, no augmentation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stablerep import storage
from stablerep.shards.layout import read_parquet_bytes, shard_url
from stablerep.shards.manifest import read_manifest


def iter_images(root: str, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every row of every committed shard, in manifest order (plain per-image iteration)."""
    manifest = read_manifest(root)
    for entry in manifest["shards"]:
        fs, path = storage.get_fs(shard_url(root, entry["index"]))
        yield from read_parquet_bytes(fs.cat_file(path), columns).to_pylist()
