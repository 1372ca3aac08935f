"""Import an image-caption corpus with real images into a dataset root of our layout.

Four phases, each a deterministic function of the request, so a killed import rerun gives the
same bytes and one task per input shard can run each per-input phase:

1. index (per input file): read the input once, normalise, filter and id every caption exactly as
   `captions sample` does, check every image, and commit ROOT/import/index/NNNNNN.parquet (one row
   per sample: caption id, where its bytes are, why it was dropped) with its mark.
2. plan (under the root's writer lease): merge the index parts; keep every image of a caption
   (image_index 0, 1, ... in input order); sample ``n`` captions by `captions sample`'s rule; write
   ROOT/import/images.parquet (one row group per output shard), captions.parquet and, last,
   plan.json. A caption's output shard is the one of the input where it first appears.
3. write (per input file): each output shard of that input reads its images' bytes back by
   locator (from any input that holds them), stores them as they came (or resized on request) and
   commits the shard with its mark, as synthesis does.
4. manifest (under the lease): the committed shards, with lineage naming every source file (size,
   ETag or sha256, format) and the rows skipped by reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from stablerep import storage
from stablerep.captions.normalize import CaptionFilter, caption_id, normalize_caption
from stablerep.captions.sample import sample_key
from stablerep.corpora.images import check_image
from stablerep.corpora.inputs import FORMATS, CorpusInput, resolve_inputs
from stablerep.corpora.readers import iter_samples, read_images
from stablerep.errors import CorpusSourceError, ShardError
from stablerep.shards.captions import write_caption_table
from stablerep.shards.images import encode_image
from stablerep.shards.layout import read_parquet_bytes
from stablerep.shards.lease import writer_lease
from stablerep.shards.manifest import config_hash, read_manifest, write_manifest
from stablerep.shards.plan import PLAN_FILE
from stablerep.shards.writer import ImageRecord, committed_mark, write_shard

IMPORT_DIR = "import"
INDEX_SCHEMA = pa.schema([
    ("position", pa.int64()), ("where", pa.string()), ("caption_id", pa.int64()), ("caption", pa.string()),
    ("drop", pa.string()), ("locator", pa.string()), ("ext", pa.string()), ("width", pa.int32()),
    ("height", pa.int32()), ("source_key", pa.string()), ("source_url", pa.string()),
])
IMAGES_SCHEMA = pa.schema([
    ("shard", pa.int32()), ("caption_id", pa.int64()), ("caption", pa.string()), ("image_index", pa.int32()),
    ("input", pa.int32()), ("locator", pa.string()), ("ext", pa.string()), ("width", pa.int32()),
    ("height", pa.int32()), ("source_key", pa.string()), ("source_url", pa.string()),
])


class ImportConfig(BaseModel):
    """How to read a corpus and what to keep of it (every field changes what is written)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["auto", *FORMATS] = Field("auto", description="input format (auto: from names and schemas)")
    image_column: str | None = Field(None, description="image column (img2dataset parquet: jpg; HF: the Image "
                                                       "column; CSV: image)")
    caption_column: str = Field("caption", description="caption column (parquet, CSV)")
    caption_extension: str = Field("txt", description="WebDataset member holding the caption")
    image_extensions: list[str] = Field(default_factory=lambda: ["jpg", "jpeg", "png", "webp"],
                                        description="WebDataset members that hold the image (first found)")
    n: int | None = Field(None, ge=1, description="sample this many captions (the rule of `captions sample`)")
    seed: int = Field(0, description="sampling seed (with n)")
    allow_fewer: bool = Field(False, description="with n: use every caption when fewer are usable")
    captions_per_shard: int = Field(1000, ge=1, description="captions per output shard")
    image_size: int | None = Field(None, ge=8, le=4096, description="resize (shorter side, re-encoded); "
                                                                    "default: bytes kept as they came")
    skip_bad_images: bool = Field(False, description="skip (and count) undecodable or truncated images "
                                                     "instead of failing")
    full_decode: bool = Field(False, description="decode every image in full (default: header and end check)")
    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(1000, ge=1)
    min_words: int = Field(1, ge=0)
    blocklist: list[str] = Field(default_factory=list, description="words that drop a caption")

    def caption_filter(self) -> CaptionFilter:
        return CaptionFilter(self.min_chars, self.max_chars, self.min_words, set(self.blocklist))

    def reader_options(self) -> dict[str, Any]:
        return {"image_column": self.image_column, "caption_column": self.caption_column}


