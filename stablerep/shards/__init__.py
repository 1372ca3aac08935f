"""The on-storage dataset at any fsspec URL: its captions (captions.parquet), shard plan (plan.json),
Parquet shards with commit marks, manifest, verification, statistics, the writer lease and the
plain row reader."""

from stablerep.shards.captions import load_captions, merge_captions, write_caption_table
from stablerep.shards.layout import SHARD_SCHEMA, captions_url, manifest_url, mark_url, shard_url
from stablerep.shards.lease import LeaseHeld, LeaseLost, WriterLease, read_lease, writer_lease
from stablerep.shards.manifest import (
    VerifyReport,
    config_hash,
    dataset_stats,
    package_versions,
    read_manifest,
    verify_dataset,
    write_manifest,
)
from stablerep.shards.plan import PLAN_FILE, ShardPlan, load_plan
from stablerep.shards.rows import iter_images
from stablerep.shards.writer import ImageRecord, ShardError, committed_mark, write_shard

__all__ = [
    "PLAN_FILE",
    "ShardPlan",
    "iter_images",
    "load_captions",
    "load_plan",
    "merge_captions",
    "write_caption_table",
    "SHARD_SCHEMA",
    "ImageRecord",
    "LeaseHeld",
    "LeaseLost",
    "ShardError",
    "VerifyReport",
    "WriterLease",
    "captions_url",
    "committed_mark",
    "config_hash",
    "dataset_stats",
    "manifest_url",
    "mark_url",
    "package_versions",
    "read_lease",
    "read_manifest",
    "shard_url",
    "verify_dataset",
    "write_manifest",
    "write_shard",
    "writer_lease",
]
