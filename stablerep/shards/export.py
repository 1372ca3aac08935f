"""Export a dataset root as WebDataset tars, the layout open_clip's and webdataset's loaders read.

    OUT/000000.tar    KEY.jpg|png|webp (bytes as stored), KEY.txt (caption), KEY.json (metadata)
    OUT/000001.tar    ... ``samples_per_tar`` samples each, in manifest order; the last may be shorter
    OUT/sizes.json    {"000000.tar": N, ...}: open_clip's get_dataset_size reads it beside the tars
    OUT/export.json   source, config hash and totals, samples, tars (written last, after sizes.json)

KEY is ``f"{caption_id:016x}_{image_index:03d}"``: unique in a dataset, sorted like the rows, and
free of dots (webdataset splits a member name at its first dot). Member metadata is fixed (mtime
0, uid/gid 0, mode 0644, no owner names), so two exports of one dataset are byte-identical. Each
tar is built in memory and stored with one write; an export without export.json is unfinished.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import re
import tarfile
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from stablerep import storage
from stablerep.errors import ShardError, StableRepError
from stablerep.shards.layout import shard_url
from stablerep.shards.manifest import read_manifest

EXPORT_FORMAT = 1
CORE_COLUMNS = ["caption_id", "caption", "image_index", "seed", "image", "width", "height"]
META_FIELDS = ("caption_id", "image_index", "seed", "width", "height")
SIZES_FILE, EXPORT_FILE = "sizes.json", "export.json"
_TAR_NAME = re.compile(r"^(\d{6,})\.tar$")
_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"))
_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class ExportError(StableRepError, ValueError):
    """An export that cannot be made as asked: names the option, the output or the row."""


def sample_key(caption_id: int, image_index: int) -> str:
    """The WebDataset key of one image: 16 hex digits of the caption id, '_', the image index."""
    return f"{caption_id & (2**64 - 1):016x}_{image_index:03d}"


def tar_name(index: int) -> str:
    return f"{index:06d}.tar"


def image_extension(data: bytes, path: str | None) -> str | None:
    """The image's type from its magic bytes, else from its stored path; None when neither says."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    ext = (path or "").rsplit(".", 1)[-1].lower() if "." in (path or "") else ""
    return ext if ext in _IMAGE_EXTENSIONS else None


def _source_columns(schema: pa.Schema) -> list[str]:
    """Columns beyond ours with scalar values (an import's source_key, source_url...): kept in KEY.json."""
    scalar = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating,
              pa.types.is_boolean)
    return [f.name for f in schema if f.name not in CORE_COLUMNS and any(t(f.type) for t in scalar)]


