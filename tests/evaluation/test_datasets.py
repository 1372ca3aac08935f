"""Evaluation datasets from image folders, Parquet, torchvision's on-disk formats and the procedural
world, on real images (scikit-learn's handwritten digits)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stablerep.cli.evaluate import named_specs
from stablerep.data.labelled import DatasetOptions, stratified_split
from stablerep.errors import DatasetError
from stablerep.evaluation.datasets import load_labelled
from tests.helpers.datasets import digits_images, digits_split


def _pixels(split, i):
    return np.asarray(split.images[i])


def test_image_folder_and_parquet_hold_the_same_labelled_images(digits_folder, digits_parquet):
    folder = load_labelled("f", f"imagefolder:{digits_folder}")
    table = load_labelled("p", f"parquet:{digits_parquet}")
    assert folder.classes == table.classes == [str(d) for d in range(10)]
    _, labels, _ = digits_images()
    assert len(folder.train) + len(folder.test) == len(labels) == 1797
    for a, b in ((folder.train, table.train), (folder.test, table.test)):
        assert np.array_equal(a.labels, b.labels)
        for i in range(0, len(a), 97):
            assert np.array_equal(_pixels(a, i), _pixels(b, i))
    assert folder.fingerprint != table.fingerprint
    assert folder.train.images[0].mode == "RGB" and folder.train.images[0].size == (8, 8)
    # the class counts of the test split follow the stratified split the writer used
    split = digits_split(labels)
    assert np.bincount(folder.test.labels).tolist() == np.bincount(
        [lab for lab, s in zip(labels, split, strict=True) if s == "test"]).tolist()


def test_single_split_folder_is_split_by_class_with_a_seed(digits_folder, tmp_path):
    flat = tmp_path / "flat"
    for split in ("train", "test"):
        for cls in (Path(digits_folder) / split).iterdir():
            for f in cls.iterdir():
                (flat / cls.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, flat / cls.name / f"{split}-{f.name}")
    a = load_labelled("a", f"imagefolder:{flat}", DatasetOptions(test_fraction=0.25, split_seed=3))
    b = load_labelled("b", f"imagefolder:{flat}", DatasetOptions(test_fraction=0.25, split_seed=3))
    c = load_labelled("c", f"imagefolder:{flat}", DatasetOptions(test_fraction=0.25, split_seed=4))
    assert len(a.train) + len(a.test) == 1797 and abs(len(a.test) - 1797 * 0.25) <= 10
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert [a.test.images.describe(i) for i in range(5)] == [b.test.images.describe(i) for i in range(5)]
    assert [a.test.images.describe(i) for i in range(5)] != [c.test.images.describe(i) for i in range(5)]
    counts_all = np.bincount(np.concatenate([a.train.labels, a.test.labels]))
    assert np.allclose(np.bincount(a.test.labels) / counts_all, 0.25, atol=0.02)  # stratified
    assert "held out" in a.notes[0]


def test_stratified_split_keeps_every_class_on_both_sides():
    labels = np.array([0] * 2 + [1] * 3 + [2] * 50)
    train, test = stratified_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(55))
    for c in (0, 1, 2):
        assert (labels[train] == c).any() and (labels[test] == c).any()
    assert (labels[test] == 2).sum() == 10


def test_parquet_splits_from_file_names_and_string_labels(tmp_path):
    images, labels, _ = digits_images()
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    data = tmp_path / "hf" / "data"
    data.mkdir(parents=True)
    split = digits_split(labels)
    for part in ("train", "test"):
        rows = [i for i, s in enumerate(split) if s == part]
        pq.write_table(pa.table({"jpg": [images[i] for i in rows], "target": [names[labels[i]] for i in rows]}),
                       data / f"{part}-00000-of-00001.parquet")
    ds = load_labelled("hf", f"parquet:{tmp_path / 'hf'}")
    assert ds.classes == sorted(names) and ds.named_classes
    assert len(ds.train) == split.count("train") and len(ds.test) == split.count("test")
    first_train = next(i for i, s in enumerate(split) if s == "train")
    assert ds.classes[ds.train.labels[0]] == names[labels[first_train]]
    assert "file names" in ds.notes[0]


def _fake_food101(root: Path) -> None:
    """Digits written in torchvision's Food-101 layout (meta/{train,test}.json + images/CLASS/ID.jpg)."""
    images, labels, _ = digits_images()
    import io

    from PIL import Image

    base = root / "food-101"
    meta = {"train": {}, "test": {}}
    for i, (data, label, part) in enumerate(zip(images, labels, digits_split(labels), strict=True)):
        cls = f"digit_{label}"
        (base / "images" / cls).mkdir(parents=True, exist_ok=True)
        Image.open(io.BytesIO(data)).convert("RGB").save(base / "images" / cls / f"{i}.jpg", quality=95)
        meta[part].setdefault(cls, []).append(f"{cls}/{i}")
    (base / "meta").mkdir()
    for part, content in meta.items():
        (base / "meta" / f"{part}.json").write_text(json.dumps(content))


