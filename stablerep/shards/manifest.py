"""manifest.json (written last), verification and statistics of a dataset root."""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pyarrow.parquet as pq

from stablerep import storage
from stablerep.shards.layout import (
    FORMAT_VERSION,
    manifest_url,
    mark_url,
    read_parquet_bytes,
    shard_name,
    shard_url,
)
from stablerep.shards.writer import ShardError, read_mark

LINEAGE_PACKAGES = ("stablerep", "torch", "diffusers", "transformers", "pyarrow", "pillow")


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a request (canonical JSON)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def package_versions(names: tuple[str, ...] = LINEAGE_PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_manifest(root: str, shard_indices: list[int], config: dict[str, Any], cfg_hash: str,
                   lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ROOT/manifest.json listing ``shard_indices``; each must be committed for ``cfg_hash``."""
    shards = []
    for index in sorted(shard_indices):
        mark = read_mark(root, index)
        if mark is None:
            raise ShardError(f"shard {index} is not committed (no {mark_url(root, index)}); "
                             "the manifest lists committed shards only")
        if mark["config_hash"] != cfg_hash:
            raise ShardError(f"{mark_url(root, index)}: written for config {mark['config_hash']}, not {cfg_hash}")
        shards.append({k: mark[k] for k in ("index", "file", "rows", "captions", "bytes", "sha256", "row_groups")})
    manifest = {
        "format": FORMAT_VERSION,
        "config": config,
        "config_hash": cfg_hash,
        "lineage": {**(lineage or {}), "packages": package_versions()},
        "shards": shards,
        "totals": {
            "shards": len(shards),
            "images": sum(s["rows"] for s in shards),
            "captions": sum(s["captions"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_bytes(manifest_url(root), json.dumps(manifest, indent=1).encode())
    return manifest


def read_manifest(root: str) -> dict[str, Any]:
    url = manifest_url(root)
    if not storage.exists(url):
        raise FileNotFoundError(f"no dataset at {root}: {url} does not exist (not written yet, or not finished)")
    try:
        manifest = json.loads(storage.read_bytes(url))
    except ValueError as exc:
        raise ShardError(f"{url}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION or "shards" not in manifest:
        raise ShardError(f"{url}: not a dataset manifest of format {FORMAT_VERSION}")
    for entry in manifest["shards"]:
        index = entry.get("index") if isinstance(entry, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ShardError(f"{url}: a shard entry has no valid index (tampered manifest)")
        if entry.get("file") != f"shards/{shard_name(index)}.parquet":
            raise ShardError(f"{url}: shard {index} names {entry.get('file')!r}, outside the dataset layout "
                             "(tampered manifest)")
    return manifest


@dataclass
class VerifyReport:
    root: str
    shards_checked: int = 0
    images_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _verify_shard(root: str, entry: dict[str, Any], report: VerifyReport, deep: bool) -> None:
    index = entry["index"]
    mark = read_mark(root, index)
    if mark is None:
        report.problems.append(f"{mark_url(root, index)}: commit mark missing")
        return
    for key in ("rows", "bytes", "sha256"):
        if mark.get(key) != entry.get(key):
            report.problems.append(f"{mark_url(root, index)}: {key} differs from the manifest")
            return
    url = shard_url(root, index)
    if not storage.exists(url):
        report.problems.append(f"{url}: shard file missing")
        return
    blob = storage.read_bytes(url)
    if len(blob) != entry["bytes"]:
        report.problems.append(f"{url}: {len(blob)} bytes, the manifest says {entry['bytes']} (truncated?)")
        return
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        report.problems.append(f"{url}: sha256 differs from the manifest (tampered or corrupted)")
        return
    try:
        meta = pq.ParquetFile(io.BytesIO(blob)).metadata
    except Exception as exc:  # pyarrow raises several types for bad files
        report.problems.append(f"{url}: not a readable Parquet file ({exc})")
        return
    if meta.num_rows != entry["rows"]:
        report.problems.append(f"{url}: {meta.num_rows} rows, the manifest says {entry['rows']}")
        return
    if deep:
        table = read_parquet_bytes(blob, columns=["caption_id", "image"])
        images = table.column("image").combine_chunks().field("bytes")
        if images.null_count:
            report.problems.append(f"{url}: {images.null_count} rows without image bytes")
            return
    report.shards_checked += 1
    report.images_checked += entry["rows"]


def verify_dataset(root: str, deep: bool = False) -> VerifyReport:
    """Check manifest, marks, sha256 and row counts of every shard; collect every problem."""
    report = VerifyReport(root)
    try:
        manifest = read_manifest(root)
    except (FileNotFoundError, ShardError) as exc:
        report.problems.append(str(exc))
        return report
    for entry in manifest["shards"]:
        _verify_shard(root, entry, report, deep)
    totals = manifest.get("totals", {})
    if totals.get("images") != sum(s["rows"] for s in manifest["shards"]):
        report.problems.append(f"{manifest_url(root)}: totals.images does not add up")
    return report


def dataset_stats(root: str) -> dict[str, Any]:
    """Totals and per-shard figures from the manifest (reads no image)."""
    manifest = read_manifest(root)
    shards = manifest["shards"]
    rows = [s["rows"] for s in shards]
    per_caption = sorted({round(s["rows"] / s["captions"], 3) for s in shards if s["captions"]})
    return {
        "root": root,
        "totals": manifest["totals"],
        "images_per_caption": per_caption,
        "rows_per_shard": {"min": min(rows, default=0), "max": max(rows, default=0)},
        "row_groups": sum(len(s["row_groups"]) for s in shards),
        "lineage": manifest.get("lineage", {}),
        "config_hash": manifest.get("config_hash"),
        "created": manifest.get("created"),
    }