@dataclass
class ImportResult:
    root: str
    inputs: int
    written: list[int]
    skipped: list[int]
    manifest: dict[str, Any] | None


def _dir(root: str, *parts: str) -> str:
    return storage.join(root, IMPORT_DIR, *parts)


def _index_url(root: str, i: int) -> str:
    return _dir(root, "index", f"{i:06d}.parquet")


def _index_mark_url(root: str, i: int) -> str:
    return _dir(root, "index", f"{i:06d}.json")


def _parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=row_group_size)
    return buf.getvalue()


# -- the request and its inputs ---------------------------------------------------------------
def request_hash(cfg: ImportConfig, inputs: list[CorpusInput]) -> str:
    """What the import's bytes depend on: the settings and every input's url, size and ETag."""
    return config_hash({"import": cfg.model_dump(mode="json"), "inputs": [i.lineage() for i in inputs]})


def open_request(sources: list[str], root: str, cfg: ImportConfig) -> tuple[list[CorpusInput], str]:
    """Resolve the sources to input files and record them at ROOT/import/request.json; a root
    imported from other inputs or with other settings is refused (a new request needs a new root)."""
    inputs = resolve_inputs(sources, cfg.format, **cfg.reader_options())
    chash = request_hash(cfg, inputs)
    url = _dir(root, "request.json")
    if storage.exists(url):
        saved = json.loads(storage.read_bytes(url))
        if saved.get("config_hash") != chash:
            raise ShardError(f"{root} was imported from other sources or with other settings "
                             f"(request {saved.get('config_hash')}, this one {chash}); import into a new root")
    else:
        request = {"config_hash": chash, "config": cfg.model_dump(mode="json"), "sources": list(sources),
                   "inputs": [i.lineage() for i in inputs]}
        storage.write_bytes(url, json.dumps(request, indent=1).encode())
    return inputs, chash


def load_request(root: str) -> tuple[list[CorpusInput], ImportConfig, str]:
    """The inputs, settings and hash recorded by open_request (for tasks that run one phase)."""
    saved = json.loads(storage.read_bytes(_dir(root, "request.json")))
    inputs = [CorpusInput(url=i["url"], format=i["format"], size=i["size"], etag=i.get("etag"))
              for i in saved["inputs"]]
    return inputs, ImportConfig.model_validate(saved["config"]), saved["config_hash"]


# -- phase 1: index one input -----------------------------------------------------------------
def _file_sha256(inp: CorpusInput) -> str | None:
    """sha256 of a local input (an object store's ETag stands for it elsewhere)."""
    if inp.etag is not None:
        return None
    fs, path = storage.get_fs(inp.url)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _index_row(sample, cfg: ImportConfig, flt: CaptionFilter, where_file: str) -> dict[str, Any]:
    row = {"position": sample.position, "where": sample.where, "caption_id": None, "caption": None,
           "drop": sample.skip, "locator": sample.locator, "ext": sample.ext, "width": None, "height": None,
           "source_key": _text(sample.source.get("key")), "source_url": _text(sample.source.get("url"))}
    if row["drop"] is not None:
        return row
    if sample.caption is None:
        row["drop"] = "no_caption"
        return row
    text, reason = flt.check(normalize_caption(sample.caption))
    if text is None:
        row["drop"] = reason
        return row
    row["caption"], row["caption_id"] = text, caption_id(text)
    if sample.image is None:
        row["drop"] = "no_image"
        return row
    try:
        row["width"], row["height"] = check_image(sample.image, f"{where_file}: {sample.where}", cfg.full_decode)
    except CorpusSourceError:
        if not cfg.skip_bad_images:
            raise
        row["drop"] = "bad_image"
    return row


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def index_input(root: str, inputs: list[CorpusInput], i: int, cfg: ImportConfig, chash: str) -> dict[str, Any]:
    """Index input ``i`` (skipped when its index is committed); returns its mark."""
    mark_url = _index_mark_url(root, i)
    if storage.exists(mark_url):
        mark = json.loads(storage.read_bytes(mark_url))
        if mark.get("config_hash") == chash and storage.exists(_index_url(root, i)):
            return mark
    inp = inputs[i]
    flt = cfg.caption_filter()
    rows = [_index_row(s, cfg, flt, inp.url) for s in iter_samples(
        inp, caption_extension=cfg.caption_extension, image_extensions=tuple(cfg.image_extensions),
        **cfg.reader_options())]
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    blob = _parquet_bytes(table)
    dropped = Counter(r["drop"] for r in rows if r["drop"] is not None)
    mark = {"input": i, **inp.lineage(), "sha256": _file_sha256(inp), "rows": len(rows),
            "usable": len(rows) - sum(dropped.values()), "dropped": dict(sorted(dropped.items())),
            "index_bytes": len(blob), "config_hash": chash}
    storage.write_bytes(_index_url(root, i), blob)
    storage.write_bytes(mark_url, json.dumps(mark, indent=1).encode())
    return mark


