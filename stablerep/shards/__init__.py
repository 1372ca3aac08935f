"""Parquet shards on any fsspec URL: writer with commit marks, manifest, verification, readers."""

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
from stablerep.shards.writer import ImageRecord, ShardError, committed_mark, write_shard

__all__ = [
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
