"""Synthesise a dataset's planned shards (stablerep.shards.plan): skip committed, redo the rest.

Each image's seed is a pure function of (seed,
caption_id, image_index), so the dataset is the same however it is split into backend calls,
shards, processes and retries.

The accelerator never waits for the CPU: images are JPEG-encoded on a thread pool while the next
batch is generated, and a finished shard is written on an upload thread while the next shard is
generated, with both queues bounded and results kept in request order.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from stablerep import storage
from stablerep.config import SynthesisConfig
from stablerep.errors import ShardError
from stablerep.seeding import image_seed
from stablerep.shards import (
    ImageRecord,
    committed_mark,
    config_hash,
    read_manifest,
    write_manifest,
    write_shard,
)
from stablerep.shards.captions import load_captions, merge_captions
from stablerep.shards.images import IMAGE_FORMATS, encode_image
from stablerep.shards.layout import manifest_url
from stablerep.shards.lease import LeaseHeld, writer_lease
from stablerep.shards.plan import PLAN_FILE, ShardPlan, load_plan
from stablerep.synthesis.base import Backend, GenerationRequest
from stablerep.synthesis.native import resolve_native_defaults


@dataclass
class BuildResult:
    root: str
    manifest: dict[str, Any]
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def shard_requests(plan: ShardPlan, cfg: SynthesisConfig) -> list[GenerationRequest]:
    return [GenerationRequest(cid, text, k, image_seed(cfg.seed, cid, k))
            for cid, text in plan.captions for k in range(cfg.images_per_caption)]


def encode_threads() -> int:
    """Threads that JPEG-encode while the accelerator makes the next batch (PIL releases the GIL
    while it resizes and encodes)."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _encode(req: GenerationRequest, img, cfg: SynthesisConfig, ext: str) -> ImageRecord:
    data, w, h = encode_image(img, cfg.image_size, cfg.image_format, cfg.quality)
    return ImageRecord(req.caption_id, req.caption, req.image_index, req.seed, data, w, h, ext)


def generate_records(plan: ShardPlan, backend: Backend, cfg: SynthesisConfig, pool: Executor,
                     on_images: Callable[[int], None] | None = None) -> list[ImageRecord]:
    """The shard's images, generated batch by batch; each batch is encoded on ``pool`` while the
    next one is generated (at most two batches wait there, bounding memory). Records keep request
    order, so the shard's bytes do not depend on thread timing."""
    requests = shard_requests(plan, cfg)
    ext = IMAGE_FORMATS[cfg.image_format][1]
    pending: deque[Future[ImageRecord]] = deque()
    records: list[ImageRecord] = []
    try:
        for start in range(0, len(requests), cfg.batch_size):
            batch = requests[start:start + cfg.batch_size]
            images = backend.generate(batch)
            pending.extend(pool.submit(_encode, req, img, cfg, ext) for req, img in zip(batch, images, strict=True))
            while len(pending) > 2 * cfg.batch_size:
                records.append(pending.popleft().result())
            if on_images:
                on_images(len(batch))
        records.extend(f.result() for f in pending)
    finally:
        for f in pending:
            f.cancel()
    return records


def synthesize_shard(root: str, plan: ShardPlan, backend: Backend, cfg: SynthesisConfig,
                     on_images: Callable[[int], None] | None = None) -> tuple[dict[str, Any], bool]:
    """Make and commit one shard; returns (its mark, whether it was written now)."""
    cfg = resolve_native_defaults(cfg)
    chash = config_hash(cfg.hashed())
    mark = committed_mark(root, plan.index, chash)
    if mark is not None:
        return mark, False
    with ThreadPoolExecutor(encode_threads(), thread_name_prefix="encode") as pool:
        records = generate_records(plan, backend, cfg, pool, on_images)
    return write_shard(root, plan.index, records, chash, lineage=backend.lineage()), True


def synthesize_dataset(captions_root: str, out_root: str, cfg: SynthesisConfig, backend: Backend,
                       progress: bool = True, shards: list[int] | None = None,
                       owner: str = "a dataset build", run: str | None = None) -> BuildResult:
    """Synthesise every planned shard of ``captions_root`` into ``out_root`` (or only ``shards``),
    then write the manifest when every planned shard is committed.

    A whole build holds the root's writer lease (see stablerep.shards.lease) from start to end, so
    a second build of the same root waits or fails naming this one (``owner``, ``run``). A batch
    (``shards`` given) runs beside the build that planned it: it takes the lease only to append
    captions or extend the plan, and writes the manifest only when the lease is free."""
    cfg = resolve_native_defaults(cfg)  # unset settings: the backend's own, as the hash records them
    if shards is not None:
        return _build(captions_root, out_root, cfg, backend, progress, shards)
    with writer_lease(out_root, owner, run=run):
        return _build(captions_root, out_root, cfg, backend, progress, None)