def _index_marks(root: str, n_inputs: int, chash: str) -> list[dict[str, Any]]:
    marks = []
    for i in range(n_inputs):
        url = _index_mark_url(root, i)
        mark = json.loads(storage.read_bytes(url)) if storage.exists(url) else None
        if mark is None or mark.get("config_hash") != chash:
            raise ShardError(f"{root}: input {i} is not indexed for this request (no {url}); "
                             "index every input before planning")
        marks.append(mark)
    return marks


# -- phase 2: plan ----------------------------------------------------------------------------
def _gather(root: str, n_inputs: int) -> dict[int, list[tuple]]:
    """caption id -> its usable images as (input, position, caption, locator, ext, w, h, key, url),
    in input order; dict order is the order of first appearance."""
    images: dict[int, list[tuple]] = {}
    for i in range(n_inputs):
        table = read_parquet_bytes(storage.read_bytes(_index_url(root, i)))
        table = table.filter(pc.is_null(table.column("drop")))
        for r in table.to_pylist():
            images.setdefault(r["caption_id"], []).append(
                (i, r["position"], r["caption"], r["locator"], r["ext"], r["width"], r["height"],
                 r["source_key"], r["source_url"]))
    return images


def _choose(images: dict[int, list[tuple]], cfg: ImportConfig, root: str) -> list[int]:
    ids = list(images)
    if not ids:
        raise CorpusSourceError(f"{root}: no usable row in the sources (every row was dropped; see "
                                "ROOT/import/index/*.json for the reasons)")
    if cfg.n is None:
        return ids
    if len(ids) < cfg.n and not cfg.allow_fewer:
        raise CorpusSourceError(f"only {len(ids)} distinct usable captions in the sources, fewer than the "
                                f"{cfg.n} asked; ask for fewer or allow fewer (--allow-fewer)")
    chosen = set(sorted(ids, key=lambda cid: sample_key(cfg.seed, cid))[:cfg.n])
    return [cid for cid in ids if cid in chosen]  # kept in order of first appearance


def plan_import(root: str, inputs: list[CorpusInput], cfg: ImportConfig, chash: str,
                wait_s: float | None = None) -> dict[str, Any]:
    """Merge the index parts into the caption list and the shard plan (under the writer lease);
    an existing plan of this request is kept as it is."""
    with writer_lease(root, "a corpus import plan", wait_s=wait_s):
        url = storage.join(root, PLAN_FILE)
        if storage.exists(url):
            plan = json.loads(storage.read_bytes(url))
            if plan.get("kind") != "import" or plan.get("config_hash") != chash:
                raise ShardError(f"{url}: {root} already holds another dataset (plan {plan.get('config_hash')}); "
                                 "import into a new root")
            return plan
        marks = _index_marks(root, len(inputs), chash)
        images = _gather(root, len(inputs))
        chosen = _choose(images, cfg, root)
        by_input: dict[int, list[int]] = defaultdict(list)
        for cid in chosen:
            by_input[images[cid][0][0]].append(cid)
        rows, bounds, shard_inputs, order = [], [], [], []
        for i in sorted(by_input):
            ids = by_input[i]
            for start in range(0, len(ids), cfg.captions_per_shard):
                shard = len(bounds)
                part = ids[start:start + cfg.captions_per_shard]
                bounds.append([len(order), len(order) + len(part)])
                shard_inputs.append(i)
                order.extend(part)
                for cid in part:
                    for k, (src, _, text, locator, ext, w, h, key, src_url) in enumerate(images[cid]):
                        rows.append({"shard": shard, "caption_id": cid, "caption": text, "image_index": k,
                                     "input": src, "locator": locator, "ext": ext, "width": w, "height": h,
                                     "source_key": key, "source_url": src_url})
        table = pa.Table.from_pylist(rows, schema=IMAGES_SCHEMA)
        storage.write_bytes(_dir(root, "images.parquet"), _images_parquet(table, len(bounds)))
        captions = pa.table({"caption_id": pa.array(order, pa.int64()),
                             "caption": [images[cid][0][2] for cid in order],
                             "images": pa.array([len(images[cid]) for cid in order], pa.int32())})
        dropped: Counter = Counter()
        for m in marks:
            dropped.update(m["dropped"])
        stats = {"sources": [i.url for i in inputs], "seed": cfg.seed, "requested": cfg.n,
                 "read": sum(m["rows"] for m in marks), "dropped": dict(sorted(dropped.items())),
                 "eligible": len(images), "sampled": len(order), "images": len(rows)}
        write_caption_table(root, captions, stats)
        per_shard = Counter(r["shard"] for r in rows)
        plan = {"kind": "import", "config_hash": chash, "captions_per_shard": cfg.captions_per_shard,
                "bounds": bounds, "inputs": shard_inputs, "rows": len(order),
                "images": [per_shard[s] for s in range(len(bounds))]}
        storage.write_bytes(url, json.dumps(plan).encode())
        return plan