def test_torchvision_dataset_from_a_local_root(tmp_path):
    _fake_food101(tmp_path)
    ds = load_labelled("food", f"torchvision:food101:{tmp_path}")
    assert ds.classes == [f"digit {d}" for d in range(10)] and ds.metric == "accuracy"
    _, labels, _ = digits_images()
    assert len(ds.train) == digits_split(labels).count("train") and len(ds.test) == digits_split(labels).count("test")
    assert ds.train.images[0].size == (8, 8) and ds.train.images.describe(0).endswith(".jpg")
    mean_per_class = load_labelled("food", f"torchvision:food101:{tmp_path}", DatasetOptions(metric="mean_per_class"))
    assert mean_per_class.metric == "mean_per_class"


def test_a_spec_suffix_sets_the_metric_of_any_dataset(digits_folder):
    plain = load_labelled("pets", f"imagefolder:{digits_folder}")
    marked = load_labelled("pets", f"imagefolder:{digits_folder}#metric=mean_per_class")
    assert plain.metric == "accuracy" and marked.metric == "mean_per_class"
    assert marked.fingerprint == plain.fingerprint and len(marked.test) == len(plain.test)  # features are shared
    same = load_labelled("pets", f"imagefolder:{digits_folder}#metric=mean_per_class",
                         DatasetOptions(metric="mean_per_class"))
    assert same.metric == "mean_per_class"
    with pytest.raises(DatasetError, match="says metric mean_per_class but its options say accuracy"):
        load_labelled("pets", f"imagefolder:{digits_folder}#metric=mean_per_class", DatasetOptions(metric="accuracy"))
    with pytest.raises(DatasetError, match="unknown metric 'top5'"):
        load_labelled("pets", f"imagefolder:{digits_folder}#metric=top5")
    # the CLI names a bare spec after its folder, not after its suffix
    assert named_specs([f"{digits_folder}#metric=accuracy"], "dataset") == {
        Path(digits_folder).name: f"{digits_folder}#metric=accuracy"}
    assert named_specs([f"pets=imagefolder:{digits_folder}#metric=accuracy"], "dataset") == {
        "pets": f"imagefolder:{digits_folder}#metric=accuracy"}


def test_torchvision_missing_dataset_says_what_it_looked_for(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_labelled("c", f"torchvision:cifar10:{tmp_path}")
    message = str(info.value)
    assert "\n" not in message and "cifar-10-batches-py" in message and "download=True" in message
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet21k'"):
        load_labelled("x", f"torchvision:imagenet21k:{tmp_path}")
    with pytest.raises(DatasetError, match="local folders only"):
        load_labelled("x", "torchvision:cifar10:s3://bucket/cifar")


def test_procedural_probe_set():
    ds = load_labelled("shape", "procedural:shape", DatasetOptions(per_class=6, test_per_class=4, size=32))
    assert len(ds.classes) == 8 and len(ds.train) == 48 and len(ds.test) == 32
    assert np.bincount(ds.test.labels).tolist() == [4] * 8
    assert ds.train.images[0].size == (32, 32)
    again = load_labelled("shape", "procedural:shape", DatasetOptions(per_class=6, test_per_class=4, size=32))
    assert ds.fingerprint == again.fingerprint
    assert np.array_equal(np.asarray(ds.test.images[3]), np.asarray(again.test.images[3]))


@pytest.fixture
def folder_copy(digits_folder, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(digits_folder, target)
    return target


def test_bad_datasets_are_one_line_errors_naming_the_culprit(folder_copy, tmp_path):
    cases = []
    (tmp_path / "empty").mkdir()
    cases.append((f"imagefolder:{tmp_path / 'nowhere'}", "no such directory"))
    cases.append((f"imagefolder:{tmp_path / 'empty'}", "no images under"))
    cases.append(("webdataset:/data", "unknown kind 'webdataset'"))
    cases.append(("procedural:texture", "unknown label 'texture'"))
    cases.append((f"parquet:{tmp_path / 'nothing.parquet'}", "no such file"))
    pq.write_table(pa.table({"image": [b"x"], "caption": ["no label here"]}), tmp_path / "nolabel.parquet")
    cases.append((f"parquet:{tmp_path / 'nolabel.parquet'}", "no label column"))
    for spec, expected in cases:
        with pytest.raises(DatasetError) as info:
            load_labelled("bad", spec)
        assert expected in str(info.value) and "\n" not in str(info.value), (spec, str(info.value))
    (folder_copy / "train" / "11").mkdir()  # a class folder with no image
    with pytest.raises(DatasetError, match="class '11' in .* has no images"):
        load_labelled("bad", f"imagefolder:{folder_copy}")
    (folder_copy / "train" / "11").rmdir()
    (folder_copy / "test" / "12").mkdir()
    shutil.copy(next((folder_copy / "test" / "3").iterdir()), folder_copy / "test" / "12" / "x.png")
    with pytest.raises(DatasetError, match="class '12' in test/ has no training images"):
        load_labelled("bad", f"imagefolder:{folder_copy}")
    shutil.rmtree(folder_copy / "test" / "12")
    notes = folder_copy / "train" / "4" / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(DatasetError) as info:
        load_labelled("bad", f"imagefolder:{folder_copy}")
    assert str(notes) in str(info.value) and "not an image file" in str(info.value)
    skipped = load_labelled("ok", f"imagefolder:{folder_copy}", DatasetOptions(skip_bad_images=True))
    assert any("skipped 1 non-image file" in n for n in skipped.notes)
    (folder_copy / "train" / "4" / ".DS_Store").write_bytes(b"\0")  # hidden files are ignored
    notes.unlink()
    assert len(load_labelled("ok", f"imagefolder:{folder_copy}").train) == len(skipped.train)
