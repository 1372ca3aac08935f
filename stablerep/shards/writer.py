"""Write one shard, then its commit mark. A committed shard is never rewritten.

The shard is built in memory and stored with one write (an atomic rename locally, one PUT on
object stores), then the mark (rows, bytes, sha256, row groups, config hash) is written. A reader
trusts a shard only through its mark and the manifest, so a shard killed mid-write is invisible
and is simply written again by the next run.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stablerep import storage
from stablerep.errors import ShardError
from stablerep.shards.layout import (
    FORMAT_VERSION,
    IMPORT_SCHEMA,
    SHARD_SCHEMA,
    SOURCE_COLUMNS,
    mark_url,
    shard_name,
    shard_url,
)


@dataclass
class ImageRecord:
    caption_id: int
    caption: str
    image_index: int
    seed: int | None  # None for a real (imported) image
    image: bytes
    width: int
    height: int
    ext: str = "jpg"
    source: dict[str, str | None] | None = None  # an imported image's source_key, source_url, source_file


def _row_groups(records: list[ImageRecord], target_rows: int) -> list[tuple[int, int]]:
    """(start, stop) slices of about ``target_rows`` rows that never split a caption."""
    groups, start = [], 0
    for i in range(1, len(records) + 1):
        boundary = i == len(records) or records[i].caption_id != records[i - 1].caption_id
        if boundary and (i - start >= target_rows or i == len(records)):
            groups.append((start, i))
            start = i
    return groups


def _check_contiguous(records: list[ImageRecord], index: int) -> None:
    seen: set[int] = set()
    for prev, rec in zip([None, *records[:-1]], records, strict=True):
        if prev is None or rec.caption_id != prev.caption_id:
            if rec.caption_id in seen:
                raise ShardError(f"shard {shard_name(index)}: images of caption {rec.caption_id} are not contiguous")
            seen.add(rec.caption_id)


def encode_shard(records: list[ImageRecord], row_group_rows: int = 256) -> tuple[bytes, list[dict[str, int]]]:
    """Parquet bytes for ``records`` and the (rows, captions) of each row group. Records of an
    imported corpus (with ``source``) get the import schema's source columns."""
    buf = io.BytesIO()
    groups = []
    imported = records[0].source is not None
    schema = IMPORT_SCHEMA if imported else SHARD_SCHEMA
    # page CRCs let a reader that fetches single row groups still detect flipped bytes
    # (no dictionary for image bytes: every image is unique, and dictionary pages go unchecked)
    with pq.ParquetWriter(buf, schema, compression="zstd", write_page_checksum=True,
                          use_dictionary=["caption", "source_file"] if imported else ["caption"]) as writer:
        for start, stop in _row_groups(records, row_group_rows):
            part = records[start:stop]
            table = pa.table({
                "caption_id": [r.caption_id for r in part],
                "caption": [r.caption for r in part],
                "image_index": [r.image_index for r in part],
                "seed": [r.seed for r in part],
                "image": [{"bytes": r.image, "path": f"{r.caption_id}_{r.image_index}.{r.ext}"} for r in part],
                "width": [r.width for r in part],
                "height": [r.height for r in part],
                **({name: [(r.source or {}).get(name) for r in part] for name in SOURCE_COLUMNS} if imported else {}),
            }, schema=schema)
            writer.write_table(table, row_group_size=len(part))
            groups.append({"rows": len(part), "captions": len({r.caption_id for r in part})})
    return buf.getvalue(), groups


def read_mark(root: str, index: int) -> dict[str, Any] | None:
    url = mark_url(root, index)
    if not storage.exists(url):
        return None
    try:
        mark = json.loads(storage.read_bytes(url))
    except ValueError as exc:
        raise ShardError(f"{url}: unreadable shard mark ({exc})") from None
    return mark


def committed_mark(root: str, index: int, config_hash: str) -> dict[str, Any] | None:
    """The mark of a committed shard for this config, or None when the shard must be (re)written.

    A shard committed under another config hash is an error: mixing requests in one dataset
    would silently break reproducibility.
    """
    mark = read_mark(root, index)
    if mark is None:
        return None
    if mark.get("config_hash") != config_hash:
        raise ShardError(f"{mark_url(root, index)}: committed for config {mark.get('config_hash')}, "
                         f"not {config_hash}; use a new dataset root for a different request")
    fs, path = storage.get_fs(shard_url(root, index))
    if not fs.exists(path) or fs.size(path) != mark["bytes"]:
        raise ShardError(f"{shard_url(root, index)}: missing or of the wrong size for its mark")
    return mark


def write_shard(root: str, index: int, records: list[ImageRecord], config_hash: str,
                row_group_rows: int = 256, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write shard ``index`` and commit it with its mark; return the mark. ``lineage`` (the
    backend's model, revision, scheduler...) is kept in the mark.

    A shard already committed for ``config_hash`` is left as it is and its mark returned.
    """
    existing = committed_mark(root, index, config_hash)
    if existing is not None:
        return existing
    if not records:
        raise ShardError(f"shard {shard_name(index)}: no images to write")
    _check_contiguous(records, index)
    blob, groups = encode_shard(records, row_group_rows)
    mark = {
        "format": FORMAT_VERSION,
        "index": index,
        "file": f"shards/{shard_name(index)}.parquet",
        "rows": len(records),
        "captions": sum(g["captions"] for g in groups),
        "bytes": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "row_groups": groups,
        "config_hash": config_hash,
        "lineage": lineage or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_bytes(shard_url(root, index), blob)
    storage.write_bytes(mark_url(root, index), json.dumps(mark, indent=1).encode())
    return mark
