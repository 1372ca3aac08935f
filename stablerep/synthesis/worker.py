"""Plan shards from captions.parquet and synthesise them: skip committed, redo the rest.

A shard is (captions_per_shard captions) x (images_per_caption images), in captions.parquet
order. Each image's seed is a pure function of (seed, caption_id, image_index), so the dataset
is the same however it is split into backend calls, shards, processes and retries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from stablerep import storage
from stablerep.captions.sample import load_captions
from stablerep.config import SynthesisConfig
from stablerep.seeding import image_seed
from stablerep.shards import ImageRecord, committed_mark, config_hash, write_manifest, write_shard
from stablerep.shards.layout import captions_url
from stablerep.synthesis.base import IMAGE_FORMATS, Backend, GenerationRequest, encode_image


@dataclass(frozen=True)
class ShardPlan:
    index: int
    captions: tuple[tuple[int, str], ...]  # (caption_id, caption)


@dataclass
class BuildResult:
    root: str
    manifest: dict[str, Any]
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def plan_shards(captions: list[tuple[int, str]], captions_per_shard: int) -> list[ShardPlan]:
    return [ShardPlan(i, tuple(captions[start:start + captions_per_shard]))
            for i, start in enumerate(range(0, len(captions), captions_per_shard))]


def shard_requests(plan: ShardPlan, cfg: SynthesisConfig) -> list[GenerationRequest]:
    return [GenerationRequest(cid, text, k, image_seed(cfg.seed, cid, k))
            for cid, text in plan.captions for k in range(cfg.images_per_caption)]


def synthesize_shard(root: str, plan: ShardPlan, backend: Backend, cfg: SynthesisConfig,
                     on_images: Callable[[int], None] | None = None) -> tuple[dict[str, Any], bool]:
    """Make and commit one shard; returns (its mark, whether it was written now)."""
    chash = config_hash(cfg.hashed())
    mark = committed_mark(root, plan.index, chash)
    if mark is not None:
        return mark, False
    requests = shard_requests(plan, cfg)
    records: list[ImageRecord] = []
    ext = IMAGE_FORMATS[cfg.image_format][1]
    for start in range(0, len(requests), cfg.batch_size):
        batch = requests[start:start + cfg.batch_size]
        for req, img in zip(batch, backend.generate(batch), strict=True):
            data, w, h = encode_image(img, cfg.image_size, cfg.image_format, cfg.quality)
            records.append(ImageRecord(req.caption_id, req.caption, req.image_index, req.seed, data, w, h, ext))
        if on_images:
            on_images(len(batch))
    return write_shard(root, plan.index, records, chash), True


def load_plan(captions_root: str, cfg: SynthesisConfig) -> list[ShardPlan]:
    table = load_captions(captions_root)
    captions = list(zip(table.column("caption_id").to_pylist(), table.column("caption").to_pylist(), strict=True))
    if not captions:
        raise ValueError(f"{captions_url(captions_root)} holds no captions")
    return plan_shards(captions, cfg.captions_per_shard)


def build_dataset(captions_root: str, out_root: str, cfg: SynthesisConfig, backend: Backend,
                  progress: bool = True, shards: list[int] | None = None) -> BuildResult:
    """Synthesise every planned shard of ``captions_root`` into ``out_root`` (or only ``shards``),
    then write the manifest when every planned shard is committed."""
    plans = load_plan(captions_root, cfg)
    if captions_root.rstrip("/") != out_root.rstrip("/"):
        storage.write_bytes(captions_url(out_root), storage.read_bytes(captions_url(captions_root)))
    chosen = [p for p in plans if shards is None or p.index in shards]
    result = BuildResult(out_root, {})
    total = sum(len(p.captions) for p in chosen) * cfg.images_per_caption
    with tqdm(total=total, desc=f"synthesize ({backend.name})", unit="img",
              disable=None if progress else True) as bar:
        for plan in chosen:
            _, written = synthesize_shard(out_root, plan, backend, cfg, bar.update)
            if written:
                result.written.append(plan.index)
            else:
                result.skipped.append(plan.index)
                bar.update(len(plan.captions) * cfg.images_per_caption)
    if shards is None or set(p.index for p in plans) <= set(result.written + result.skipped):
        result.manifest = write_manifest(out_root, [p.index for p in plans], cfg.hashed(),
                                         config_hash(cfg.hashed()), backend.lineage())
    return result
