"""Readers of Parquet shard datasets: m images per caption for training, and plain per-image rows.

Work is split in (shard, row group) units, which never split a caption. Units are shuffled with
(seed, epoch) and dealt to every (rank, loader worker) slot; a shuffle buffer mixes captions across
units. Each caption's m images and augmentations are drawn from a seed made of (seed, epoch,
caption id), so a sample does not depend on the worker that produced it. Filesystems are opened
inside each worker (s3fs is not fork-safe).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.io import ImageReadMode, decode_image

from stablerep import storage
from stablerep.data.augment import build_geometric, seeded_choice
from stablerep.distributed import current_rank, current_world_size
from stablerep.errors import ShardError
from stablerep.methods import get_method
from stablerep.seeding import mix_seed
from stablerep.shards.layout import shard_url
from stablerep.shards.manifest import read_manifest
from stablerep.shards.rows import iter_images  # noqa: F401 - re-exported: the plain row reader lives in shards/
from stablerep.tokenizer import CaptionTokenizer

OPEN_SHARDS = 4


def decode(data: bytes) -> torch.Tensor:
    """JPEG/PNG/WebP bytes -> uint8 RGB (3, H, W)."""
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def _units(manifest: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(shard index, row group, captions in it) for every row group of the dataset."""
    return [(s["index"], g, rg["captions"]) for s in manifest["shards"] for g, rg in enumerate(s["row_groups"])]


