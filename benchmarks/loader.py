"""Training-batch throughput of the shard loader against the paper's layout, in the same run.

Each loader makes the same kind of batch: captions x m augmented 224 px images with the paper's
augmentations, normalised floats, from the same generated pictures (256 px as the paper stores
them, with photo-like texture so that PNG and JPEG sizes are realistic):
  shards      Parquet shards (JPEG q95) -> ShardBatches: decode + crop + flip in the workers,
              colour jitter / grayscale / blur batched in the consumer (here: on the CPU)
  png_folder  the paper's layout and code path: one PNG per image plus a CSV, PIL decode and
              torchvision's per-image PIL transforms in the workers
  in_memory   the same JPEG bytes held in memory, our decode + augmentation: the ceiling for
              what any storage layout can give with this augmentation
All use the same number of DataLoader workers; ratios are printed.

    python benchmarks/loader.py --captions 200 --m 6 --batch 16 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T1

from stablerep.config import AugmentConfig
from stablerep.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchPhotometric,
    build_geometric,
    prepare_images,
)
from stablerep.data.shards import ShardBatches, ShardCaptionDataset, collate_captions, decode
from stablerep.shards import config_hash, write_manifest, write_shard
from stablerep.testing import example_records, make_image_bytes


class PILBlur:
    """The official code's GaussianBlur: PIL's filter with sigma drawn from [0.1, 2]."""

    def __call__(self, img):
        import random

        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


def paper_transform(size: int):
    return T1.Compose([
        T1.RandomResizedCrop(size, scale=(0.08, 1.0)),
        T1.RandomApply([T1.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T1.RandomGrayscale(p=0.2),
        T1.RandomApply([PILBlur()], p=0.5),
        T1.RandomHorizontalFlip(),
        T1.ToTensor(),
        T1.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class PngFolder(Dataset):
    """The paper's layout: a CSV of (path, caption), PNG files read with PIL."""

    def __init__(self, csv_path: Path, m: int, transform) -> None:
        with open(csv_path) as f:
            rows = list(csv.DictReader(f))
        self.by_caption: dict[str, list[str]] = {}
        for row in rows:
            self.by_caption.setdefault(row["caption"], []).append(str(csv_path.parent / row["path"]))
        self.captions = list(self.by_caption)
        self.m, self.transform = m, transform

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int):
        paths = self.by_caption[self.captions[i]][: self.m]
        views = [self.transform(Image.open(p).convert("RGB")) for p in paths]
        return {"images": torch.stack(views), "label": i, "caption": self.captions[i]}


class InMemory(Dataset):
    def __init__(self, groups: list[list[bytes]], m: int, transform) -> None:
        self.groups, self.m, self.transform = groups, m, transform

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int):
        views = [self.transform(decode(b)) for b in self.groups[i][: self.m]]
        return {"images": torch.stack(views), "label": i, "caption": ""}


def prepare(work: Path, n_captions: int, m: int, size: int, texture: float):
    records = example_records([f"benchmark caption {i}" for i in range(n_captions)], m, size=8)
    for r in records:
        r.image, r.width, r.height = make_image_bytes(r.seed, size, "JPEG", 95, texture), size, size
    root = str(work / "shards_ds")
    h = config_hash({"bench": n_captions, "m": m})
    per_shard = 100 * m
    indices = [k for k, start in enumerate(range(0, len(records), per_shard))
               if write_shard(root, k, records[start:start + per_shard], h)]
    write_manifest(root, indices, {"bench": True}, h)
    folder = work / "png_folder"
    folder.mkdir()
    png_bytes = 0
    with open(folder / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption"])
        for r in records:
            name = f"{r.caption_id}_{r.image_index}.png"
            data = make_image_bytes(r.seed, size, "PNG", texture=texture)
            (folder / name).write_bytes(data)
            png_bytes += len(data)
            writer.writerow([name, r.caption])
    groups: dict[int, list[bytes]] = {}
    for r in records:
        groups.setdefault(r.caption_id, []).append(r.image)
    sizes = {"jpeg_kb_per_image": sum(len(r.image) for r in records) / len(records) / 1024,
             "png_kb_per_image": png_bytes / len(records) / 1024}
    return root, folder / "index.csv", list(groups.values()), sizes


def measure(make_iter, finish, batches: int, repeats: int) -> list[float]:
    rates = []
    for _ in range(repeats):
        it = make_iter()
        finish(next(it))  # start-up (workers, first shard) is not throughput
        t = time.perf_counter()
        for _ in range(batches):
            finish(next(it))
        rates.append(batches / (time.perf_counter() - t))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=int, default=200)
    p.add_argument("--m", type=int, default=6)
    p.add_argument("--batch", type=int, default=16, help="captions per batch")
    p.add_argument("--size", type=int, default=256, help="stored image size")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--texture", type=float, default=12.0, help="noise std making images photo-like")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="where batches are finished (the training device)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    cfg = AugmentConfig()
    geometric, photometric = build_geometric(cfg, args.crop), BatchPhotometric(cfg)
    step = [0]

    def finish_ours(batch):  # what the training step does on its device
        step[0] += 1
        images = batch["images"].to(device, non_blocking=True)
        out = prepare_images(images, photometric, torch.Generator(device=device).manual_seed(step[0]))
        sync()
        return out

    def finish_paper(batch):  # already augmented and normalised in the workers
        out = batch["images"].to(device, non_blocking=True)
        sync()
        return out

    def forever(factory):
        def make():
            while True:
                yield from factory()
        return make

    def loader(ds):
        return DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                          collate_fn=collate_captions, drop_last=True)

    with tempfile.TemporaryDirectory() as tmp:
        root, csv_path, groups, sizes = prepare(Path(tmp), args.captions, args.m, args.size, args.texture)
        shards = ShardBatches(ShardCaptionDataset(root, args.m, geometric, seed=0), args.batch, args.workers)
        runs = {
            "shards": (lambda: shards.iter_from(0), finish_ours),
            "png_folder": (forever(lambda: loader(PngFolder(csv_path, args.m, paper_transform(args.crop)))), finish_paper),
            "in_memory": (forever(lambda: loader(InMemory(groups, args.m, geometric))), finish_ours),
        }
        results: dict = {"settings": vars(args), **sizes,
                         "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
        for name, (make, finish) in runs.items():
            rates = measure(make, finish, args.batches, args.repeats)
            med = statistics.median(rates)
            results[name] = {"batches_per_s": med, "images_per_s": med * args.batch * args.m, "repeats": rates}
    results["shards_vs_png_folder"] = results["shards"]["batches_per_s"] / results["png_folder"]["batches_per_s"]
    results["shards_vs_in_memory"] = results["shards"]["batches_per_s"] / results["in_memory"]["batches_per_s"]
    print(f"{args.batch} captions x m={args.m} at {args.crop} px from {args.size} px images "
          f"(JPEG {sizes['jpeg_kb_per_image']:.0f} KB, PNG {sizes['png_kb_per_image']:.0f} KB each), "
          f"{args.workers} workers, finished on {device}, median of {args.repeats} x {args.batches} batches")
    for name in runs:
        r = results[name]
        print(f"  {name:11s} {r['batches_per_s']:7.2f} batches/s  {r['images_per_s']:8.1f} images/s")
    print(f"  shards / png_folder: {results['shards_vs_png_folder']:.2f}x   "
          f"shards / in_memory: {results['shards_vs_in_memory']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
