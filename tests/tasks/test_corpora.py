"""tasks/corpora.py through ``.fn`` on a real corpus (two CSVs of image paths, the StableRep
layout): the per-input phases a flow runs as tasks build the same dataset as the one-task import,
and a rerun redoes nothing.

write_input logs through Prefect's run logger (a task run is needed), so the write phase of the
phased build runs through the same helper it calls, ``_run(job, phase="write", inputs=[i])``."""

import csv

import pytest

import stablerep.stages  # noqa: F401 - the tasks import it on first use (torch, timm, diffusers: about 5 s); here, at collection
from stablerep.shards import read_manifest, verify_dataset
from tasks.corpora import _run, finish_import, import_corpus, index_input, open_import, plan_import
from tests.helpers.datasets import make_image_bytes

CAPTIONS = [f"a photo of object number {i} on a table" for i in range(10)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two CSVs (image,caption) of 6 and 5 rows; the last caption appears in both, with two images."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "images").mkdir()
    rows = [(f"images/{i:02d}.jpg", CAPTIONS[i]) for i in range(10)] + [("images/10.jpg", CAPTIONS[9])]
    for i, (image, _) in enumerate(rows):
        (folder / image).write_bytes(make_image_bytes(100 + i, size=32))
    out = []
    for name, part in (("a.csv", rows[:6]), ("b.csv", rows[6:])):
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "caption"])
            writer.writerows(part)
        out.append(str(folder / name))
    return out


def _job(sources, out):
    return {"sources": sources, "out": str(out), "config": {"captions_per_shard": 4}}


def _shards(root):
    return [(s["index"], s["sha256"], s["rows"]) for s in read_manifest(str(root))["shards"]]


def test_the_per_input_phases_build_what_one_task_builds(sources, tmp_path):
    whole = import_corpus.fn(_job(sources, tmp_path / "whole"))
    assert whole["inputs"] == 2 and whole["captions"] == 10 and whole["images"] == 11
    assert whole["shards"] == 3 and whole["written"] == 3 and whole["skipped"] == 0

    job = _job(sources, tmp_path / "phased")
    opened = open_import.fn(job)
    assert opened["inputs"] == 2 and opened["root"] == job["out"]
    indexed = [index_input.fn(job, i) for i in range(opened["inputs"])]
    assert [r["inputs"] for r in indexed] == [[0], [1]]
    assert [r["rows"] for r in indexed] == [6, 5] and sum(r["usable"] for r in indexed) == 11
    plan = plan_import.fn(job)
    assert plan["shards"] == 3 and plan["captions"] == 10 and plan["images"] == 11
    written = [_run(job, phase="write", inputs=[i]) for i in plan["inputs_with_shards"]]
    assert sum(w["written"] for w in written) == 3
    done = finish_import.fn(job)
    assert done["images"] == 11 and done["shards"] == 3
    assert _shards(job["out"]) == _shards(tmp_path / "whole")
    assert verify_dataset(job["out"], deep=True).ok


def test_an_import_run_again_skips_what_is_committed(sources, tmp_path):
    job = _job(sources, tmp_path / "ds")
    first = import_corpus.fn(job)
    shards = _shards(job["out"])
    again = import_corpus.fn(job)
    assert again["written"] == 0 and again["skipped"] == first["written"] == 3
    assert _shards(job["out"]) == shards
    assert again["images"] == first["images"] == 11


def test_a_bad_request_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError):
        import_corpus.fn({"sources": [str(tmp_path / "missing.csv")], "out": str(tmp_path / "ds"),
                          "config": {"captions_per_shard": 0}})
    assert not (tmp_path / "ds").exists()