def _images_parquet(table: pa.Table, shards: int) -> bytes:
    """One row group per output shard, so a shard's writer reads only its own rows."""
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, IMAGES_SCHEMA, compression="zstd") as writer:
        column = table.column("shard").to_numpy()
        start = 0
        for s in range(shards):
            stop = start
            while stop < len(column) and column[stop] == s:
                stop += 1
            writer.write_table(table.slice(start, stop - start), row_group_size=max(1, stop - start))
            start = stop
    return buf.getvalue()


def load_import_plan(root: str) -> dict[str, Any]:
    url = storage.join(root, PLAN_FILE)
    if not storage.exists(url):
        raise ShardError(f"{root}: no import plan ({url}); run the plan phase first")
    return json.loads(storage.read_bytes(url))


# -- phase 3: write the shards of one input ---------------------------------------------------
def _shard_rows(root: str, shard: int) -> list[dict[str, Any]]:
    fs, path = storage.get_fs(_dir(root, "images.parquet"))
    with fs.open(path, "rb") as f:
        return pq.ParquetFile(f).read_row_group(shard, use_threads=False).to_pylist()


def _records(root: str, inputs: list[CorpusInput], shard: int, cfg: ImportConfig) -> list[ImageRecord]:
    rows = _shard_rows(root, shard)
    data: dict[int, bytes] = {}
    by_input: dict[int, list[int]] = defaultdict(list)
    for n, r in enumerate(rows):
        by_input[r["input"]].append(n)
    for i, members in by_input.items():
        blobs = read_images(inputs[i], [rows[n]["locator"] for n in members], image_column=cfg.image_column)
        data.update(zip(members, blobs, strict=True))
    records = []
    for n, r in enumerate(rows):
        blob, ext, w, h = data[n], r["ext"], r["width"], r["height"]
        if cfg.image_size is not None:
            blob, w, h, ext = _resized(blob, cfg.image_size, ext)
        records.append(ImageRecord(r["caption_id"], r["caption"], r["image_index"], None, blob, w, h, ext,
                                   source={"source_key": r["source_key"], "source_url": r["source_url"],
                                           "source_file": inputs[r["input"]].url}))
    return records


def _resized(blob: bytes, size: int, ext: str) -> tuple[bytes, int, int, str]:
    fmt = "png" if ext == "png" else "jpeg"
    out, w, h = encode_image(Image.open(io.BytesIO(blob)), size, fmt)
    return out, w, h, "png" if fmt == "png" else "jpg"


def write_input(root: str, inputs: list[CorpusInput], i: int, cfg: ImportConfig, chash: str,
                progress=None) -> tuple[list[int], list[int]]:
    """Write and commit the output shards of input ``i``; returns (written, already committed)."""
    plan = load_import_plan(root)
    written, skipped = [], []
    for shard, src in enumerate(plan["inputs"]):
        if src != i:
            continue
        if committed_mark(root, shard, chash) is not None:
            skipped.append(shard)
        else:
            write_shard(root, shard, _records(root, inputs, shard, cfg), chash,
                        lineage={"kind": "import", "input": inputs[i].url})
            written.append(shard)
        if progress is not None:
            progress(plan["images"][shard])
    return written, skipped


