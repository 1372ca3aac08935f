"""tasks/synthesis.py through ``.fn`` on real dataset roots: the shard plan and which shards still
need work (what a build's progress and fan-out start from), and the manifest over the plan."""

import json

import pytest

from stablerep.config import SynthesisConfig
from stablerep.errors import ShardError
from stablerep.shards import read_manifest
from stablerep.synthesis import ProceduralBackend, load_plan, synthesize_shard
from tasks.captions import procedural_captions, sample_captions
from tasks.synthesis import plan_shards, write_manifest

# 10 captions, 4 a shard: shards of 4, 4 and 2 captions; 2 images each, drawn at 64 px
CFG = SynthesisConfig(images_per_caption=2, captions_per_shard=4, resolution=64, image_size=32, image_format="png",
                      batch_size=4, device="cpu")


@pytest.fixture
def corpus(tmp_path):
    return procedural_captions.fn(str(tmp_path / "corpus.txt"), 30, seed=11)


@pytest.fixture
def root(corpus, tmp_path):
    root = str(tmp_path / "ds")
    sample_captions.fn(corpus, root, 10, seed=0)
    return root


def _commit(root, cfg, index):
    plan = next(p for p in load_plan(root, cfg) if p.index == index)
    _, written = synthesize_shard(root, plan, ProceduralBackend(size=cfg.resolution or 512), cfg)
    assert written


def test_a_new_root_is_planned_and_every_shard_is_pending(root, tmp_path):
    out = plan_shards.fn(root, CFG)
    assert out == {"shards": [0, 1, 2], "pending": [0, 1, 2], "images": {0: 8, 1: 8, 2: 4},
                   "total_images": 20, "done_images": 0}
    plan = json.loads((tmp_path / "ds" / "plan.json").read_text())
    assert plan["bounds"] == [[0, 4], [4, 8], [8, 10]] and plan["rows"] == 10
    assert plan_shards.fn(root, CFG) == out  # planning again changes nothing


def test_committed_shards_are_done(root):
    _commit(root, CFG, 1)
    out = plan_shards.fn(root, CFG)
    assert out["pending"] == [0, 2] and out["done_images"] == 8 and out["total_images"] == 20
    _commit(root, CFG, 2)
    assert plan_shards.fn(root, CFG)["pending"] == [0]


def test_settings_outside_the_hash_do_not_change_what_is_done(root):
    _commit(root, CFG, 0)
    other = CFG.model_copy(update={"batch_size": 1, "device": "cuda", "compile": False})
    assert plan_shards.fn(root, other)["pending"] == [1, 2]


def test_an_unset_resolution_is_the_backends_own(root):
    """The hash records the resolved setting: unset and the procedural renderer's 512 px are one request."""
    unset = CFG.model_copy(update={"resolution": None})
    _commit(root, unset, 0)
    assert plan_shards.fn(root, CFG.model_copy(update={"resolution": 512}))["pending"] == [1, 2]
    assert plan_shards.fn(root, unset)["pending"] == [1, 2]


def test_a_shard_committed_for_another_request_is_an_error(root):
    _commit(root, CFG, 0)
    with pytest.raises(ShardError, match="committed for config"):
        plan_shards.fn(root, CFG.model_copy(update={"images_per_caption": 3}))


def test_appended_captions_add_shards_and_keep_the_committed_ones(root, corpus):
    _commit(root, CFG, 0)
    _commit(root, CFG, 2)  # the short last shard stays as it is: new captions get new shards
    added = sample_captions.fn(corpus, root, 16, seed=0)["added"]
    assert added == 6
    out = plan_shards.fn(root, CFG)
    assert out["shards"] == [0, 1, 2, 3, 4] and out["pending"] == [1, 3, 4]
    assert out["images"] == {0: 8, 1: 8, 2: 4, 3: 8, 4: 4}
    assert out["total_images"] == 32 and out["done_images"] == 12


def test_another_shard_size_on_a_planned_root_is_refused(root):
    plan_shards.fn(root, CFG)
    with pytest.raises(ValueError, match="captions_per_shard=4, not 5"):
        plan_shards.fn(root, CFG.model_copy(update={"captions_per_shard": 5}))


def test_a_root_without_captions_is_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        plan_shards.fn(str(tmp_path / "nothing"), CFG)


def test_the_manifest_needs_every_shard_and_then_covers_the_plan(root, tmp_path):
    _commit(root, CFG, 0)
    _commit(root, CFG, 1)
    with pytest.raises(ShardError, match="shard 2 is not committed"):
        write_manifest.fn(root, CFG)
    _commit(root, CFG, 2)
    out = write_manifest.fn(root, CFG)
    manifest = read_manifest(root)
    assert out == {"root": root, "config_hash": manifest["config_hash"], "totals": manifest["totals"],
                   "created": manifest["created"]}
    assert out["totals"]["images"] == 20 and out["totals"]["captions"] == 10 and out["totals"]["shards"] == 3
    assert [s["index"] for s in manifest["shards"]] == [0, 1, 2]
    before = (tmp_path / "ds" / "manifest.json").read_bytes()
    assert write_manifest.fn(root, CFG) == out  # an unchanged dataset keeps its manifest
    assert (tmp_path / "ds" / "manifest.json").read_bytes() == before