class ShardCaptionDataset(IterableDataset):
    """Yields ``{"images": uint8 (m, C, H, W), "label": caption id, "caption": str}`` per caption.

    ``transform`` maps a uint8 (C, H, W) image to a uint8 (C, S, S) crop: the geometric half of
    the augmentation (data.augment.build_geometric), applied to each of the m images
    independently; the training step adds the photometric half on its device. Captions with
    fewer than m images are an error.
    """

    def __init__(self, root: str, images_per_caption: int, transform=None, *, seed: int = 0,
                 shuffle: bool = True, shuffle_buffer: int = 256, rank: int | None = None,
                 world_size: int | None = None, views_of_one_image: bool = False) -> None:
        if images_per_caption < 1:
            raise ValueError(f"images_per_caption must be >= 1, got {images_per_caption}")
        self.root, self.m, self.transform = root, images_per_caption, transform
        self.seed, self.shuffle, self.shuffle_buffer = seed, shuffle, max(1, shuffle_buffer)
        self.views_of_one_image = views_of_one_image  # SimCLR: m augmentations of one image
        self.rank = current_rank() if rank is None else rank
        self.world_size = current_world_size() if world_size is None else world_size
        self.epoch = 0
        # Set by ShardBatches: loader worker p serves stream (p + rotation) % workers, skipping
        # skip[stream] captions (resume) and stopping after limit captions (equal batches per slot).
        self.rotation, self.skip, self.limit = 0, None, None
        self.manifest = read_manifest(root)  # small; validated once up front, in the main process
        self._sizes = {s["index"]: s["bytes"] for s in self.manifest["shards"]}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def slot_units(self, slot: int, slots: int) -> list[tuple[int, int, int]]:
        units = _units(self.manifest)
        if self.shuffle:
            random.Random(mix_seed(self.seed, self.epoch)).shuffle(units)
        return units[slot::slots]

    def _open_shard(self, shard: int) -> pq.ParquetFile:
        """Open a shard for row-group reads after checking its size against the manifest; pages
        are CRC-checked as they are read."""
        url = shard_url(self.root, shard)
        fs, path = storage.get_fs(url)
        expected = self._sizes.get(shard)
        size = fs.size(path)
        if expected is not None and size != expected:
            raise ShardError(f"{url}: {size} bytes, the manifest says {expected} (truncated or replaced)")
        try:
            return pq.ParquetFile(fs.open(path, "rb"), page_checksum_verification=True)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ShardError(f"{url}: not a readable Parquet file ({exc})") from None

    def _raw(self, units) -> Iterator[tuple[int, str, list[bytes], int]]:
        """Captions of each unit, reading only that row group (the footer and one byte range)."""
        files: OrderedDict[int, pq.ParquetFile] = OrderedDict()  # a few open shards per worker
        try:
            for shard, group, _ in units:
                if shard not in files:
                    if len(files) >= OPEN_SHARDS:
                        files.popitem(last=False)[1].close()
                    files[shard] = self._open_shard(shard)
                files.move_to_end(shard)
                try:
                    table = files[shard].read_row_group(group, columns=["caption_id", "caption", "image"],
                                                         use_threads=False)  # see read_parquet_bytes
                except OSError as exc:  # pyarrow: CRC mismatch, truncated page...
                    raise ShardError(f"{shard_url(self.root, shard)}: row group {group} is corrupt ({exc}); "
                                     "`stablerep dataset verify` checks every shard") from None
                ids = table.column("caption_id").to_pylist()
                captions = table.column("caption").to_pylist()
                images = table.column("image").combine_chunks().field("bytes").to_pylist()
                start = 0
                for i in range(1, len(ids) + 1):
                    if i == len(ids) or ids[i] != ids[start]:
                        yield ids[start], captions[start], images[start:i], shard
                        start = i
        finally:
            for pf in files.values():
                pf.close()

    def _shuffled(self, raw: Iterator, slot: int) -> Iterator:
        if not self.shuffle:
            yield from raw
            return
        rng = random.Random(mix_seed(self.seed, self.epoch, slot, 1))
        buffer: list = []
        for item in raw:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], item = item, buffer[j]
            yield item
        rng.shuffle(buffer)
        yield from buffer

    def make_sample(self, caption_id: int, caption: str, images: list[bytes], shard: int) -> dict[str, Any]:
        sample_seed = mix_seed(self.seed, self.epoch, caption_id)
        if self.views_of_one_image:
            chosen = seeded_choice(sample_seed, len(images), 1) * self.m
        elif len(images) < self.m:
            raise ValueError(f"caption {caption_id} in shard {shard} has {len(images)} images, "
                             f"fewer than images_per_caption={self.m}")
        else:
            chosen = seeded_choice(sample_seed, len(images), self.m)
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed also queues a seed for every accelerator
            # backend not yet initialised, capturing a Python stack trace each time (about 0.5 ms
            # per caption in the loader's profile); the crops draw from the CPU generator alone.
            torch.default_generator.manual_seed(sample_seed)
            views = [decode(images[i]) for i in chosen]
            if self.transform is not None:
                views = [self.transform(v) for v in views]
        return {"images": torch.stack(views), "label": caption_id, "caption": caption}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        worker = (worker + self.rotation) % workers
        slot, slots = self.rank * workers + worker, self.world_size * workers
        stream = self._shuffled(self._raw(self.slot_units(slot, slots)), slot)
        skip = self.skip[worker] if self.skip else 0
        for n, item in enumerate(stream):
            if self.limit is not None and n >= self.limit:
                return
            if n >= skip:  # resumed mid-epoch: consumed captions are skipped without decoding
                yield self.make_sample(*item)


def collate_captions(samples: list[dict[str, Any]], tokenizer=None,
                     targets: Callable[[str], list[int]] | None = None) -> dict[str, Any]:
    """A batch: ``images`` (n, m, C, H, W) uint8, ``labels`` (n,) caption ids, ``captions``, and
    ``tokens`` (with a tokenizer) or ``targets`` (n, T): the class indices ``targets(caption)``
    gives (for example :class:`stablerep.world.CaptionTargets`)."""
    batch = {"images": torch.stack([s["images"] for s in samples]),  # (n, m, C, H, W) uint8
             "labels": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
             "captions": [s["caption"] for s in samples]}
    if tokenizer is not None:
        batch["tokens"] = tokenizer(batch["captions"])
    if targets is not None:
        batch["targets"] = torch.tensor([targets(c) for c in batch["captions"]], dtype=torch.int64)
    return batch


class _Collate:
    def __init__(self, tokenizer=None, targets: Callable[[str], list[int]] | None = None) -> None:
        self.tokenizer, self.targets = tokenizer, targets

    def __call__(self, samples):
        return collate_captions(samples, self.tokenizer, self.targets)


