"""Import throughput from WebDataset tars against a plain loop over the same tars, in one run.

The corpus: --images real-photograph crops (scikit-learn's sample photographs, JPEG q90 at
--size px, about the size of an img2dataset download at 256 px), in tars of --per-tar samples
laid out as img2dataset writes them (KEY.jpg, KEY.txt, KEY.json).

  plain   what a careful user would write without us: tarfile over each tar, group the members
          by key, and write the same samples (caption, image bytes, key, url) as Parquet tables of
          --per-shard rows with pyarrow (zstd). No caption ids, no image check, no manifest.
  import  `stablerep dataset import`: index (captions normalised and id'd, every image checked:
          header and end marker), plan, shards with commit marks (fsynced), manifest, source sha256;
          in one process, as the plain loop.
  import_workers  the same with --workers N (a process per input file, N at a time).
Every arm writes to local disk; the arms take turns (--repeats rounds, rotating order) and the
median of each is reported. ``ratio`` is import / plain images per second (one process each);
``ratio_workers`` import_workers / plain.
Results: benchmarks/results/import-cpu.json.

    python benchmarks/import_speed.py --images 4000 --per-tar 1000 --repeats 3 --workers 2
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import ResultFile  # noqa: E402

from stablerep.corpora.importer import ImportConfig, import_corpus  # noqa: E402

WORDS = ("a photo of", "a picture of", "an old", "a bright", "a quiet", "the famous", "a close up of")
THINGS = ("temple", "flower", "garden", "roof", "street", "bridge", "lake", "tree", "river", "market")


def make_corpus(folder: Path, images: int, per_tar: int, size: int, seed: int = 0) -> int:
    """Tars of real-photograph crops in img2dataset's webdataset layout; returns the bytes written."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    total = 0
    for t in range(0, images, per_tar):
        path = folder / f"{t // per_tar:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for k in range(t, min(t + per_tar, images)):
                photo = photos[k % len(photos)]
                side = int(rng.integers(size, min(photo.size)))
                x, y = (int(rng.integers(0, d - side)) for d in photo.size)
                buf = io.BytesIO()
                photo.crop((x, y, x + side, y + side)).resize((size, size)).save(buf, "JPEG", quality=90)
                key = f"{t // per_tar:05d}{k % per_tar:04d}"
                caption = f"{WORDS[k % len(WORDS)]} a {THINGS[(k // 7) % len(THINGS)]} number {k}"
                meta = {"key": key, "url": f"http://example.invalid/{k}.jpg", "caption": caption, "status": "success"}
                for ext, data in (("jpg", buf.getvalue()), ("txt", caption.encode()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        total += path.stat().st_size
    return total


def plain_loop(tars: list[Path], out: Path, per_shard: int) -> int:
    """tarfile + pyarrow: the same samples into Parquet tables, nothing else."""
    out.mkdir(parents=True)
    rows: dict[str, list] = {"caption": [], "image": [], "key": [], "url": []}
    shard = count = 0

    def flush() -> None:
        nonlocal shard, rows
        if rows["caption"]:
            pq.write_table(pa.table(rows), out / f"{shard:06d}.parquet", compression="zstd")
            shard += 1
            rows = {k: [] for k in rows}

    for path in tars:
        with tarfile.open(path) as tar:
            sample: dict[str, bytes] = {}
            current = None
            for member in tar:
                key, ext = member.name.split(".", 1)
                if key != current and sample:
                    _add(rows, sample)
                    count += 1
                    sample = {}
                current = key
                sample[ext] = tar.extractfile(member).read()
                if len(rows["caption"]) >= per_shard:
                    flush()
            if sample:
                _add(rows, sample)
                count += 1
    flush()
    return count


def _add(rows: dict[str, list], sample: dict[str, bytes]) -> None:
    meta = json.loads(sample["json"])
    rows["caption"].append(sample["txt"].decode())
    rows["image"].append(sample["jpg"])
    rows["key"].append(meta["key"])
    rows["url"].append(meta["url"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--per-tar", type=int, default=1000)
    parser.add_argument("--per-shard", type=int, default=1000, help="rows per Parquet file (both arms)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="processes of the import_workers arm")
    parser.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    result = ResultFile("import", torch.device("cpu"), vars(args), args.out_dir)
    work = Path(tempfile.mkdtemp(prefix="import-bench-"))
    try:
        corpus = work / "corpus"
        corpus.mkdir()
        corpus_bytes = make_corpus(corpus, args.images, args.per_tar, args.size)
        tars = sorted(corpus.glob("*.tar"))
        arms = ["plain", "import", "import_workers"]
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for r in range(args.repeats):
            for arm in arms[r % 3:] + arms[:r % 3]:
                out = work / f"{arm}-{r}"
                t0 = time.perf_counter()
                if arm == "plain":
                    n = plain_loop(tars, out, args.per_shard)
                else:
                    n = import_corpus([str(corpus)], str(out), ImportConfig(captions_per_shard=args.per_shard),
                                      progress=False, workers=args.workers if arm == "import_workers" else 1
                                      ).manifest["totals"]["images"]
                times[arm].append(time.perf_counter() - t0)
                assert n == args.images, (arm, n)
                shutil.rmtree(out)
                result.update(seconds=times)
        rates = {arm: args.images / statistics.median(t) for arm, t in times.items()}
        ratio = rates["import"] / rates["plain"]
        ratio_workers = rates["import_workers"] / rates["plain"]
        result.finish(images_per_s=round(rates["import"], 1), baseline_images_per_s=round(rates["plain"], 1),
                      workers_images_per_s=round(rates["import_workers"], 1), ratio=round(ratio, 3),
                      ratio_workers=round(ratio_workers, 3), corpus_mb=round(corpus_bytes / 2**20, 1),
                      goal_ratio=0.9, goal_met=ratio >= 0.9, goal_met_with_workers=ratio_workers >= 0.9)
        print(f"plain loop {rates['plain']:.0f} img/s; import {rates['import']:.0f} img/s (ratio {ratio:.2f}), "
              f"with {args.workers} workers {rates['import_workers']:.0f} img/s (ratio {ratio_workers:.2f}); "
              f"goal 0.9 -> {result.path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
