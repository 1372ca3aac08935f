"""Labelled image sets for evaluation: a train and a test split of (image, integer label) with
class names, from any of four sources, named by a spec string:

- ``imagefolder:PATH``: PATH/train/CLASS/* and PATH/test/CLASS/* (``val/`` is accepted for test);
  a single split (PATH/CLASS/* or train/ alone) is split by class with a seed.
- ``parquet:PATH``: a Parquet file or folder of them with an image column (our struct{bytes, path}
  or Hugging Face's Image layout) and a label column; splits from a split column or file names.
- ``torchvision:NAME:ROOT``: a torchvision dataset already on disk under ROOT (never downloads).
- ``procedural:shape`` / ``procedural:colour``: the procedural world's labelled probe set.

Images are read lazily (``split.images[i]`` decodes one image), so an ImageNet-sized folder costs a
listing, not its pixels, until features are extracted. Each dataset has a fingerprint (what it
holds, not where it was read) that keys the feature cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from stablerep import storage
from stablerep.errors import DatasetError

Metric = Literal["accuracy", "mean_per_class"]
METRICS: tuple[Metric, ...] = ("accuracy", "mean_per_class")
METRIC_SUFFIX = "#metric="  # KIND:...#metric=mean_per_class: the metric given on the spec itself
KINDS = ("imagefolder", "parquet", "torchvision", "procedural")


class DatasetOptions(BaseModel):
    """How to read one evaluation dataset (a suite file can set these per dataset)."""

    model_config = ConfigDict(extra="forbid")

    metric: Literal["auto", "accuracy", "mean_per_class"] = Field(
        "auto", description="auto: mean per-class accuracy where the paper uses it (torchvision's Aircraft, "
                            "Caltech-101, Flowers, Pets), else accuracy; also settable as a #metric=... spec suffix")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="test share when the source has one split only")
    split_seed: int = Field(0, description="seed of that stratified split")
    skip_bad_images: bool = Field(False, description="skip (and count) unreadable or non-image files")
    image_column: str | None = Field(None, description="parquet: image column (default: image, img, jpg, png)")
    label_column: str | None = Field(None, description="parquet: label column (default: label, labels, target)")
    split_column: str | None = Field(None, description="parquet: split column (default: split, if present)")
    per_class: int = Field(40, ge=2, description="procedural: training images per class")
    test_per_class: int | None = Field(None, ge=1, description="procedural: test images per class "
                                                                "(default per_class / 2)")
    size: int = Field(128, ge=16, description="procedural: render size (px)")
    seed: int = Field(1, description="procedural: seed stream of the probe set")
    class_names: str | None = Field(None, description="text file, one class name a line in label order "
                                                      "(zero-shot prompts; overrides the source's names)")


class ImageSource(Protocol):
    """An indexable sequence of images: ``source[i]`` decodes image i as RGB."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Image.Image: ...

    def describe(self, index: int) -> str:
        """Where image ``index`` comes from (for error messages)."""
        ...


def decode_image(data: bytes, where: str) -> Image.Image:
    """Encoded bytes -> RGB image, or DatasetError naming ``where``."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{where}: not a readable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


class FileImages:
    """Images stored one per file, at local paths or fsspec URLs."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    def __len__(self) -> int:
        return len(self.urls)

    def __getitem__(self, index: int) -> Image.Image:
        url = self.urls[index]
        try:
            data = storage.read_bytes(url)
        except FileNotFoundError:
            raise DatasetError(f"{url}: file disappeared after the dataset was listed") from None
        return decode_image(data, url)

    def describe(self, index: int) -> str:
        return self.urls[index]


class MemoryImages:
    """Images already in memory (the procedural probe set)."""

    def __init__(self, images: list[Image.Image], name: str) -> None:
        self.images, self.name = images, name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Image.Image:
        return self.images[index].convert("RGB")

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"


@dataclass
class LabelledSplit:
    """One split: ``images[i]`` has integer label ``labels[i]``."""

    images: ImageSource
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> LabelledSplit:
        return LabelledSplit(SubsetImages(self.images, indices), self.labels[indices])


class SubsetImages:
    def __init__(self, source: ImageSource, indices: np.ndarray) -> None:
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Image.Image:
        return self.source[int(self.indices[index])]

    def describe(self, index: int) -> str:
        return self.source.describe(int(self.indices[index]))


@dataclass
class LabelledDataset:
    """Train and test splits (and an official validation split where the source has one)."""

    name: str
    spec: str
    classes: list[str]
    train: LabelledSplit
    test: LabelledSplit
    fingerprint: str
    metric: Metric = "accuracy"
    val: LabelledSplit | None = None
    notes: list[str] = field(default_factory=list)
    named_classes: bool = True  # False when the names are only numbers (zero-shot needs words)

    def splits(self) -> dict[str, LabelledSplit]:
        out = {"train": self.train, "test": self.test}
        if self.val is not None:
            out["val"] = self.val
        return out

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "classes": len(self.classes), "class_names": self.classes[:1000],
                "metric": self.metric, "fingerprint": self.fingerprint, "notes": self.notes,
                **{f"{name}_images": len(split) for name, split in self.splits().items()}}


def fingerprint(payload: Any) -> str:
    """sha256 of a canonical JSON rendering of ``payload``."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): each class split ``test_fraction`` to test, from ``seed``.
    A class with at least two images keeps at least one on each side."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:
            n_test = min(max(1, n_test), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def split_by_class_count(labels: np.ndarray, train_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: ``train_per_class`` images of each class to train, the rest to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train.append(idx[:train_per_class])
        test.append(idx[train_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def resolve_metric(options: DatasetOptions, default: Metric) -> Metric:
    return default if options.metric == "auto" else options.metric


def split_metric(spec: str) -> tuple[str, Metric | None]:
    """``KIND:...#metric=NAME`` -> (``KIND:...``, NAME); a spec without the suffix -> (spec, None)."""
    base, sep, metric = spec.rpartition(METRIC_SUFFIX)
    if not sep:
        return spec, None
    if metric not in METRICS:
        raise DatasetError(f"dataset {spec!r}: unknown metric {metric!r}; end the spec in "
                           f"{METRIC_SUFFIX}accuracy or {METRIC_SUFFIX}mean_per_class")
    return base, metric


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """``KIND:REST`` -> (kind, rest), with a clear error for an unknown kind."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS:
        raise DatasetError(f"dataset {spec!r}: unknown kind {kind!r}; use one of "
                           "imagefolder:PATH, parquet:PATH, torchvision:NAME:ROOT, procedural:shape|colour")
    if not rest:
        raise DatasetError(f"dataset {spec!r}: nothing after {kind}:")
    return kind, rest


def local_path(url: str) -> str | None:
    """The local filesystem path of ``url``, or None for a remote URL."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol in ("file", "local"):
        return os.path.abspath(url.removeprefix("file://"))
    return None
