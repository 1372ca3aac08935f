"""Evaluation datasets by spec string: ``imagefolder:PATH``, ``parquet:PATH``,
``torchvision:NAME:ROOT`` and ``procedural:shape|colour`` (see :mod:`stablerep.data.labelled`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from stablerep import storage
from stablerep.data.imagefolder import load_imagefolder
from stablerep.data.labelled import (
    DatasetOptions,
    LabelledDataset,
    LabelledSplit,
    MemoryImages,
    fingerprint,
    parse_dataset_spec,
    resolve_metric,
    split_metric,
)
from stablerep.data.labelled_parquet import load_parquet
from stablerep.data.torchvision_sets import load_torchvision
from stablerep.errors import DatasetError
from stablerep.world import COLOURS, SHAPES, probe_set


def load_labelled(name: str, spec: str, options: DatasetOptions | None = None) -> LabelledDataset:
    """Index the dataset ``spec`` (no image is decoded); errors name the dataset and the culprit.

    A spec ending in ``#metric=accuracy`` or ``#metric=mean_per_class`` sets the metric, as
    ``options.metric`` does; the two may not disagree."""
    options = options or DatasetOptions()
    spec, metric = split_metric(spec)
    if metric is not None:
        if options.metric not in ("auto", metric):
            raise DatasetError(f"dataset {name}: the spec says metric {metric} but its options say "
                               f"{options.metric}; give the metric once")
        options = options.model_copy(update={"metric": metric})
    kind, rest = parse_dataset_spec(spec)
    if kind == "imagefolder":
        dataset = load_imagefolder(name, rest, options)
    elif kind == "parquet":
        dataset = load_parquet(name, rest, options)
    elif kind == "torchvision":
        dataset = load_torchvision(name, rest, options)
    else:
        dataset = load_procedural(name, rest, options)
    if options.class_names is not None:
        dataset.classes = read_class_names(options.class_names, len(dataset.classes))
        dataset.named_classes = True
    else:
        dataset.named_classes = not all(c.isdigit() or c.startswith("class ") for c in dataset.classes)
    return dataset


def read_class_names(url: str, expected: int) -> list[str]:
    try:
        names = [line.strip() for line in storage.read_bytes(url).decode("utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise DatasetError(f"class_names: {url}: no such file") from None
    except UnicodeDecodeError:
        raise DatasetError(f"class_names: {url}: not UTF-8 text") from None
    if len(names) != expected:
        raise DatasetError(f"class_names: {url} lists {len(names)} names; the dataset has {expected} classes")
    return names


def load_procedural(name: str, label: str, options: DatasetOptions) -> LabelledDataset:
    """The procedural probe set: per_class renders of each shape (or colour), other attributes
    random; the test images come from a seed stream of their own."""
    classes = {"shape": list(SHAPES), "colour": list(COLOURS)}.get(label)
    if classes is None:
        raise DatasetError(f"dataset procedural:{label}: unknown label {label!r}; use shape or colour")
    test_per_class = options.test_per_class or max(1, options.per_class // 2)
    train = probe_set(options.per_class, seed=options.seed, size=options.size, label=label)
    test = probe_set(test_per_class, seed=options.seed + 10_000, size=options.size, label=label)

    def split(rows: list[dict[str, Any]], part: str) -> LabelledSplit:
        return LabelledSplit(MemoryImages([r["image"] for r in rows], f"procedural:{label}/{part}"),
                             np.array([r["label"] for r in rows], dtype=np.int64))

    fp = fingerprint({"kind": "procedural", "label": label, "per_class": options.per_class,
                      "test_per_class": test_per_class, "size": options.size, "seed": options.seed,
                      "renderer": "stablerep.world v1"})
    return LabelledDataset(name, f"procedural:{label}", classes, split(train, "train"), split(test, "test"), fp,
                           resolve_metric(options, "accuracy"),
                           notes=[f"{options.per_class} train and {test_per_class} test renders per class, "
                                  f"{options.size} px, seed {options.seed}"])
