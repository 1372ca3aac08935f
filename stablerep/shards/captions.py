"""A dataset root's caption list: ROOT/captions.parquet (caption_id, caption, the source's other
columns) and ROOT/captions.json (the sample's statistics). Rows are only ever appended (shard
plans refer to row positions); every write holds the root's writer lease."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stablerep import storage
from stablerep.shards.layout import read_parquet_bytes
from stablerep.shards.lease import writer_lease

CAPTIONS_FILE = "captions.parquet"
CAPTION_STATS_FILE = "captions.json"


def write_caption_table(root: str, table: pa.Table, stats: dict[str, Any]) -> str:
    """Write ROOT/captions.parquet (one PUT) then ROOT/captions.json (statistics), holding the
    root's writer lease."""
    url = storage.join(root, CAPTIONS_FILE)
    with writer_lease(root, "a caption sample"):
        storage.write_bytes(url, _parquet_bytes(table))
        storage.write_bytes(storage.join(root, CAPTION_STATS_FILE), json.dumps(stats, indent=2).encode())
    return url


def merge_captions(root: str, table: pa.Table) -> int:
    """Append the rows of ``table`` whose caption ids ROOT/captions.parquet lacks, keeping the
    existing rows and their order (shard plans refer to row positions). Returns how many were
    added; writes nothing when there are none. Holds the root's writer lease, so two builds that
    append at once both land."""
    with writer_lease(root, "a caption append"):
        return _merge_captions(root, table)


def _merge_captions(root: str, table: pa.Table) -> int:
    url = storage.join(root, CAPTIONS_FILE)
    if not storage.exists(url):
        storage.write_bytes(url, _parquet_bytes(table))
        return table.num_rows
    existing = load_captions(root)
    known = set(existing.column("caption_id").to_pylist())
    keep = [cid not in known for cid in table.column("caption_id").to_pylist()]
    new = table.filter(pa.array(keep, pa.bool_()))
    if new.num_rows == 0:
        return 0
    merged = pa.concat_tables([existing, new], promote_options="permissive")
    storage.write_bytes(url, _parquet_bytes(merged))
    return new.num_rows


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def load_captions(root: str) -> pa.Table:
    """ROOT/captions.parquet as a table (caption_id, caption, source columns)."""
    url = storage.join(root, CAPTIONS_FILE)
    if not storage.exists(url):
        raise FileNotFoundError(f"no captions at {url}: run `stablerep captions sample` first")
    return read_parquet_bytes(storage.read_bytes(url))
