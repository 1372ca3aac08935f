"""The corpus that img2dataset itself builds (tests/helpers/corpus.py), once per session."""

from pathlib import Path

import pytest

from tests.helpers.corpus import build_corpus, make_photos

HERE = Path(__file__).resolve().parent
# img2dataset's download runs in child processes (its worker pool and logger are spawned), so the
# tests that use its corpus belong to the integration set, out of `make check`'s fast loop.
CHILD_PROCESS_FIXTURES = {"corpus"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(item.path).resolve().parents and CHILD_PROCESS_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Real photographs downloaded by img2dataset into its webdataset and parquet outputs, plus
    an HF Parquet and a CSV of the same successful pairs."""
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """A dozen real JPEG crops with captions (no img2dataset): (folder, [(file name, caption)])."""
    folder = tmp_path_factory.mktemp("photos")
    return folder, make_photos(folder, n=12, seed=1, special=False)
