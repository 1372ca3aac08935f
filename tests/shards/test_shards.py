"""Shard writer, marks, manifest and verification, on a local directory and on S3 (SeaweedFS)."""

import json

import pyarrow.parquet as pq
import pytest

from stablerep import storage
from stablerep.shards import (
    ShardError,
    config_hash,
    dataset_stats,
    mark_url,
    read_manifest,
    shard_url,
    verify_dataset,
    write_manifest,
    write_shard,
)
from stablerep.shards.layout import read_parquet_bytes
from tests.helpers.datasets import example_records, write_example_dataset


def test_round_trip_and_layout(dataset_root):
    manifest = write_example_dataset(dataset_root, n_captions=12, images_per_caption=4, captions_per_shard=5)
    stored = sum(len(storage.read_bytes(shard_url(dataset_root, i))) for i in range(3))
    assert manifest["totals"] == {"shards": 3, "images": 48, "captions": 12, "bytes": stored}
    assert read_manifest(dataset_root) == manifest
    report = verify_dataset(dataset_root, deep=True)
    assert report.ok, report.problems
    assert (report.shards_checked, report.images_checked) == (3, 48)
    table = read_parquet_bytes(storage.read_bytes(shard_url(dataset_root, 0)))
    assert table.column_names == ["caption_id", "caption", "image_index", "seed", "image", "width", "height"]
    assert table.num_rows == 20
    row = table.slice(0, 1).to_pylist()[0]
    assert row["image"]["bytes"][:2] == b"\xff\xd8"  # JPEG
    assert row["image"]["path"].endswith(".jpg")
    assert manifest["lineage"]["packages"]["pyarrow"]
    stats = dataset_stats(dataset_root)
    assert stats["images_per_caption"] == [4.0] and stats["totals"]["images"] == 48


def test_row_groups_never_split_a_caption(tmp_path):
    records = example_records([f"caption {i}" for i in range(7)], 3, size=16)
    mark = write_shard(str(tmp_path), 0, records, "h", row_group_rows=4)
    pf = pq.ParquetFile(tmp_path / "shards" / "000000.parquet")
    assert pf.num_row_groups == len(mark["row_groups"]) == 4  # groups of 6, 6, 6, 3 rows
    for g in range(pf.num_row_groups):
        ids = pf.read_row_group(g, columns=["caption_id"], use_threads=False).column(0).to_pylist()
        assert len(ids) % 3 == 0
    assert [g["rows"] for g in mark["row_groups"]] == [6, 6, 6, 3]


def test_committed_shard_is_never_rewritten(dataset_root):
    records = example_records(["a cat", "a dog"], 2, size=16)
    first = write_shard(dataset_root, 0, records, "hash1")
    other = example_records(["something else"], 2, size=16)
    again = write_shard(dataset_root, 0, other, "hash1")  # committed: left as it is
    assert again == first
    assert read_parquet_bytes(storage.read_bytes(shard_url(dataset_root, 0))).num_rows == 4
    with pytest.raises(ShardError, match="committed for config hash1, not hash2"):
        write_shard(dataset_root, 0, records, "hash2")


def test_interrupted_shard_is_invisible_and_redone(dataset_root):
    """A run killed after writing a shard's bytes but before its mark leaves no visible shard."""
    records = example_records(["a cat", "a dog"], 2, size=16)
    storage.write_bytes(shard_url(dataset_root, 0), b"PAR1 half a shard")  # what a kill leaves
    with pytest.raises(ShardError, match="not committed"):
        write_manifest(dataset_root, [0], {}, "h")
    assert not verify_dataset(dataset_root).ok  # no manifest: not a dataset yet
    mark = write_shard(dataset_root, 0, records, "h")  # the next run overwrites it
    write_manifest(dataset_root, [0], {}, "h")
    assert verify_dataset(dataset_root).ok
    assert mark["rows"] == 4


def test_non_contiguous_captions_are_refused(tmp_path):
    a, b = example_records(["a"], 2, size=16), example_records(["b"], 1, size=16)
    with pytest.raises(ShardError, match="not contiguous"):
        write_shard(str(tmp_path), 0, [a[0], b[0], a[1]], "h")
    assert not (tmp_path / "shards" / "000000.parquet").exists()


@pytest.mark.parametrize("damage,message", [
    ("truncate", "truncated"),
    ("flip", "sha256 differs"),
    ("drop_mark", "commit mark missing"),
    ("drop_shard", "shard file missing"),
    ("manifest_garbage", "not valid JSON"),
    ("manifest_missing", "does not exist"),
])
def test_verify_names_the_damage(tmp_path, damage, message):
    root = str(tmp_path)
    write_example_dataset(root, n_captions=6, images_per_caption=2, captions_per_shard=3)
    shard = tmp_path / "shards" / "000001.parquet"
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-100])
    elif damage == "flip":
        blob = bytearray(shard.read_bytes())
        blob[len(blob) // 2] ^= 1
        shard.write_bytes(bytes(blob))
    elif damage == "drop_mark":
        (tmp_path / "shards" / "000001.json").unlink()
    elif damage == "drop_shard":
        shard.unlink()
    elif damage == "manifest_garbage":
        (tmp_path / "manifest.json").write_text("{not json")
    else:
        (tmp_path / "manifest.json").unlink()
    report = verify_dataset(root)
    assert not report.ok
    assert message in report.problems[0]
    if damage in ("truncate", "flip", "drop_mark", "drop_shard"):
        assert "000001" in report.problems[0]


def test_mark_is_written_after_the_shard(tmp_path, monkeypatch):
    """If the shard write fails, no mark exists (the order the commit protocol relies on)."""
    order = []
    real = storage.write_bytes

    def spy(url, data):
        order.append(url.rsplit("/", 1)[-1])
        return real(url, data)

    monkeypatch.setattr(storage, "write_bytes", spy)
    write_shard(str(tmp_path), 3, example_records(["x"], 1, size=16), "h")
    assert order == ["000003.parquet", "000003.json"]
    assert json.loads((tmp_path / "shards" / "000003.json").read_text())["index"] == 3
    assert mark_url(str(tmp_path), 3).endswith("shards/000003.json")

    def failing_shard_write(url, data):
        if url.endswith(".parquet"):
            raise OSError("store refused the shard")
        return real(url, data)

    monkeypatch.setattr(storage, "write_bytes", failing_shard_write)
    with pytest.raises(OSError, match="refused"):
        write_shard(str(tmp_path), 4, example_records(["y"], 1, size=16), "h")
    assert not (tmp_path / "shards" / "000004.json").exists()


def test_config_hash_is_stable():
    assert config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
