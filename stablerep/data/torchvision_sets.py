"""``torchvision:NAME:ROOT``: the paper's transfer datasets through torchvision, from a local ROOT.

Nothing is ever downloaded: a dataset missing under ROOT is one error line saying what torchvision
looked for and how to fetch it once where there is network. Splits follow the datasets' own
(train, optional val, test); SUN397 has none in torchvision and is divided by class with a seed;
Caltech-101 takes 30 training images per class, the rest for test (the usual protocol). Mean
per-class accuracy is the metric for Aircraft, Caltech-101, Flowers and Pets, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from stablerep.data.labelled import (
    DatasetOptions,
    LabelledDataset,
    LabelledSplit,
    Metric,
    fingerprint,
    local_path,
    resolve_metric,
    split_by_class_count,
    stratified_split,
)
from stablerep.errors import DatasetError


@dataclass(frozen=True)
class TorchvisionSet:
    cls: str  # torchvision.datasets class name
    title: str
    folder: str  # what torchvision looks for under ROOT
    splits: dict[str, dict[str, Any]]  # our split -> constructor keywords; {"all": ...} = one split
    labels: Callable[[Any], list[int]]
    classes: Callable[[Any], list[str] | None]
    metric: Metric = "accuracy"
    train_per_class: int | None = None  # single-split sets: this many per class to train
    note: str = ""


def _attr(name: str) -> Callable[[Any], Any]:
    return lambda ds: list(getattr(ds, name))


REGISTRY: dict[str, TorchvisionSet] = {
    "cifar10": TorchvisionSet("CIFAR10", "CIFAR-10", "cifar-10-batches-py",
                              {"train": {"train": True}, "test": {"train": False}}, _attr("targets"), _attr("classes")),
    "cifar100": TorchvisionSet("CIFAR100", "CIFAR-100", "cifar-100-python",
                               {"train": {"train": True}, "test": {"train": False}}, _attr("targets"), _attr("classes")),
    "stl10": TorchvisionSet("STL10", "STL-10", "stl10_binary", {"train": {"split": "train"}, "test": {"split": "test"}},
                            lambda ds: [int(v) for v in ds.labels], _attr("classes")),
    "flowers102": TorchvisionSet("Flowers102", "Flowers-102", "flowers-102",
                                 {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
                                 _attr("_labels"), lambda ds: None, "mean_per_class",
                                 note="torchvision's Flowers102 carries no class names (give class_names for zero-shot)"),
    "pets": TorchvisionSet("OxfordIIITPet", "Oxford-IIIT Pets", "oxford-iiit-pet",
                           {"train": {"split": "trainval"}, "test": {"split": "test"}}, _attr("_labels"),
                           _attr("classes"), "mean_per_class"),
    "food101": TorchvisionSet("Food101", "Food-101", "food-101", {"train": {"split": "train"}, "test": {"split": "test"}},
                              _attr("_labels"), lambda ds: [c.replace("_", " ") for c in ds.classes]),
    "dtd": TorchvisionSet("DTD", "DTD", "dtd/dtd",
                          {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
                          _attr("_labels"), _attr("classes")),
    "aircraft": TorchvisionSet("FGVCAircraft", "FGVC-Aircraft", "fgvc-aircraft-2013b",
                               {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
                               _attr("_labels"), _attr("classes"), "mean_per_class"),
    "cars": TorchvisionSet("StanfordCars", "Stanford Cars", "stanford_cars",
                           {"train": {"split": "train"}, "test": {"split": "test"}},
                           lambda ds: [int(t) for _, t in ds._samples], _attr("classes"),
                           note="torchvision can no longer download Stanford Cars: place its devkit and images "
                                "under ROOT/stanford_cars by hand"),
    "sun397": TorchvisionSet("SUN397", "SUN397", "SUN397", {"all": {}}, _attr("_labels"),
                             lambda ds: [c.replace("_", " ") for c in ds.classes]),
    "caltech101": TorchvisionSet("Caltech101", "Caltech-101", "caltech101/101_ObjectCategories", {"all": {}},
                                 _attr("y"), lambda ds: [c.replace("_", " ") for c in ds.categories],
                                 "mean_per_class", train_per_class=30),
}
ALIASES = {"oxford_iiit_pet": "pets", "oxfordiiitpet": "pets", "fgvc_aircraft": "aircraft",
           "stanford_cars": "cars", "food-101": "food101", "flowers": "flowers102", "caltech-101": "caltech101"}


class TorchvisionImages:
    """A torchvision dataset's images, in the order of ``indices``."""

    def __init__(self, dataset: Any, indices: np.ndarray, title: str) -> None:
        self.dataset, self.indices, self.title = dataset, indices, title

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Image.Image:
        img, _ = self.dataset[int(self.indices[index])]
        return img.convert("RGB")

    def describe(self, index: int) -> str:
        files = getattr(self.dataset, "_image_files", None)
        i = int(self.indices[index])
        return str(files[i]) if files is not None else f"{self.title}[{i}]"