def _source_name(column: str) -> str:
    """An import's ``source_key`` stays as it is; any other extra column ``key`` becomes ``source_key``."""
    return column if column.startswith("source_") else f"source_{column}"


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _iter_rows(root: str, manifest: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(shard URL, row, source columns) for every row, reading each shard once, a row group at a
    time, and only the columns the export writes; a shard that differs from the manifest stops it."""
    for entry in manifest["shards"]:
        url = shard_url(root, entry["index"])
        blob = storage.read_bytes(url)
        if len(blob) != entry.get("bytes") or hashlib.sha256(blob).hexdigest() != entry.get("sha256"):
            raise ShardError(f"{url}: size or sha256 differs from the manifest (truncated or tampered); "
                             "run `stablerep dataset verify`")
        pf = pq.ParquetFile(pa.BufferReader(blob))
        missing = [c for c in CORE_COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise ShardError(f"{url}: no column {', '.join(missing)}")
        extras = _source_columns(pf.schema_arrow)
        rows = 0
        for group in range(pf.num_row_groups):
            # single-threaded, as read_parquet_bytes reads (see layout.py for why)
            table = pf.read_row_group(group, columns=CORE_COLUMNS + extras, use_threads=False)
            for row in table.to_pylist():
                rows += 1
                yield url, row, extras
        if rows != entry.get("rows"):
            raise ShardError(f"{url}: {rows} rows, the manifest says {entry.get('rows')}")


def _sample_members(url: str, row: dict[str, Any], extras: list[str]) -> tuple[str, list[tuple[str, bytes]]]:
    key = sample_key(row["caption_id"], row["image_index"])
    image = row["image"] or {}
    data = image.get("bytes")
    where = f"{url}: caption {row['caption_id']} image {row['image_index']}"
    if not data:
        raise ShardError(f"{where}: no image bytes")
    ext = image_extension(data, image.get("path"))
    if ext is None:
        raise ShardError(f"{where}: image of unknown type (path {image.get('path')!r}, not JPEG, PNG or WebP)")
    meta = {name: row[name] for name in META_FIELDS}
    meta.update({_source_name(name): _json_value(row[name]) for name in extras})
    text = json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return key, [(f"{key}.{ext}", data), (f"{key}.txt", (row["caption"] or "").encode("utf-8")),
                 (f"{key}.json", text.encode("utf-8"))]


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _tar_bytes(samples: Iterator[list[tuple[str, bytes]]]) -> tuple[bytes, int]:
    """One tar of the ``samples`` given (each a list of (member name, bytes)), built in memory, and
    how many it holds."""
    buf, count = io.BytesIO(), 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for members in samples:
            for name, data in members:
                _add_member(tar, name, data)
            count += 1
    return buf.getvalue(), count


def _iter_samples(root: str, manifest: dict[str, Any]) -> Iterator[list[tuple[str, bytes]]]:
    previous = None
    for url, row, extras in _iter_rows(root, manifest):
        key, members = _sample_members(url, row, extras)
        if key == previous:  # webdataset would merge the two into one sample
            raise ShardError(f"{url}: two rows for caption {row['caption_id']} image {row['image_index']}")
        previous = key
        yield members


def _listing(out: str) -> list[str]:
    """Names directly under OUT (empty when it does not exist yet)."""
    def names() -> list[str]:
        fs, path = storage.get_fs(out)
        try:
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
        except FileNotFoundError:
            return []

    return storage.with_retries("list", out, names)


def _check_out(out: str, root: str, identity: dict[str, Any], names: list[str]) -> None:
    """Refuse an OUT that holds anything but an export of this very dataset."""
    foreign = sorted(n for n in names if n not in (SIZES_FILE, EXPORT_FILE) and not _TAR_NAME.match(n))
    if foreign:
        raise ExportError(f"{out} holds files that are not a webdataset export (e.g. {foreign[0]}); "
                          "choose a new or empty --out")
    if EXPORT_FILE not in names:
        return
    url = storage.join(out, EXPORT_FILE)
    try:
        previous = json.loads(storage.read_bytes(url))
        found = {"config_hash": previous["config_hash"], "totals": previous["totals"]}
    except (ValueError, KeyError, TypeError):
        raise ExportError(f"{url}: not an export summary; choose a new or empty --out") from None
    if found != identity:
        raise ExportError(f"{out} holds an export of another dataset (config {found['config_hash']}, "
                          f"{(found['totals'] or {}).get('images')} images), not of {root} (config "
                          f"{identity['config_hash']}, {identity['totals'].get('images')} images); "
                          "choose another --out")


def _remove(url: str) -> None:
    storage.with_retries("remove", url, lambda: storage.remove(url))


def export_webdataset(root: str, out: str, samples_per_tar: int = 1000, progress: bool = True) -> dict[str, Any]:
    """Write the dataset at ``root`` as WebDataset tars under ``out`` (a local path or fsspec URL),
    then OUT/sizes.json and OUT/export.json; return the summary (export.json's content plus OUT).

    An earlier export of the same dataset at OUT is redone (tars beyond the new count removed);
    an export of another dataset, or any other file at OUT, is refused.
    """
    if isinstance(samples_per_tar, bool) or not isinstance(samples_per_tar, int) or samples_per_tar < 1:
        raise ExportError(f"--samples-per-tar must be an integer >= 1, got {samples_per_tar!r}")
    manifest = read_manifest(root)
    totals = manifest.get("totals") or {}
    identity = {"config_hash": manifest.get("config_hash"), "totals": totals}
    total = sum(entry.get("rows", 0) for entry in manifest["shards"])
    if not total:
        raise ExportError(f"{root}: the dataset has no images to export")
    names = _listing(out)
    _check_out(out, root, identity, names)
    for name in (EXPORT_FILE, SIZES_FILE):  # a redo stopped midway must look unfinished
        if name in names:
            _remove(storage.join(out, name))
    sizes: dict[str, int] = {}
    n_bytes = 0
    samples = _iter_samples(root, manifest)
    with tqdm(total=total, desc="export webdataset", unit="img", disable=None if progress else True) as bar:
        while True:
            blob, count = _tar_bytes(itertools.islice(samples, samples_per_tar))
            if not count:
                break
            name = tar_name(len(sizes))
            storage.write_bytes(storage.join(out, name), blob)
            sizes[name], n_bytes = count, n_bytes + len(blob)
            bar.update(count)
    for name in names:  # tars of an earlier, longer export of this dataset
        match = _TAR_NAME.match(name)
        if match and int(match.group(1)) >= len(sizes):
            _remove(storage.join(out, name))
    n_tars = len(sizes)
    summary = {
        "format": "webdataset",
        "export_format": EXPORT_FORMAT,
        "source": root,
        "config_hash": identity["config_hash"],
        "totals": totals,
        "samples": sum(sizes.values()),
        "tars": n_tars,
        "samples_per_tar": samples_per_tar,
        "bytes": n_bytes,
        "pattern": f"{{{tar_name(0)[:-4]}..{tar_name(n_tars - 1)[:-4]}}}.tar",
        "key": "caption_id as 16 hex digits, '_', image_index as 3 digits",
    }
    storage.write_bytes(storage.join(out, SIZES_FILE), json.dumps(sizes, indent=1).encode())
    storage.write_bytes(storage.join(out, EXPORT_FILE), json.dumps(summary, indent=1).encode())
    return {**summary, "out": out, "train_data": storage.join(out, summary["pattern"])}
