"""Frozen features of a labelled split: decoded and cropped in DataLoader workers, encoded in
batches (bf16 autocast on CUDA), and cached as safetensors + JSON keyed by (encoder identity,
dataset fingerprint, split, transform), so a second protocol or a rerun never re-encodes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from stablerep import storage
from stablerep.data.labelled import LabelledSplit
from stablerep.devices import autocast, resolve_device, resolve_dtype
from stablerep.errors import DatasetError
from stablerep.evaluation.transforms import EvalTransform

CACHE_FORMAT = 1


@dataclass
class SplitFeatures:
    """Features of one split. ``keep`` marks the images that decoded (all of them unless bad images
    were skipped); ``features`` and ``embed`` hold rows for kept images only."""

    features: torch.Tensor  # (K, D) float32
    keep: torch.Tensor  # (N,) bool
    embed: torch.Tensor | None = None  # (K, E) float32: the image-text embedding, if the encoder has one
    skipped: list[str] = field(default_factory=list)
    cached: bool = False


class _Cropped(Dataset):
    """(uint8 (3, S, S), error) per image: decode + resize + crop, in the workers. Errors travel
    as values, so the main process can name the file (or skip it) without a worker traceback."""

    def __init__(self, split: LabelledSplit, transform: EvalTransform) -> None:
        self.split, self.size = split, transform.size
        self.geometric = transform.geometric()

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        try:
            img = self.split.images[index]
            return self.geometric(TF.pil_to_tensor(img)), ""
        except DatasetError as exc:
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), str(exc)


def _collate(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([x for x, _ in items]), [e for _, e in items]


def default_workers(n_images: int) -> int:
    """Loader workers: none for small sets (process start-up costs more than it saves)."""
    if n_images < 2048:
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@torch.no_grad()
def encode_split(model: torch.nn.Module, split: LabelledSplit, transform: EvalTransform, *,
                 device: str = "auto", batch_size: int = 256, workers: int | None = None,
                 precision: str = "auto", skip_bad_images: bool = False,
                 progress: Callable[[int], None] | bool = False) -> SplitFeatures:
    """Encode every image of ``split`` with ``model`` (forward -> {"features", "embed"?}), in eval
    mode. A bad image stops with DatasetError naming it, or is skipped with ``skip_bad_images``."""
    dev = resolve_device(device)
    dtype = resolve_dtype(precision, dev)
    was_training = model.training
    model.eval().to(dev)
    workers = default_workers(len(split)) if workers is None else workers
    loader = DataLoader(_Cropped(split, transform), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate, pin_memory=dev.type == "cuda",
                        persistent_workers=False)
    feats, embeds, keep, skipped = [], [], [], []
    bar = tqdm(total=len(split), desc="features", unit="img", disable=progress is not True, leave=False)
    try:
        for images, errors in loader:
            ok = torch.tensor([not e for e in errors])
            bad = [e for e in errors if e]
            if bad and not skip_bad_images:
                raise DatasetError(f"{bad[0]} (pass --skip-bad-images to skip unreadable images)")
            skipped += bad
            keep.append(ok)
            if ok.any():
                x = transform.normalise(images[ok].to(dev, non_blocking=True))
                with autocast(dev, dtype):
                    out = model(x)
                feats.append(out["features"].float().cpu())
                if "embed" in out:
                    embeds.append(out["embed"].float().cpu())
            bar.update(len(errors))
            if callable(progress):
                progress(len(errors))
    finally:
        bar.close()
        model.train(was_training)
    features = torch.cat(feats) if feats else torch.empty(0)
    return SplitFeatures(features, torch.cat(keep) if keep else torch.zeros(0, dtype=torch.bool),
                         torch.cat(embeds) if embeds else None, skipped)


class FeatureCache:
    """Features at ROOT/<key>.safetensors with ROOT/<key>.json (written last: the commit mark)."""

    def __init__(self, root: str | None) -> None:
        self.root = root

    @staticmethod
    def key(encoder_identity: str, dataset_fingerprint: str, split: str, transform: EvalTransform,
            skip_bad_images: bool) -> str:
        payload = {"format": CACHE_FORMAT, "encoder": encoder_identity, "dataset": dataset_fingerprint,
                   "split": split, "transform": transform.key(), "skip_bad_images": skip_bad_images}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> SplitFeatures | None:
        if self.root is None:
            return None
        meta_url = storage.join(self.root, f"{key}.json")
        if not storage.exists(meta_url):
            return None
        meta = json.loads(storage.read_bytes(meta_url))
        blob = storage.read_bytes(storage.join(self.root, f"{key}.safetensors"))
        if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            return None  # a damaged cache entry is recomputed, never trusted
        tensors = st_load(blob)
        return SplitFeatures(tensors["features"], tensors["keep"].bool(), tensors.get("embed"),
                             meta.get("skipped", []), cached=True)

    def put(self, key: str, value: SplitFeatures, describe: dict) -> None:
        if self.root is None:
            return
        tensors = {"features": value.features.contiguous(), "keep": value.keep.to(torch.uint8).contiguous()}
        if value.embed is not None:
            tensors["embed"] = value.embed.contiguous()
        blob = st_save(tensors)
        storage.write_bytes(storage.join(self.root, f"{key}.safetensors"), blob)
        meta = {"format": CACHE_FORMAT, "sha256": hashlib.sha256(blob).hexdigest(), "skipped": value.skipped,
                "rows": int(value.features.shape[0]), **describe}
        storage.write_bytes(storage.join(self.root, f"{key}.json"), json.dumps(meta, indent=1).encode())


def default_cache_dir() -> str:
    root = os.environ.get("STABLEREP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "stablerep")
    return os.path.join(root, "features")