def _build(captions_root: str, out_root: str, cfg: SynthesisConfig, backend: Backend, progress: bool,
           shards: list[int] | None) -> BuildResult:
    if captions_root.rstrip("/") != out_root.rstrip("/"):
        merge_captions(out_root, load_captions(captions_root))
    plans = load_plan(out_root, cfg)
    chosen = [p for p in plans if shards is None or p.index in shards]
    result = BuildResult(out_root, {})
    total = sum(len(p.captions) for p in chosen) * cfg.images_per_caption
    with tqdm(total=total, desc=f"synthesize ({backend.name})", unit="img",
              disable=None if progress else True) as bar:
        _synthesize_overlapped(out_root, chosen, backend, cfg, result, bar.update)
    if shards is None:
        result.manifest = finish_dataset(out_root, plans, cfg, backend.lineage())
    elif set(p.index for p in plans) <= set(result.written + result.skipped):
        # a batch of a larger build: the build that holds the root writes the manifest when its
        # batches are in (LeaseHeld), or already planned more shards than this batch knows (ShardError)
        with contextlib.suppress(LeaseHeld, ShardError):
            result.manifest = finish_dataset(out_root, plans, cfg, backend.lineage(), wait_s=0)
    return result


def _synthesize_overlapped(root: str, plans: list[ShardPlan], backend: Backend, cfg: SynthesisConfig,
                           result: BuildResult, progress: Callable[[int], None]) -> None:
    """Synthesise ``plans`` in order. A finished shard is written (parquet, then its mark) on an
    upload thread while the next shard is generated; at most one shard waits there, and shards
    commit in plan order. If generation fails, the shard already handed to the uploader is still
    committed before the error propagates: it is complete work."""
    chash = config_hash(cfg.hashed())
    lineage = backend.lineage()
    with ThreadPoolExecutor(encode_threads(), thread_name_prefix="encode") as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="upload") as uploader:
        upload: tuple[int, Future] | None = None
        for plan in plans:
            if committed_mark(root, plan.index, chash) is not None:
                result.skipped.append(plan.index)
                progress(len(plan.captions) * cfg.images_per_caption)
                continue
            records = generate_records(plan, backend, cfg, pool, progress)
            if upload is not None:
                upload[1].result()
                result.written.append(upload[0])
            upload = plan.index, uploader.submit(write_shard, root, plan.index, records, chash, lineage=lineage)
        if upload is not None:
            upload[1].result()
            result.written.append(upload[0])


def finish_dataset(root: str, plans: list[ShardPlan], cfg: SynthesisConfig,
                   lineage: dict[str, Any] | None = None, wait_s: float | None = None) -> dict[str, Any]:
    """Write the manifest over every planned shard (each must be committed), unless the existing
    manifest already lists exactly these shards for this request: an unchanged rerun writes nothing.
    Without ``lineage``, the newest shard's mark gives it (so no backend is needed here). Runs
    under the root's writer lease (waiting up to ``wait_s`` for another holder)."""
    cfg = resolve_native_defaults(cfg)
    with writer_lease(root, "a manifest update", wait_s=wait_s):
        return _finish(root, plans, cfg, lineage)


def _finish(root: str, plans: list[ShardPlan], cfg: SynthesisConfig, lineage: dict[str, Any] | None) -> dict[str, Any]:
    chash = config_hash(cfg.hashed())
    saved = json.loads(storage.read_bytes(storage.join(root, PLAN_FILE)))["bounds"]
    if len(saved) != len(plans):  # another build extended the plan since these shards were planned
        raise ShardError(f"{root}: the shard plan has {len(saved)} shards, not the {len(plans)} this run planned "
                         "(captions were appended meanwhile); run the build again to finish it")
    if lineage is None:
        mark = committed_mark(root, plans[-1].index, chash) if plans else None
        if mark is None:
            raise ShardError(f"{root}: shard {plans[-1].index if plans else 0} is not committed; "
                             "synthesize every planned shard before writing the manifest")
        lineage = mark.get("lineage", {})
    if storage.exists(manifest_url(root)):
        current = read_manifest(root)
        if current.get("config_hash") == chash and [s["index"] for s in current["shards"]] == [p.index for p in plans]:
            return current
    return write_manifest(root, [p.index for p in plans], cfg.hashed(), chash, lineage)
