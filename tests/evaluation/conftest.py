import pytest

from stablerep.config import load_config
from stablerep.data import RandomCaptionBatches
from stablerep.training import run_training_loop
from tests.helpers.datasets import write_digits_imagefolder, write_digits_parquet


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory):
    """scikit-learn's real handwritten digits as an image folder (train/ and test/)."""
    return write_digits_imagefolder(str(tmp_path_factory.mktemp("digits-folder")))


@pytest.fixture(scope="session")
def digits_parquet(tmp_path_factory):
    """The same digits and split as a Parquet file in Hugging Face's layout."""
    return write_digits_parquet(str(tmp_path_factory.mktemp("digits-parquet") / "digits.parquet"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny-ViT run directory (3 steps on random tensors): an architecture and a checkpoint."""
    out = tmp_path_factory.mktemp("tiny-run")
    run = load_config("tiny_cpu", ["train.steps=3", "optim.warmup_steps=0"])
    run_training_loop(run, RandomCaptionBatches(16, 4, 32), str(out), progress=False)
    return str(out)