class ShardBatches:
    """Training batches from a shard dataset, for the loop's ``iter_from(step)`` contract.

    Every (rank, loader worker) slot yields the same number of batches of ``local_captions`` per
    epoch (the few captions beyond that are dropped for this epoch; the next epoch reshuffles), so
    ranks stay in step and the DataLoader's round robin over workers is regular. Resuming at any
    step skips the consumed captions without decoding them and rotates the workers so that the
    round robin continues where it stopped: the batches are those of an uninterrupted run.
    """

    def __init__(self, dataset: ShardCaptionDataset, local_captions: int, num_workers: int = 0,
                 tokenizer=None, pin_memory: bool = False,
                 targets: Callable[[str], list[int]] | None = None) -> None:
        self.dataset, self.local_captions = dataset, local_captions
        self.num_workers, self.tokenizer, self.pin_memory = num_workers, tokenizer, pin_memory
        self.targets = targets
        self.workers = max(1, num_workers)

    def batches_per_slot(self, epoch: int) -> int:
        self.dataset.set_epoch(epoch)
        slots = self.dataset.world_size * self.workers
        return min(sum(u[2] for u in self.dataset.slot_units(s, slots)) // self.local_captions
                   for s in range(slots))

    def iter_from(self, step: int) -> Iterator[dict[str, Any]]:
        epoch = 0
        while True:
            per_epoch = self.batches_per_slot(epoch) * self.workers
            if per_epoch == 0:
                raise ValueError(f"{self.dataset.root}: too few captions for one batch of "
                                 f"{self.local_captions} in each of {self.dataset.world_size * self.workers} "
                                 "rank x loader-worker slots")
            if step >= per_epoch:
                step, epoch = step - per_epoch, epoch + 1
                continue
            yield from self._epoch(epoch, step, per_epoch // self.workers)
            step, epoch = 0, epoch + 1

    def _epoch(self, epoch: int, done: int, per_slot: int) -> Iterator[dict[str, Any]]:
        ds, w, bs = self.dataset, self.workers, self.local_captions
        ds.set_epoch(epoch)
        ds.rotation = done % w
        ds.skip = [(done // w + (1 if i < done % w else 0)) * bs for i in range(w)]
        ds.limit = per_slot * bs
        loader = DataLoader(ds, batch_size=bs, num_workers=self.num_workers,
                            collate_fn=_Collate(self.tokenizer, self.targets), drop_last=True,
                            pin_memory=self.pin_memory)
        yield from loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter_from(0)


def build_shard_batches(root: str, run, rank: int | None = None, world_size: int | None = None,
                        pin_memory: bool = False, tokenizer=None,
                        targets: Callable[[str], list[int]] | None = None) -> ShardBatches:
    """The training batches a :class:`stablerep.config.RunConfig` asks for, from a shard dataset.

    ``tokenizer`` (captions -> token ids) is the model's, handed in by the caller for methods that
    read text; without one those methods get the CLIP BPE tokenizer at the run's context length.
    ``targets`` (caption -> class indices) is what the supervised method learns, handed in by the
    caller that knows the label space (:func:`stablerep.world.run_targets`).
    """
    spec = get_method(run.loss.method)
    if spec.targets and targets is None:
        raise ValueError(f"method {run.loss.method!r} needs targets (caption -> class indices)")
    rank = current_rank() if rank is None else rank
    world_size = current_world_size() if world_size is None else world_size
    if run.data.captions_per_batch % world_size:
        raise ValueError(f"data.captions_per_batch ({run.data.captions_per_batch}) must be divisible "
                         f"by the number of ranks ({world_size})")
    dataset = ShardCaptionDataset(root, run.data.images_per_caption,
                                  build_geometric(run.data.augment, run.data.image_size),
                                  seed=run.train.seed, rank=rank, world_size=world_size,
                                  views_of_one_image=spec.views_of_one_image)
    if not spec.text:
        tokenizer = None
    elif tokenizer is None:
        tokenizer = CaptionTokenizer(run.model.text.context_length)
    return ShardBatches(dataset, run.data.captions_per_batch // world_size, run.data.num_workers,
                        tokenizer, pin_memory, targets if spec.targets else None)
