"""``parquet:PATH``: labelled images in Parquet, a file or a folder of files, local or fsspec URL.

- Image column: our struct{bytes, path} (the Hugging Face ``Image`` layout, which is the same) or
  plain binary; named by ``image_column`` or found among image, img, jpg, png.
- Label column: integers or strings (``label_column`` or label, labels, target). Class names come
  from the schema's Hugging Face ClassLabel metadata when present; string labels name
  themselves; bare integers are named by their value.
- Splits: a split column (``split_column`` or ``split``) with train / test (or val, validation),
  else file names (HF's data/train-00000-of-00001.parquet, or train/ and test/ folders), else one
  split divided by class with a seed.

Only the label and split columns are read when indexing; images are read a row group at a time
when features are extracted, with the file opened in the process that reads it (s3fs is not
fork-safe).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stablerep import storage
from stablerep.data.labelled import (
    DatasetOptions,
    LabelledDataset,
    LabelledSplit,
    decode_image,
    fingerprint,
    resolve_metric,
    stratified_split,
)
from stablerep.errors import DatasetError

IMAGE_COLUMNS = ("image", "img", "jpg", "png")
LABEL_COLUMNS = ("label", "labels", "target")
TRAIN_NAMES, TEST_NAMES = ("train",), ("test", "val", "validation")


class ParquetImages:
    """Images addressed as (file, row group, row); a worker keeps the last row group it read."""

    def __init__(self, urls: list[str], column: str, rows: np.ndarray) -> None:
        self.urls, self.column = urls, column
        self.rows = rows  # (N, 3) int64: file index, row group, row within the group
        self._cache: tuple[tuple[int, int, int], list] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self):
        return {**self.__dict__, "_cache": None}

    def _group(self, file: int, group: int) -> list:
        key = (os.getpid(), file, group)
        if self._cache is None or self._cache[0] != key:
            fs, path = storage.get_fs(self.urls[file])
            with fs.open(path, "rb") as f:
                table = pq.ParquetFile(f).read_row_group(group, columns=[self.column], use_threads=False)
            col = table.column(self.column).combine_chunks()
            values = col.field("bytes") if pa.types.is_struct(col.type) else col
            self._cache = (key, values.to_pylist())
        return self._cache[1]

    def __getitem__(self, index: int):
        file, group, row = (int(v) for v in self.rows[index])
        data = self._group(file, group)[row]
        if data is None:
            raise DatasetError(f"{self.describe(index)}: empty image")
        return decode_image(data, self.describe(index))

    def describe(self, index: int) -> str:
        file, group, row = (int(v) for v in self.rows[index])
        return f"{self.urls[file]} (row group {group}, row {row})"


def _files(url: str) -> list[str]:
    fs, path = storage.get_fs(url)
    if fs.isfile(path):
        return [url]
    if not fs.isdir(path):
        raise DatasetError(f"parquet:{url}: no such file or directory")
    prefix = path.rstrip("/") + "/"
    found = sorted(p for p in fs.find(path) if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith("."))
    if not found:
        raise DatasetError(f"parquet:{url}: no .parquet files under it")
    return [storage.join(url, p[len(prefix):]) for p in found]


def _pick(schema: pa.Schema, asked: str | None, candidates: tuple[str, ...], what: str, url: str) -> str:
    if asked is not None:
        if asked not in schema.names:
            raise DatasetError(f"parquet:{url}: no {what} column {asked!r} (columns: {', '.join(schema.names)})")
        return asked
    for name in candidates:
        if name in schema.names:
            return name
    raise DatasetError(f"parquet:{url}: no {what} column (looked for {', '.join(candidates)}; columns: "
                       f"{', '.join(schema.names)}); name it in the dataset options")


def _class_label_names(schema: pa.Schema, column: str) -> list[str] | None:
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return None
    try:
        feature = json.loads(meta)["info"]["features"][column]
    except (ValueError, KeyError, TypeError):
        return None
    return [str(n) for n in feature["names"]] if feature.get("_type") == "ClassLabel" else None


def _split_of_file(url: str) -> str | None:
    parts = url.lower().replace("\\", "/").split("/")
    stem = parts[-1].split("-")[0].split(".")[0].split("_")[0]
    for candidate in [stem, *reversed(parts[:-1])]:
        if candidate in TRAIN_NAMES:
            return "train"
        if candidate in TEST_NAMES:
            return "test"
    return None


def _read_index(urls: list[str], label_col: str, split_col: str | None):
    """Per row: file index, row group, row, label value, split value."""
    files, groups, rows, labels, splits = [], [], [], [], []
    for i, url in enumerate(urls):
        fs, path = storage.get_fs(url)
        try:
            with fs.open(path, "rb") as f:
                pf = pq.ParquetFile(f)
                for g in range(pf.num_row_groups):
                    cols = [label_col] + ([split_col] if split_col else [])
                    table = pf.read_row_group(g, columns=cols, use_threads=False)
                    n = table.num_rows
                    files += [i] * n
                    groups += [g] * n
                    rows += list(range(n))
                    labels += table.column(label_col).to_pylist()
                    splits += table.column(split_col).to_pylist() if split_col else [None] * n
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{url}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    return np.array([files, groups, rows], dtype=np.int64).T.reshape(-1, 3), labels, splits


def _encode_labels(values: list, names: list[str] | None, url: str) -> tuple[np.ndarray, list[str]]:
    if any(v is None for v in values):
        raise DatasetError(f"parquet:{url}: the label column has missing values")
    if all(isinstance(v, str) for v in values):
        classes = names or sorted(set(values))
        lookup = {c: i for i, c in enumerate(classes)}
        unknown = [v for v in values if v not in lookup]
        if unknown:
            raise DatasetError(f"parquet:{url}: label {unknown[0]!r} is not a class name")
        return np.array([lookup[v] for v in values], dtype=np.int64), classes
    labels = np.array(values, dtype=np.int64)
    if labels.min() < 0:
        raise DatasetError(f"parquet:{url}: negative label {int(labels.min())}")
    classes = names or [str(i) for i in range(int(labels.max()) + 1)]
    if labels.max() >= len(classes):
        raise DatasetError(f"parquet:{url}: label {int(labels.max())} is out of range for {len(classes)} class names")
    return labels, classes


def _split_masks(url: str, urls: list[str], index: np.ndarray, splits: list, split_col: str | None):
    if split_col:
        values = [str(s).lower() if s is not None else "" for s in splits]
        train = np.array([v in TRAIN_NAMES for v in values])
        test = np.array([v in TEST_NAMES for v in values])
        if not train.any() or not test.any():
            raise DatasetError(f"parquet:{url}: split column {split_col!r} needs train and test (or val) rows; "
                               f"found {sorted(set(values))[:6]}")
        return train, test
    per_file = [_split_of_file(u) for u in urls]
    if any(s is None for s in per_file) or len(set(per_file)) < 2:
        return None
    kinds = np.array([per_file[f] for f in index[:, 0]])
    return kinds == "train", kinds == "test"


def load_parquet(name: str, url: str, options: DatasetOptions) -> LabelledDataset:
    urls = _files(url)
    fs, first = storage.get_fs(urls[0])
    with fs.open(first, "rb") as f:
        schema = pq.ParquetFile(f).schema_arrow
    image_col = _pick(schema, options.image_column, IMAGE_COLUMNS, "image", url)
    kind = schema.field(image_col).type
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
            or (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0)):
        raise DatasetError(f"parquet:{url}: column {image_col!r} holds {kind}, not image bytes")
    label_col = _pick(schema, options.label_column, LABEL_COLUMNS, "label", url)
    split_col = options.split_column or ("split" if "split" in schema.names else None)
    if split_col is not None and split_col not in schema.names:
        raise DatasetError(f"parquet:{url}: no split column {split_col!r}")
    index, raw_labels, splits = _read_index(urls, label_col, split_col)
    if len(index) == 0:
        raise DatasetError(f"parquet:{url}: no rows")
    labels, classes = _encode_labels(raw_labels, _class_label_names(schema, label_col), url)
    images = ParquetImages(urls, image_col, index)
    everything = LabelledSplit(images, labels)
    masks = _split_masks(url, urls, index, splits, split_col)
    notes = []
    if masks is None:
        tr, te = stratified_split(labels, options.test_fraction, options.split_seed)
        notes.append(f"one split: {options.test_fraction:.0%} of each class held out for test (seed {options.split_seed})")
    else:
        tr, te = np.flatnonzero(masks[0]), np.flatnonzero(masks[1])
        notes.append(f"splits from the {'column ' + repr(split_col) if split_col else 'file names'}")
    train, test = everything.subset(tr), everything.subset(te)
    counts = np.bincount(train.labels, minlength=len(classes))
    if (counts == 0).any():
        raise DatasetError(f"parquet:{url}: class {classes[int(np.argmin(counts))]!r} has no training images")
    sizes = []
    for u in urls:
        f_fs, f_path = storage.get_fs(u)
        sizes.append(int(f_fs.size(f_path)))
    fp = fingerprint({"kind": "parquet", "files": [[u.rsplit("/", 1)[-1], s] for u, s in zip(urls, sizes, strict=True)],
                      "columns": [image_col, label_col, split_col], "classes": classes,
                      "labels": fingerprint(labels.tolist()), "train": fingerprint(tr.tolist()),
                      "test": fingerprint(te.tolist())})
    return LabelledDataset(name, f"parquet:{url}", classes, train, test, fp,
                           resolve_metric(options, "accuracy"), notes=notes)
