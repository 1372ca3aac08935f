"""``imagefolder:PATH``: one folder per class, at a local path or any fsspec URL.

Layouts: PATH/train/CLASS/* with PATH/test/CLASS/* (or PATH/val/CLASS/* as the test split), or a
single split (PATH/train/CLASS/* alone, or PATH/CLASS/*) divided by class with a seed. Files are
found with one recursive listing; class folders may nest images in subfolders. Hidden files
(names starting with a dot) are ignored; any other file that is not an image is an error naming
it, unless ``skip_bad_images`` (then counted in the dataset's notes).
"""

from __future__ import annotations

import numpy as np

from stablerep import storage
from stablerep.data.labelled import (
    DatasetOptions,
    FileImages,
    LabelledDataset,
    LabelledSplit,
    fingerprint,
    resolve_metric,
    stratified_split,
)
from stablerep.errors import DatasetError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
TEST_NAMES = ("test", "val", "validation")


def _list_tree(url: str) -> dict[str, int]:
    """Relative path -> size of every file under ``url`` (one recursive listing)."""
    fs, root = storage.get_fs(url)

    def listing():
        if not fs.isdir(root):
            raise FileNotFoundError(url)
        return fs.find(root, detail=True)

    try:
        found = storage.with_retries("list", url, listing)
    except FileNotFoundError:
        raise DatasetError(f"imagefolder:{url}: no such directory") from None
    prefix = root.rstrip("/") + "/"
    return {path[len(prefix):]: int(info.get("size") or 0) for path, info in found.items()
            if info.get("type", "file") == "file" and path.startswith(prefix)}


def _is_hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _index_split(url: str, files: dict[str, int], where: str, classes: list[str] | None,
                 skip_bad: bool, skipped: list[str]) -> tuple[list[str], list[str], np.ndarray, list]:
    """(classes, urls, labels, fingerprint rows) of one split folder's files (relative paths)."""
    by_class: dict[str, list[str]] = {}
    for rel in sorted(files):
        if _is_hidden(rel):
            continue
        if "/" not in rel:
            bad = f"{storage.join(url, where, rel)}: a file beside the class folders"
            if not skip_bad:
                raise DatasetError(f"{bad} (expected {where or 'PATH'}/CLASS/IMAGE)")
            skipped.append(bad)
            continue
        cls, _ = rel.split("/", 1)
        suffix = "." + rel.rsplit(".", 1)[-1].lower() if "." in rel.rsplit("/", 1)[-1] else ""
        if suffix not in IMAGE_EXTENSIONS:
            bad = storage.join(url, where, rel)
            if not skip_bad:
                raise DatasetError(f"{bad}: not an image file (extension {suffix or 'none'}); "
                                   "remove it or pass --skip-bad-images")
            skipped.append(bad)
            continue
        by_class.setdefault(cls, []).append(rel)
    if classes is None:
        classes = sorted(by_class)
    unknown = sorted(set(by_class) - set(classes))
    if unknown:
        raise DatasetError(f"imagefolder:{url}: class {unknown[0]!r} in {where}/ has no training images")
    urls, labels, rows = [], [], []
    for label, cls in enumerate(classes):
        for rel in by_class.get(cls, []):
            urls.append(storage.join(url, where, rel) if where else storage.join(url, rel))
            labels.append(label)
            rows.append((rel, files[rel]))
    return classes, urls, np.array(labels, dtype=np.int64), rows


def _check_classes(url: str, where: str, classes: list[str], labels: np.ndarray, dirs: set[str]) -> None:
    if not classes:
        raise DatasetError(f"imagefolder:{url}: no images under {storage.join(url, where)} "
                           "(expected CLASS/IMAGE folders)")
    counts = np.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    empty += sorted(d for d in dirs if d not in classes)
    if empty:
        raise DatasetError(f"imagefolder:{url}: class {empty[0]!r} in {storage.join(url, where)} has no images")


def _class_dirs(url: str, where: str) -> set[str]:
    """Class folders of a split, including empty ones (a listing of files cannot see those)."""
    fs, root = storage.get_fs(storage.join(url, where) if where else url)
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False) if fs.isdir(p)
            and not p.rstrip("/").rsplit("/", 1)[-1].startswith(".")}


def load_imagefolder(name: str, url: str, options: DatasetOptions) -> LabelledDataset:
    files = _list_tree(url)
    top = {rel.split("/", 1)[0] for rel in files if "/" in rel}
    skipped: list[str] = []
    test_dir = next((d for d in TEST_NAMES if d in top), None)
    train_dir = "train" if "train" in top else ""
    notes = []
    if train_dir:
        part = {rel[len("train/"):]: size for rel, size in files.items() if rel.startswith("train/")}
        classes, urls, labels, rows = _index_split(url, part, "train", None, options.skip_bad_images, skipped)
        _check_classes(url, "train", classes, labels, _class_dirs(url, "train"))
    else:
        if test_dir:
            raise DatasetError(f"imagefolder:{url}: has {test_dir}/ but no train/")
        classes, urls, labels, rows = _index_split(url, files, "", None, options.skip_bad_images, skipped)
        _check_classes(url, "", classes, labels, _class_dirs(url, ""))
    train = LabelledSplit(FileImages(urls), labels)
    fp_rows = {"train": rows}
    if test_dir:
        part = {rel[len(test_dir) + 1:]: size for rel, size in files.items() if rel.startswith(f"{test_dir}/")}
        _, t_urls, t_labels, t_rows = _index_split(url, part, test_dir, classes, options.skip_bad_images, skipped)
        if not t_urls:
            raise DatasetError(f"imagefolder:{url}: no images under {storage.join(url, test_dir)}")
        test = LabelledSplit(FileImages(t_urls), t_labels)
        fp_rows["test"] = t_rows
        notes.append(f"splits: train/ and {test_dir}/")
    else:
        tr, te = stratified_split(labels, options.test_fraction, options.split_seed)
        train, test = train.subset(tr), train.subset(te)
        notes.append(f"one split: {options.test_fraction:.0%} of each class held out for test (seed {options.split_seed})")
    if skipped:
        notes.append(f"skipped {len(skipped)} non-image file(s), e.g. {skipped[0]}")
    fp = fingerprint({"kind": "imagefolder", "classes": classes, "files": fp_rows,
                      "split": None if test_dir else [options.test_fraction, options.split_seed]})
    return LabelledDataset(name, f"imagefolder:{url}", classes, train, test, fp,
                           resolve_metric(options, "accuracy"), notes=notes)
