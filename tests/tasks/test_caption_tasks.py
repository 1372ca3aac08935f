"""tasks/captions.py through ``.fn`` on real caption files and dataset roots: the procedural
corpus, sampling into a root (appending, never reordering) and copying another root's captions.

(Named test_caption_tasks.py: tests/captions/test_captions.py already holds the module name.)"""

import pytest

from stablerep.captions import caption_id, normalize_caption
from stablerep.errors import CaptionSourceError
from stablerep.shards.captions import load_captions
from stablerep.world import procedural_captions as grammar
from tasks.captions import copy_captions, procedural_captions, sample_captions


@pytest.fixture
def corpus(tmp_path):
    return procedural_captions.fn(str(tmp_path / "corpus.txt"), 40, seed=5)


def _ids(root):
    return load_captions(root).column("caption_id").to_pylist()


def test_the_procedural_corpus_is_n_distinct_grammar_captions(tmp_path):
    url = str(tmp_path / "corpus.txt")
    assert procedural_captions.fn(url, 25, seed=3) == url
    lines = (tmp_path / "corpus.txt").read_text().splitlines()
    assert lines == grammar(25, seed=3) and len(set(lines)) == 25
    other = procedural_captions.fn(str(tmp_path / "other.txt"), 25, seed=4)
    assert (tmp_path / "other.txt").read_text().splitlines() != lines and other.endswith("other.txt")


def test_sampling_writes_the_captions_into_the_root(corpus, tmp_path):
    root = str(tmp_path / "ds")
    out = sample_captions.fn(corpus, root, 12, seed=1)
    assert out == {"root": root, "sampled": 12, "added": 12, "eligible": 40}
    table = load_captions(root)
    captions = table.column("caption").to_pylist()
    assert table.num_rows == 12 and set(captions) <= set(grammar(40, seed=5))
    assert table.column("caption_id").to_pylist() == [caption_id(normalize_caption(c)) for c in captions]


def test_a_larger_sample_appends_only_the_new_captions(corpus, tmp_path):
    root = str(tmp_path / "ds")
    sample_captions.fn(corpus, root, 10, seed=1)
    first = _ids(root)
    out = sample_captions.fn(corpus, root, 16, seed=1)
    assert out["sampled"] == 16 and out["added"] == 6  # the 10 first are the same sample's smallest keys
    grown = _ids(root)
    assert grown[:10] == first and len(set(grown)) == 16  # existing rows keep their order (shard plans)
    assert sample_captions.fn(corpus, root, 16, seed=1)["added"] == 0  # a rerun adds nothing
    assert _ids(root) == grown


def test_another_seed_adds_a_different_sample_behind_the_first(corpus, tmp_path):
    root = str(tmp_path / "ds")
    sample_captions.fn(corpus, root, 10, seed=1)
    first = _ids(root)
    out = sample_captions.fn(corpus, root, 10, seed=2)
    after = _ids(root)
    assert after[:10] == first and out["added"] == len(after) - 10 == len(set(after) - set(first)) > 0


def test_asking_for_more_captions_than_the_corpus_holds(corpus, tmp_path):
    root = str(tmp_path / "ds")
    with pytest.raises(CaptionSourceError, match="only 40 distinct captions"):
        sample_captions.fn(corpus, root, 50)
    assert not (tmp_path / "ds" / "captions.parquet").exists()
    out = sample_captions.fn(corpus, root, 50, allow_fewer=True)
    assert out == {"root": root, "sampled": 40, "added": 40, "eligible": 40}


def test_copying_a_roots_captions_keeps_their_ids_and_order(corpus, tmp_path):
    real, synthetic = str(tmp_path / "real"), str(tmp_path / "synthetic")
    sample_captions.fn(corpus, real, 9, seed=7)
    assert copy_captions.fn(real, synthetic) == {"root": synthetic, "added": 9}
    assert load_captions(synthetic).to_pylist() == load_captions(real).to_pylist()
    assert copy_captions.fn(real, synthetic)["added"] == 0
    sample_captions.fn(corpus, real, 14, seed=7)
    assert copy_captions.fn(real, synthetic)["added"] == 5
    assert _ids(synthetic) == _ids(real)


def test_copying_from_a_root_without_captions_is_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="captions.parquet"):
        copy_captions.fn(str(tmp_path / "empty"), str(tmp_path / "out"))
