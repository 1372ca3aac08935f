"""Real image-caption corpora for tests, built the way users build them: img2dataset itself
downloads real photographs from a loopback HTTP server into its webdataset and parquet outputs,
beside a Hugging Face ``datasets`` Parquet and a CSV of image paths of the same pairs.

The photographs are crops of scikit-learn's two bundled sample photos (china.jpg, flower.jpg),
so nothing is downloaded from outside. ``build_corpus(folder)`` makes everything in about 25 s on 2 idle cores;
callers cache it (tests/corpora/conftest.py builds it once per session).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

# scikit-learn's sample photographs (what sklearn.datasets.load_sample_images reads), found without
# importing scikit-learn
SAMPLE_IMAGES = Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "images"
N_PHOTOS = 240
PER_SHARD = 64  # img2dataset shards: 241 rows -> 4 shards
MISSING = "photo_missing.jpg"  # in the url list, not on the server: img2dataset records a 404
MISSING_AT = 100  # its row in the url list
REPEATED = {"a photo of a flower": 3, "a temple roof": 2, "pink petals in close up": 2}
BLANK = ["", "   "]  # captions the importer must drop as empty

_SCENES = {
    "china": (["a red pagoda roof", "a temple gate", "green pine trees", "a stone courtyard",
               "curved temple eaves", "a palace wall", "tree branches", "a painted wooden beam"],
              ["against a blue sky", "in the morning light", "seen from below", "in a chinese garden",
               "on a summer day", "behind the trees", "in the afternoon sun", "near the old city"]),
    "flower": (["a pink dahlia", "flower petals", "a yellow flower centre", "a blooming flower",
                "soft pink petals", "a garden flower", "a dahlia bud", "layered petals"],
               ["in close up", "in soft focus", "with a dark background", "in the sunlight",
                "after the rain", "in full bloom", "from above", "at the edge of the frame"]),
}
_STYLES = ["a photo of", "a close-up photo of", "a cropped photo of", "a picture of"]


@dataclass
class Corpus:
    """One corpus in four layouts; every layout carries the same downloaded (bytes, caption) pairs."""

    root: Path
    photos: Path  # the served JPEGs (nothing else in the folder)
    pairs: list[tuple[str, str]]  # the url list: (file name, caption), the missing file included
    downloaded: list[tuple[str, str]]  # what img2dataset downloaded, in url-list order: every layout holds these
    ok_pairs: list[tuple[str, str]]  # of those, the ones an import keeps (captions not blank)
    missing: list[str]  # file names the server answers 404
    url_list: Path  # parquet: url, caption (img2dataset's input)
    webdataset: Path  # img2dataset output_format=webdataset: NNNNN.tar + .parquet + _stats.json
    parquet: Path  # img2dataset output_format=parquet: NNNNN.parquet with a jpg column
    hf_parquet: Path  # one Hugging Face datasets Parquet file (Image column, bytes embedded)
    csv: Path  # image,caption with paths relative to the CSV's folder
    base_url: str  # where the photos were served (gone once the build returns)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return len(self.missing)

    @property
    def empty_captions(self) -> int:
        """Downloaded pairs whose caption is blank ("" or spaces): an import drops them as empty."""
        return sum(not caption.strip() for _, caption in self.downloaded)

    @property
    def repeated(self) -> dict[str, int]:
        """Captions shared by several images: caption -> number of images."""
        counts = Counter(caption for _, caption in self.ok_pairs if caption.strip())
        return {c: n for c, n in counts.items() if n > 1}

    def sha256(self, name: str) -> str:
        return hashlib.sha256((self.photos / name).read_bytes()).hexdigest()


# -- photographs and captions -----------------------------------------------------------------
def _captions(rng: np.random.Generator, scenes: list[str], special: bool) -> list[str]:
    """One caption per photo: unique phrases, then (``special``) a few repeated and blank ones."""
    pools = {}
    for scene, (subjects, settings) in _SCENES.items():
        phrases = [f"{style} {subject} {setting}" for style in _STYLES for subject in subjects for setting in settings]
        pools[scene] = [phrases[i] for i in rng.permutation(len(phrases))]
    captions = [pools[scene].pop() for scene in scenes]
    if not special:
        return captions
    shared = [c for c, n in REPEATED.items() for _ in range(n)] + BLANK
    for i, caption in zip(rng.choice(len(captions), len(shared), replace=False), shared, strict=True):
        captions[i] = caption
    return captions


def make_photos(folder: Path, n: int = N_PHOTOS, seed: int = 0, special: bool = True) -> list[tuple[str, str]]:
    """``n`` distinct JPEG crops (64-96 px a side) of scikit-learn's sample photographs, with a
    caption each (``special``: some shared by 2-3 photos, two blank); returns (file name,
    caption) in order."""
    from PIL import Image

    sources = [(name, np.asarray(Image.open(SAMPLE_IMAGES / f"{name}.jpg").convert("RGB"))) for name in _SCENES]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names, scenes, seen = [], [], set()
    while len(names) < n:
        scene, image = sources[len(names) % len(sources)]
        w, h = (int(v) for v in rng.integers(64, 97, size=2))
        x, y = int(rng.integers(0, image.shape[1] - w)), int(rng.integers(0, image.shape[0] - h))
        crop = image[y:y + h, x:x + w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(crop)).save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        name = f"photo_{len(names):03d}.jpg"
        (folder / name).write_bytes(data)
        names.append(name)
        scenes.append(scene)
    return list(zip(names, _captions(rng, scenes, special), strict=True))


# -- serving and downloading ------------------------------------------------------------------
@contextlib.contextmanager
def serve(folder: Path):
    """The folder over HTTP on 127.0.0.1 (a free port, in a thread); yields the base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def img2dataset_env() -> dict[str, str]:
    """Offline settings img2dataset needs, set before it is imported (in the child process)."""
    return {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}


