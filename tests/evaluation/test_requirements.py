"""A dataset with too few images per class fails before any encoder runs, in one line that names
the dataset, the classes and their counts, and what each protocol needs."""

import shutil
from pathlib import Path

import pytest

from stablerep.errors import DatasetError
from stablerep.evaluation import EvalSuite, run_evaluation
from tests.helpers.datasets import write_digits_imagefolder


def _digits_folder(root: Path, train: int, test: int) -> Path:
    """The first ``train`` / ``test`` digits of each class as ROOT/{train,test}/DIGIT/NNNN.png."""
    return Path(write_digits_imagefolder(str(root), train, test))


def _suite(folder: Path, encoder: str, **protocols) -> EvalSuite:
    return EvalSuite.model_validate({"datasets": {"digits": f"imagefolder:{folder}"}, "encoders": {"e": encoder},
                                     "features": {"cache": None}, "protocols": protocols})


def test_one_image_per_class_names_the_dataset_the_classes_and_what_each_protocol_needs(tmp_path):
    folder = _digits_folder(tmp_path / "one", train=1, test=1)
    # the encoder does not exist: the check must fail first, before any encoder is loaded
    with pytest.raises(DatasetError) as info:
        run_evaluation(_suite(folder, f"random:{tmp_path / 'no-run'}"), out=str(tmp_path / "out"), progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"digits=imagefolder:{folder}: class '0' has 1 train image(s)"), message
    assert "(and 6 more)" in message  # ten classes short, four named
    assert "the linear probe needs at least 2 train and 1 test images per class" in message
    assert "kNN" not in message  # one train and one test image a class is what kNN needs
    assert not (tmp_path / "out").exists()


def test_a_class_without_test_images_fails_for_knn_too(tmp_path):
    folder = _digits_folder(tmp_path / "gap", train=4, test=2)
    shutil.rmtree(folder / "test" / "3")
    with pytest.raises(DatasetError) as info:
        run_evaluation(_suite(folder, f"random:{tmp_path / 'no-run'}", linear_probe={"enabled": False}),
                       progress=False)
    assert str(info.value) == (f"digits=imagefolder:{folder}: class '3' has 0 test image(s); "
                               "kNN needs at least 1 train and 1 test images per class")


def test_enough_images_for_the_enabled_protocols_runs(tmp_path, tiny_run):
    folder = _digits_folder(tmp_path / "one", train=1, test=1)
    summary = run_evaluation(_suite(folder, f"random:{tiny_run}", linear_probe={"enabled": False},
                                    few_shot={"shots": [1], "queries": 1, "episodes": 5}), progress=False)
    scores = summary["results"]["digits"]["e"]
    assert 0 <= scores["knn"] <= 1 and "linear_probe" not in scores
    assert scores["few_shot_5way_1shot"] is None  # a protocol the dataset cannot support: not applicable
    assert "needs 5 classes" in scores["not_applicable"]["few_shot_5way_1shot"]
