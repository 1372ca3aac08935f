"""Training-batch throughput of the shard loader against the paper's layout, in the same run.

Each loader makes the same kind of batch: captions x m augmented 224 px images with the paper's
augmentations, normalised floats, from the same generated pictures (256 px as the paper stores
them, with photo-like texture so that PNG and JPEG sizes are realistic):
  shards      Parquet shards (JPEG q95) -> ShardBatches: decode + crop + flip in the workers,
              colour jitter / grayscale / blur batched in the consumer (here: on the CPU)
  jpeg_folder the paper's code path on the shards' own files: one JPEG per image (the same q95
              bytes the shards hold) plus a CSV, PIL decode and torchvision's per-image PIL
              transforms in the workers: the fair baseline, the same file format as ours
  png_folder  the paper's layout and code path: the same pictures as PNG files (as the paper
              stores them; about 4x the bytes to read and inflate), otherwise as jpeg_folder
  in_memory   the same JPEG bytes held in memory, our decode + augmentation: the ceiling for
              what any storage layout can give with this augmentation
All use the same number of DataLoader workers (each count of --workers in turn) and take turns,
one timed window each, in rotating order. Each timed window starts a fresh iterator and stays
inside one epoch (--captions large enough), so worker start-up and epoch boundaries are not in
the figures. ``ratio`` is shards / jpeg_folder (the same format; also ``ratio_to_jpeg_folder``),
``ratio_to_png_folder`` shards / png_folder (format and code path together), ``ratio_to_memory``
shards / in_memory, for the first worker count (all are under ``runs``); below 1 means slower.
--profile writes a cProfile of the per-caption path (one process: shard reader vs in-memory,
decode + crop + flip) and records its CPU milliseconds per caption.
Results: benchmarks/results/loader-<device>.json (the device that finishes the batches).

    python benchmarks/loader.py --captions 400 --m 6 --batch 16 --workers 2 --batches 10
    python benchmarks/loader.py --device cuda --captions 800 --workers 2,6 --batches 15 --profile prof.txt
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import itertools
import os
import pstats
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T1

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.helpers
from results_io import ResultFile  # noqa: E402

from stablerep.config import AugmentConfig  # noqa: E402
from stablerep.data.augment import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchPhotometric,
    build_geometric,
    prepare_images,
)
from stablerep.data.shards import ShardBatches, ShardCaptionDataset, collate_captions, decode  # noqa: E402
from stablerep.shards import config_hash, write_manifest, write_shard  # noqa: E402
from tests.helpers.datasets import example_records, make_image_bytes  # noqa: E402


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


class FileFolder(Dataset):
    """The paper's layout: a CSV of (path, caption), image files (PNG or JPEG) read with PIL."""

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


def _pictures(seeds: list[int], size: int, texture: float) -> tuple[list[bytes], list[bytes]]:
    """(JPEG q95, PNG) bytes of each seed's picture, made on every core."""
    with ProcessPoolExecutor(max(1, min(16, os.cpu_count() or 1))) as pool:
        jpegs = list(pool.map(make_image_bytes, seeds, [size] * len(seeds), ["JPEG"] * len(seeds),
                              [95] * len(seeds), [texture] * len(seeds), chunksize=16))
        pngs = list(pool.map(make_image_bytes, seeds, [size] * len(seeds), ["PNG"] * len(seeds),
                             [90] * len(seeds), [texture] * len(seeds), chunksize=16))
    return jpegs, pngs


def prepare(work: Path, n_captions: int, m: int, size: int, texture: float):
    records = example_records([f"benchmark caption {i}" for i in range(n_captions)], m, size=8)
    jpegs, pngs = _pictures([r.seed for r in records], size, texture)
    for r, data in zip(records, jpegs, strict=True):
        r.image, r.width, r.height = data, size, size
    root = str(work / "shards_ds")
    h = config_hash({"bench": n_captions, "m": m})
    per_shard = 100 * m
    indices = [k for k, start in enumerate(range(0, len(records), per_shard))
               if write_shard(root, k, records[start:start + per_shard], h)]
    write_manifest(root, indices, {"bench": True}, h)
    csvs = {kind: write_folder(work / f"{kind}_folder", records, files, ext)
            for kind, files, ext in (("png", pngs, "png"), ("jpeg", jpegs, "jpg"))}
    groups: dict[int, list[bytes]] = {}
    for r in records:
        groups.setdefault(r.caption_id, []).append(r.image)
    sizes = {"jpeg_kb_per_image": sum(map(len, jpegs)) / len(jpegs) / 1024,
             "png_kb_per_image": sum(map(len, pngs)) / len(pngs) / 1024}
    return root, csvs, list(groups.values()), sizes