_DOWNLOAD = ("import json, sys\nfrom img2dataset import download\n"
             "for options in json.loads(sys.argv[1]):\n    download(**options)\n")


def start_img2dataset(url_list: Path, outputs: dict[str, Path]) -> subprocess.Popen:
    """img2dataset's own ``download`` in one child process, once per output format (its worker
    pool and logger are spawned processes of their own): bytes kept as served (no resize, no
    re-encode of JPEGs), small shards, one worker and one thread (so rows keep url-list order)."""
    runs = [dict(url_list=str(url_list), output_folder=str(out), output_format=fmt, input_format="parquet",
                 url_col="url", caption_col="caption", resize_mode="no", skip_reencode=True, encode_format="jpg",
                 number_sample_per_shard=PER_SHARD, processes_count=1, thread_count=1, timeout=10, retries=0,
                 enable_wandb=False, disallowed_header_directives=[], compute_hash="sha256")
            for fmt, out in outputs.items()]
    log = open(url_list.parent / "img2dataset.log", "wb")  # noqa: SIM115 - closed in wait_img2dataset
    proc = subprocess.Popen([sys.executable, "-c", _DOWNLOAD, json.dumps(runs)], env=img2dataset_env(),
                            stdout=log, stderr=subprocess.STDOUT, cwd=url_list.parent)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def wait_img2dataset(proc: subprocess.Popen, timeout: float = 300) -> None:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.log.close()  # type: ignore[attr-defined]
    if proc.returncode != 0:
        text = Path(proc.log.name).read_text(errors="replace")[-3000:]  # type: ignore[attr-defined]
        raise RuntimeError(f"img2dataset failed (exit {proc.returncode}): {text}")


# -- the other layouts ------------------------------------------------------------------------
def write_hf_parquet(photos: Path, pairs: list[tuple[str, str]], path: Path) -> Path:
    """The pairs as Hugging Face ``datasets`` writes a Hub dataset: an Image column with the bytes
    embedded (``to_parquet`` alone keeps only the paths)."""
    import datasets
    import pyarrow.parquet as pq
    from datasets.table import embed_table_storage

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        ds = datasets.Dataset.from_dict({"image": [str(photos / name) for name, _ in pairs],
                                         "caption": [caption for _, caption in pairs]})
        ds = ds.cast_column("image", datasets.Image())
        ds = ds.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True)
        ds.with_format(None).to_parquet(str(path))
    finally:
        if bars:
            datasets.enable_progress_bars()
    images = pq.read_table(path, columns=["image"]).column("image").combine_chunks()
    if images.field("bytes").null_count:
        raise RuntimeError(f"{path}: image bytes were not embedded")
    return path


def write_image_csv(folder: Path, photos: Path, pairs: list[tuple[str, str]], name: str = "pairs.csv") -> Path:
    """image,caption with image paths relative to the CSV's folder (the StableRep layout)."""
    path = folder / name
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for image, caption in pairs:
            writer.writerow([os.path.relpath(photos / image, folder), caption])
    return path


def write_url_list(path: Path, base_url: str, pairs: list[tuple[str, str]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"url": [f"{base_url}/{name}" for name, _ in pairs],
                             "caption": [caption for _, caption in pairs]}), path)
    return path


def build_corpus(folder: str | Path) -> Corpus:
    """Photos, their url list (one URL answers 404), img2dataset's webdataset and parquet
    outputs of it, and the HF Parquet and CSV of the successful pairs, all under ``folder``."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    photos = root / "photos"
    downloaded = make_photos(photos)
    pairs = downloaded[:MISSING_AT] + [(MISSING, "a photo that was taken down")] + downloaded[MISSING_AT:]
    seconds["photos"] = time.perf_counter() - start
    with serve(photos) as base_url:
        url_list = write_url_list(root / "urls.parquet", base_url, pairs)
        t = time.perf_counter()
        proc = start_img2dataset(url_list, {"webdataset": root / "webdataset", "parquet": root / "parquet"})
        # the other layouts while img2dataset runs (its processes mostly import)
        hf = write_hf_parquet(photos, downloaded, root / "hf.parquet")
        table = write_image_csv(root, photos, downloaded)
        wait_img2dataset(proc)
        seconds["img2dataset"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    ok_pairs = [(name, caption) for name, caption in downloaded if caption.strip()]
    return Corpus(root=root, photos=photos, pairs=pairs, downloaded=downloaded, ok_pairs=ok_pairs,
                  missing=[MISSING], url_list=url_list,
                  webdataset=root / "webdataset", parquet=root / "parquet", hf_parquet=hf, csv=table,
                  base_url=base_url, seconds=seconds)
