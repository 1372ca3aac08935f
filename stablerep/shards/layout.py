"""The dataset layout at any fsspec URL, and the Parquet schema of a shard.

    ROOT/captions.parquet          caption_id, caption, source columns (rows only ever appended)
    ROOT/plan.json                 which caption rows each shard holds (only ever extended)
    ROOT/shards/000000.parquet     one row per image; a caption's images together in one row group
    ROOT/shards/000000.json        the shard's commit mark, written after it
    ROOT/manifest.json             written last
    ROOT/import/                   an imported corpus's bookkeeping (stablerep.corpora.importer)
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from stablerep import storage

FORMAT_VERSION = 1
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

# Hugging Face `datasets` reads this schema metadata and decodes `image` as an Image feature.
_HF_FEATURES = {
    "caption_id": {"dtype": "int64", "_type": "Value"},
    "caption": {"dtype": "string", "_type": "Value"},
    "image_index": {"dtype": "int32", "_type": "Value"},
    "seed": {"dtype": "int64", "_type": "Value"},
    "image": {"_type": "Image"},
    "width": {"dtype": "int32", "_type": "Value"},
    "height": {"dtype": "int32", "_type": "Value"},
}

SHARD_SCHEMA = pa.schema(
    [
        ("caption_id", pa.int64()),
        ("caption", pa.string()),
        ("image_index", pa.int32()),
        ("seed", pa.int64()),
        ("image", IMAGE_TYPE),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ],
    metadata={b"huggingface": json.dumps({"info": {"features": _HF_FEATURES}}).encode()},
)


# An imported corpus's shards: the same columns (seed is null: a real image has none) plus where
# each image came from, kept as the source gave it.
SOURCE_COLUMNS = ("source_key", "source_url", "source_file")
_HF_IMPORT_FEATURES = {**_HF_FEATURES, **{name: {"dtype": "string", "_type": "Value"} for name in SOURCE_COLUMNS}}
IMPORT_SCHEMA = pa.schema(
    [*SHARD_SCHEMA, *(pa.field(name, pa.string()) for name in SOURCE_COLUMNS)],
    metadata={b"huggingface": json.dumps({"info": {"features": _HF_IMPORT_FEATURES}}).encode()},
)


def shard_name(index: int) -> str:
    if not isinstance(index, int) or index < 0 or index > 999_999:
        raise ValueError(f"shard index must be an integer in [0, 999999], got {index!r}")
    return f"{index:06d}"


def shard_url(root: str, index: int) -> str:
    return storage.join(root, "shards", f"{shard_name(index)}.parquet")


def mark_url(root: str, index: int) -> str:
    return storage.join(root, "shards", f"{shard_name(index)}.json")


def manifest_url(root: str) -> str:
    return storage.join(root, "manifest.json")


def captions_url(root: str) -> str:
    return storage.join(root, "captions.parquet")


def read_parquet_bytes(blob: bytes, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet file held in memory as a table.

    Decoded single-threaded: with pyarrow's thread pool, a read can leave work running when the
    interpreter exits, and the process then aborts ("terminate called without an active
    exception"; apache/arrow#33975, #34314, #50482; seen here in about 1 run in 3 with pyarrow
    26.0.1). Our reads are small, and loader workers already read in parallel.
    """
    return pq.read_table(pa.BufferReader(blob), columns=columns, use_threads=False)
