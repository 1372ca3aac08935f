"""Readers that share no code with ours see the same dataset."""

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from stablerep.data.shards import iter_images
from tests.helpers.datasets import write_example_dataset


@pytest.mark.slow
def test_pyarrow_s3filesystem_reads_what_s3fs_wrote(s3_server):
    import uuid

    from tests.conftest import S3_BUCKET, S3_KEY, S3_SECRET

    prefix = f"{S3_BUCKET}/{uuid.uuid4().hex}"
    manifest = write_example_dataset(f"s3://{prefix}", n_captions=6, images_per_caption=3, captions_per_shard=4)
    fs = pafs.S3FileSystem(access_key=S3_KEY, secret_key=S3_SECRET, endpoint_override=s3_server,
                           scheme="http", region="us-east-1")
    total = 0
    for entry in manifest["shards"]:
        table = pq.read_table(f"{prefix}/{entry['file']}", filesystem=fs, use_threads=False)
        assert table.num_rows == entry["rows"]
        total += table.num_rows
    assert total == 18
    ours = list(iter_images(f"s3://{prefix}", columns=["caption_id", "image_index", "seed"]))
    theirs = pq.read_table(f"{prefix}/shards/000000.parquet", filesystem=fs, use_threads=False,
                           columns=["caption_id", "image_index", "seed"]).to_pylist()
    assert ours[: len(theirs)] == theirs


def test_hugging_face_datasets_decodes_the_images(tmp_path):
    from datasets import load_dataset
    from PIL import Image

    write_example_dataset(str(tmp_path), n_captions=5, images_per_caption=2, captions_per_shard=3, size=24)
    ds = load_dataset("parquet", data_files=str(tmp_path / "shards" / "*.parquet"), split="train",
                      cache_dir=str(tmp_path / "hf-cache"))
    assert len(ds) == 10
    assert ds.features["image"].__class__.__name__ == "Image"
    first = ds[0]["image"]
    assert isinstance(first, Image.Image) and first.size == (24, 24)
    assert set(ds.column_names) >= {"caption_id", "caption", "image_index", "seed", "width", "height"}