def write_folder(folder: Path, records, files: list[bytes], ext: str) -> Path:
    """One file per image plus index.csv of (path, caption); returns the CSV's path."""
    folder.mkdir()
    with open(folder / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption"])
        for r, data in zip(records, files, strict=True):
            name = f"{r.caption_id}_{r.image_index}.{ext}"
            (folder / name).write_bytes(data)
            writer.writerow([name, r.caption])
    return folder / "index.csv"


def measure(make_iter, finish, batches: int) -> float:
    """Batches per second from a fresh iterator; its first batch (worker start-up, first reads) is
    not timed."""
    it = make_iter()
    finish(next(it))
    t = time.perf_counter()
    for _ in range(batches):
        finish(next(it))
    rate = batches / (time.perf_counter() - t)
    del it  # stops its workers
    return rate


def profile_per_caption(root: str, groups: list[list[bytes]], m: int, geometric, path: str | None) -> dict:
    """CPU ms per caption of the workers' job, in one process and one thread: the shard reader
    (read, choose m, seed, decode, crop) against decode + crop of bytes in memory. Median of 3 runs each; with
    ``path``, a cProfile of one run of each (top functions by own time)."""
    n = min(200, len(groups))  # enough for a stable figure

    def shards():
        return sum(1 for _ in itertools.islice(ShardCaptionDataset(root, m, geometric, seed=0, shuffle=False), n))

    def in_memory():
        ds = InMemory(groups, m, geometric)
        return sum(1 for i in range(n) if ds[i] is not None)

    out, text = {}, []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker (and extra threads only add spinning)
    for name, fn in (("shards", shards), ("in_memory", in_memory)):
        runs = []
        for _ in range(3):
            t = time.process_time()
            n = fn()
            runs.append((time.process_time() - t) / n * 1e3)
        out[f"{name}_cpu_ms_per_caption"] = statistics.median(runs)
        if path:
            prof = cProfile.Profile()
            prof.enable()
            fn()
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
            text.append(f"== {name}: {out[f'{name}_cpu_ms_per_caption']:.2f} CPU ms per caption\n{buf.getvalue()}")
    torch.set_num_threads(threads)
    out["shards_vs_in_memory_one_process"] = out["in_memory_cpu_ms_per_caption"] / out["shards_cpu_ms_per_caption"]
    if path:
        Path(path).write_text("\n".join(text))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=int, default=400)
    p.add_argument("--m", type=int, default=6)
    p.add_argument("--batch", type=int, default=16, help="captions per batch")
    p.add_argument("--size", type=int, default=256, help="stored image size")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--texture", type=float, default=12.0, help="noise std making images photo-like")
    p.add_argument("--workers", default="2", help="loader workers; a list (2,6) measures each")
    p.add_argument("--batches", type=int, default=10, help="timed batches per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="where batches are finished (the training device)")
    p.add_argument("--profile", default=None, help="write the per-caption cProfile here")
    p.add_argument("--out-dir", default=None, help="default: benchmarks/results")
    args = p.parse_args()
    device = torch.device(args.device)
    workers = [int(w) for w in str(args.workers).split(",")]
    result = ResultFile("loader", device, {**vars(args), "finished_on": str(device)}, args.out_dir)
    cfg = AugmentConfig()
    geometric, photometric = build_geometric(cfg, args.crop), BatchPhotometric(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        root, csvs, groups, sizes = prepare(Path(tmp), args.captions, args.m, args.size, args.texture)
        result.update(**sizes)
        result.update(per_caption=profile_per_caption(root, groups, args.m, geometric, args.profile))
        runs: dict[int, dict] = {}
        for w in workers:
            runs[w] = measure_all(args, w, device, root, csvs, groups, geometric, photometric)
            first = runs[workers[0]]
            result.update(runs=runs, images_per_s=first["shards"]["images_per_s"], ratio=first["ratio"],
                          ratio_to_jpeg_folder=first["ratio_to_jpeg_folder"],
                          ratio_to_png_folder=first["ratio_to_png_folder"], ratio_to_memory=first["ratio_to_memory"])
    path = result.finish()
    report(result.data, path)


def measure_all(args, workers: int, device, root, csvs, groups, geometric, photometric) -> dict:
    """The four loaders with ``workers`` DataLoader workers each."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

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
        return DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=workers,
                          collate_fn=collate_captions, drop_last=True)

    shards = ShardBatches(ShardCaptionDataset(root, args.m, geometric, seed=0), args.batch, workers)
    runs = {
        "shards": (lambda: shards.iter_from(0), finish_ours),
        "jpeg_folder": (forever(lambda: loader(FileFolder(csvs["jpeg"], args.m, paper_transform(args.crop)))),
                        finish_paper),
        "png_folder": (forever(lambda: loader(FileFolder(csvs["png"], args.m, paper_transform(args.crop)))),
                       finish_paper),
        "in_memory": (forever(lambda: loader(InMemory(groups, args.m, geometric))), finish_ours),
    }
    per_epoch = min(shards.batches_per_slot(0) * max(1, workers), args.captions // args.batch)
    if args.batches + 1 > per_epoch:  # a timed window must not cross an epoch (new workers)
        raise SystemExit(f"error: --captions {args.captions} gives {per_epoch} batches per epoch with {workers} "
                         f"workers; a window needs --batches + 1 = {args.batches + 1}: raise --captions")
    out: dict = {"batches_per_epoch": per_epoch}
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.repeats):  # the loaders take turns, in rotating order
        for name in names[r % len(names):] + names[:r % len(names)]:
            rates[name].append(measure(*runs[name], args.batches))
    for name in names:
        med = statistics.median(rates[name])
        out[name] = {"batches_per_s": med, "images_per_s": med * args.batch * args.m, "repeats": rates[name]}
    out["ratio_to_jpeg_folder"] = out["shards"]["batches_per_s"] / out["jpeg_folder"]["batches_per_s"]
    out["ratio_to_png_folder"] = out["shards"]["batches_per_s"] / out["png_folder"]["batches_per_s"]
    out["ratio"] = out["ratio_to_jpeg_folder"]  # the fair baseline: the same JPEG files
    out["ratio_to_memory"] = out["shards"]["batches_per_s"] / out["in_memory"]["batches_per_s"]
    return out


def report(data: dict, path: Path) -> None:
    s = data["settings"]
    pc = data["per_caption"]
    print(f"{s['batch']} captions x m={s['m']} at {s['crop']} px from {s['size']} px images "
          f"(JPEG {data['jpeg_kb_per_image']:.0f} KB, PNG {data['png_kb_per_image']:.0f} KB each), finished on "
          f"{s['finished_on']}, median of {s['repeats']} x {s['batches']} batches")
    print(f"  one process, CPU ms per caption: shards {pc['shards_cpu_ms_per_caption']:.2f}, "
          f"in memory {pc['in_memory_cpu_ms_per_caption']:.2f} ({pc['shards_vs_in_memory_one_process']:.2f}x)")
    for w, run in data["runs"].items():
        for name in ("shards", "jpeg_folder", "png_folder", "in_memory"):
            r = run[name]
            print(f"  {w} workers  {name:11s} {r['batches_per_s']:7.2f} batches/s  {r['images_per_s']:8.1f} images/s")
        print(f"  {w} workers  shards / jpeg_folder: {run['ratio_to_jpeg_folder']:.2f}x   shards / png_folder: "
              f"{run['ratio_to_png_folder']:.2f}x   shards / in_memory: {run['ratio_to_memory']:.2f}x")
    print(f"  -> {path}")


if __name__ == "__main__":
    main()
