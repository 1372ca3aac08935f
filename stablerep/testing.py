"""Helpers that write small, real datasets for tests, benchmarks and examples.

The images are drawn with PIL (a background gradient and a few shapes, so they compress like
pictures, not like noise) and go through the real shard writer and manifest.
"""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageDraw

from stablerep.captions.normalize import caption_id
from stablerep.seeding import image_seed
from stablerep.shards.manifest import config_hash, write_manifest
from stablerep.shards.writer import ImageRecord, write_shard


def make_image_bytes(seed: int, size: int = 64, fmt: str = "JPEG", quality: int = 90,
                     texture: float = 0.0) -> bytes:
    """A deterministic picture; ``texture`` (a noise std in grey levels) makes it compress like a
    photograph (a 256 px PNG of about 150 KB at 12) instead of a flat drawing."""
    rng = random.Random(seed)
    top, bottom = [rng.randrange(256) for _ in range(3)], [rng.randrange(256) for _ in range(3)]
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for y in range(size):
        t = y / max(1, size - 1)
        draw.line([(0, y), (size, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    for _ in range(3):
        x0, y0 = rng.randrange(size), rng.randrange(size)
        r = rng.randrange(size // 8 + 1, size // 3 + 2)
        box = [x0 - r, y0 - r, x0 + r, y0 + r]
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    if texture > 0:
        noise = np.random.default_rng(seed).normal(0, texture, (size, size, 3))
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt.upper() in ("JPEG", "WEBP") else {}
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def example_records(captions: list[str], images_per_caption: int, base_seed: int = 0,
                    size: int = 64) -> list[ImageRecord]:
    records = []
    for text in captions:
        cid = caption_id(text)
        for k in range(images_per_caption):
            seed = image_seed(base_seed, cid, k)
            records.append(ImageRecord(cid, text, k, seed, make_image_bytes(seed, size), size, size))
    return records


def write_example_dataset(root: str, n_captions: int = 12, images_per_caption: int = 4,
                          captions_per_shard: int = 5, size: int = 64, base_seed: int = 0,
                          row_group_rows: int = 8) -> dict:
    """Write shards and the manifest of a small dataset at ``root``; return the manifest."""
    captions = [f"example caption number {i}" for i in range(n_captions)]
    config = {"example": True, "images_per_caption": images_per_caption, "size": size, "seed": base_seed,
              "captions_per_shard": captions_per_shard}
    chash = config_hash(config)
    indices = []
    for index, start in enumerate(range(0, n_captions, captions_per_shard)):
        part = captions[start:start + captions_per_shard]
        write_shard(root, index, example_records(part, images_per_caption, base_seed, size), chash,
                    row_group_rows=row_group_rows)
        indices.append(index)
    return write_manifest(root, indices, config, chash, {"generator": "stablerep.testing"})
