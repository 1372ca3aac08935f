"""Pairing two dataset roots by caption id: an imported corpus and the synthetic images of its
captions share caption ids (the same normalised text has the same id everywhere)."""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from stablerep import storage
from stablerep.shards.layout import read_parquet_bytes, shard_url
from stablerep.shards.manifest import read_manifest


def committed_caption_ids(root: str) -> dict[int, str]:
    """caption id -> caption of every image in the committed shards (manifest order)."""
    out: dict[int, str] = {}
    for entry in read_manifest(root)["shards"]:
        fs, path = storage.get_fs(shard_url(root, entry["index"]))
        table = read_parquet_bytes(fs.cat_file(path), ["caption_id", "caption"])
        ids = pc.unique(table.column("caption_id")) if table.num_rows else []
        if len(ids) == table.num_rows:
            out.update(zip(table.column("caption_id").to_pylist(), table.column("caption").to_pylist(), strict=True))
        else:
            for cid, text in zip(table.column("caption_id").to_pylist(), table.column("caption").to_pylist(),
                                 strict=True):
                out.setdefault(cid, text)
    return out


def pair_report(first: str, second: str, examples: int = 3) -> dict[str, Any]:
    """The caption overlap of two roots, both ways, from their committed shards; ``identical``
    when both hold exactly the same caption ids."""
    a, b = committed_caption_ids(first), committed_caption_ids(second)
    only_a = [cid for cid in a if cid not in b]
    only_b = [cid for cid in b if cid not in a]
    return {"first": first, "second": second, "first_captions": len(a), "second_captions": len(b),
            "common": len(a) - len(only_a), "only_first": len(only_a), "only_second": len(only_b),
            "identical": not only_a and not only_b,
            "examples_only_first": [a[c] for c in only_a[:examples]],
            "examples_only_second": [b[c] for c in only_b[:examples]]}
