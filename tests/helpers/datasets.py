"""Helpers that write small, real datasets for tests and benchmarks (benchmarks import them with
the repository root on sys.path).

The images are drawn with PIL (a background gradient and a few shapes, so they compress like
pictures, not like noise) and go through the real shard writer and manifest.
"""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageDraw

from stablerep.captions.normalize import caption_id
from stablerep.data.labelled import stratified_split
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
    return write_manifest(root, indices, config, chash, {"generator": "tests.helpers.datasets"})


def digits_images() -> tuple[list[bytes], list[int], list[str]]:
    """scikit-learn's handwritten digits (1,797 real 8x8 scans, 10 classes) as PNG bytes, labels and
    class names. Needs scikit-learn (a test dependency)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for pixels in digits.images:  # (8, 8) in 0..16
        buf = io.BytesIO()
        Image.fromarray(np.round(pixels * (255 / 16)).astype(np.uint8), mode="L").save(buf, format="PNG")
        images.append(buf.getvalue())
    return images, [int(t) for t in digits.target], [str(n) for n in digits.target_names]


def digits_split(labels: list[int], test_fraction: float = 0.2, seed: int = 0) -> list[str]:
    """'train' or 'test' for each digit: a fixed stratified split."""

    _, test = stratified_split(np.array(labels), test_fraction, seed)
    out = ["train"] * len(labels)
    for i in test:
        out[int(i)] = "test"
    return out


def write_digits_imagefolder(root: str, train: int | None = None, test: int | None = None) -> str:
    """The digits as ROOT/{train,test}/DIGIT/NNNN.png (only the first ``train`` / ``test`` of each
    class when given); returns ROOT."""
    from pathlib import Path

    images, labels, _ = digits_images()
    limits, seen = {"train": train, "test": test}, {}
    for i, (data, label, split) in enumerate(zip(images, labels, digits_split(labels), strict=True)):
        if limits[split] is not None and seen.get((split, label), 0) >= limits[split]:
            continue
        seen[(split, label)] = seen.get((split, label), 0) + 1
        path = Path(root) / split / str(label) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_digits_parquet(path: str) -> str:
    """The same digits and split as one Parquet file in Hugging Face's layout (image struct,
    ClassLabel names in the schema metadata, a split column); returns PATH."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    images, labels, names = digits_images()
    splits = digits_split(labels)
    order = sorted(range(len(labels)), key=lambda i: (labels[i], i))  # the image folder's listing order
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": images[i], "path": f"{i:04d}.png"} for i in order], type=image_type),
        "label": pa.array([labels[i] for i in order], type=pa.int64()),
        "split": pa.array([splits[i] for i in order]),
    })
    features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"},
                "split": {"dtype": "string", "_type": "Value"}}
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, path, row_group_size=256)
    return path


def write_digits_shards(root: str, split: str = "train", captions_per_shard: int = 512) -> dict:
    """One split of the digits as a shard dataset, one image per "caption" (its file name): real
    images to train the SimCLR baseline on in tests. Returns the manifest."""
    images, labels, _ = digits_images()
    chosen = [i for i, s in enumerate(digits_split(labels)) if s == split]
    config = {"digits": split, "captions_per_shard": captions_per_shard}
    chash = config_hash(config)
    indices = []
    for index, start in enumerate(range(0, len(chosen), captions_per_shard)):
        records = []
        for i in chosen[start:start + captions_per_shard]:
            text = f"digit scan {i:04d}"
            records.append(ImageRecord(caption_id(text), text, 0, i, images[i], 8, 8, ext="png"))
        write_shard(root, index, records, chash)
        indices.append(index)
    return write_manifest(root, indices, config, chash, {"generator": "tests.helpers.datasets digits"})