# -- phase 4: the manifest --------------------------------------------------------------------
def finish_import(root: str, inputs: list[CorpusInput], cfg: ImportConfig, chash: str,
                  wait_s: float | None = None) -> dict[str, Any]:
    """The manifest over every planned shard (each must be committed); unchanged when it already
    lists them for this request."""
    with writer_lease(root, "a manifest update", wait_s=wait_s):
        plan = load_import_plan(root)
        indices = list(range(len(plan["bounds"])))
        if storage.exists(storage.join(root, "manifest.json")):
            current = read_manifest(root)
            if current.get("config_hash") == chash and [s["index"] for s in current["shards"]] == indices:
                return current
        marks = _index_marks(root, len(inputs), chash)
        for folder in ("shards", f"{IMPORT_DIR}/index", IMPORT_DIR, ""):  # what killed writers left
            storage.remove_partial_writes(storage.join(root, folder) if folder else root)
        dropped: Counter = Counter()
        for m in marks:
            dropped.update(m["dropped"])
        stats = json.loads(storage.read_bytes(storage.join(root, "captions.json")))
        lineage = {"kind": "import", "formats": sorted({i.format for i in inputs}),
                   "sources": [{k: m[k] for k in ("url", "format", "size", "etag", "sha256") if m.get(k) is not None}
                               for m in marks],
                   "rows_read": sum(m["rows"] for m in marks), "rows_skipped": dict(sorted(dropped.items())),
                   "captions_not_sampled": stats["eligible"] - stats["sampled"],
                   "bytes": "resized" if cfg.image_size else "as stored in the sources"}
        return write_manifest(root, indices, {"import": cfg.model_dump(mode="json")}, chash, lineage)


# -- all phases -------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """A worker ends when the import that started it is killed (Linux: PR_SET_PDEATHSIG), instead
    of living on as an orphan."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _each_input(fn, inputs: list[int], workers: int, args: tuple, on_done) -> list[Any]:
    """``fn(root, inputs, i, cfg, chash)`` for every input ``i``: in this process, or in a pool of
    ``workers`` forked processes (the per-input phases are independent and CPU-bound: tar parsing,
    image checks, Parquet encoding). Forked, since a spawned child would import the caller's main
    module again (torch, seconds of start-up); fsspec makes new filesystem instances in a forked
    child (its instance cache and event loop are per process), and the children never touch the
    lease this process renews."""
    results = []
    if workers <= 1 or len(inputs) <= 1:
        for i in inputs:
            results.append(fn(*args[:2], i, *args[2:]))
            on_done(i, results[-1])
        return results
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_die_with_parent) as pool:
        futures = {pool.submit(fn, *args[:2], i, *args[2:]): i for i in inputs}
        for future in as_completed(futures):
            results.append(future.result())
            on_done(futures[future], results[-1])
    return results


def import_corpus(sources: list[str], root: str, cfg: ImportConfig, *, owner: str = "a corpus import",
                  progress: bool = True, wait_s: float | None = None, workers: int = 1) -> ImportResult:
    """Every phase, holding the root's writer lease from start to end; the per-input phases in
    ``workers`` processes (1: in this one)."""
    with writer_lease(root, owner, wait_s=wait_s):
        inputs, chash = open_request(sources, root, cfg)
        args = (root, inputs, cfg, chash)
        with tqdm(total=len(inputs), desc="index", unit="file", disable=None if progress else True) as bar:
            _each_input(index_input, list(range(len(inputs))), workers, args, lambda i, _: bar.update())
        plan = plan_import(root, inputs, cfg, chash)
        images = Counter()
        for shard, i in enumerate(plan["inputs"]):
            images[i] += plan["images"][shard]
        with tqdm(total=sum(plan["images"]), desc="import", unit="img", disable=None if progress else True) as bar:
            done = _each_input(write_input, sorted(set(plan["inputs"])), workers, args,
                               lambda i, _: bar.update(images[i]))
        manifest = finish_import(root, inputs, cfg, chash)
    written = sorted(s for w, _ in done for s in w)
    skipped = sorted(s for _, k in done for s in k)
    return ImportResult(root, len(inputs), written, skipped, manifest)