def _open(entry: TorchvisionSet, root: str, kwargs: dict[str, Any]):
    import torchvision.datasets as tvd

    cls = getattr(tvd, entry.cls)
    try:
        return cls(root, download=False, **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        hint = entry.note if "download" in entry.note else (
            f"fetch it once where there is network, e.g. `python -c \"import torchvision; "
            f"torchvision.datasets.{entry.cls}('{root}', download=True)\"`, and copy {root}/{entry.folder} here")
        raise DatasetError(f"torchvision:{entry.title}: not found or incomplete under {root} (torchvision looks for "
                           f"{root}/{entry.folder}; it never downloads here): {hint} "
                           f"({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None


def load_torchvision(name: str, rest: str, options: DatasetOptions) -> LabelledDataset:
    key, sep, root = rest.partition(":")
    key = ALIASES.get(key.lower(), key.lower())
    if key not in REGISTRY:
        raise DatasetError(f"torchvision:{rest}: unknown dataset {key!r}; known: {', '.join(sorted(REGISTRY))}")
    if not sep or not root:
        raise DatasetError(f"torchvision:{rest}: give the dataset root, as torchvision:{key}:ROOT")
    path = local_path(root)
    if path is None:
        raise DatasetError(f"torchvision:{rest}: torchvision reads local folders only, not {root}")
    entry = REGISTRY[key]
    opened = {split: _open(entry, path, kwargs) for split, kwargs in entry.splits.items()}
    first = next(iter(opened.values()))
    classes = entry.classes(first) or None
    splits: dict[str, LabelledSplit] = {}
    for split, ds in opened.items():
        labels = np.asarray(entry.labels(ds), dtype=np.int64)
        splits[split] = LabelledSplit(TorchvisionImages(ds, np.arange(len(labels)), entry.title), labels)
    notes = [entry.note] if entry.note else []
    if "all" in splits:
        everything = splits.pop("all")
        if entry.train_per_class:
            tr, te = split_by_class_count(everything.labels, entry.train_per_class, options.split_seed)
            notes.append(f"no official split: {entry.train_per_class} training images per class, the rest test "
                         f"(seed {options.split_seed})")
        else:
            tr, te = stratified_split(everything.labels, options.test_fraction, options.split_seed)
            notes.append(f"no official split: {options.test_fraction:.0%} of each class held out for test "
                         f"(seed {options.split_seed})")
        splits["train"], splits["test"] = everything.subset(tr), everything.subset(te)
    n_classes = int(max(int(s.labels.max()) for s in splits.values() if len(s)) + 1)
    classes = classes or [f"class {i}" for i in range(n_classes)]
    fp = fingerprint({"kind": "torchvision", "dataset": key, "root": path,
                      "splits": {s: [len(v), fingerprint(v.labels.tolist())] for s, v in splits.items()}})
    return LabelledDataset(name, f"torchvision:{key}:{root}", list(classes), splits["train"], splits["test"], fp,
                           resolve_metric(options, entry.metric), val=splits.get("val"), notes=notes)
