"""Deterministic sampling of N captions from a stream (a dataset's captions.parquet itself is
stablerep.shards.captions).

The sample is the N distinct captions with the smallest key BLAKE2b(seed, caption_id): it depends
on the seed and the set of captions only, not on their order in the file, and needs memory for N
captions plus 8 bytes per caption id read (for the exact duplicate count).
"""

from __future__ import annotations

import hashlib
import heapq
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from stablerep.captions.normalize import CaptionFilter, caption_id, normalize_caption
from stablerep.captions.sources import CaptionSourceError, read_captions
from stablerep.shards.captions import load_captions, merge_captions, write_caption_table

__all__ = ["SampleResult", "load_captions", "merge_captions", "sample_captions", "sample_key", "write_captions"]

RESERVED = ("caption_id", "caption")


@dataclass
class SampleResult:
    table: pa.Table  # caption_id, caption, then the source's other columns
    stats: dict[str, Any]


def sample_key(seed: int, cid: int) -> int:
    data = seed.to_bytes(8, "big", signed=True) + cid.to_bytes(8, "big")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class _IdSet:
    """Caption ids read so far, 8 bytes each, for the exact count of distinct captions."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._buf = array("q")

    def add(self, cid: int) -> None:
        self._buf.append(cid)
        if len(self._buf) >= 1 << 20:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._chunks.append(np.unique(np.frombuffer(self._buf, dtype=np.int64)))
            self._buf = array("q")

    def distinct(self) -> int:
        self._flush()
        return int(np.unique(np.concatenate(self._chunks)).size) if self._chunks else 0


def sample_captions(source: str, n: int, seed: int = 0, *, fmt: str | None = None,
                    column: str = "caption", caption_filter: CaptionFilter | None = None,
                    allow_fewer: bool = False, progress: bool = True) -> SampleResult:
    """Read ``source``, normalise, filter, drop exact duplicates and sample ``n`` captions."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    flt = caption_filter or CaptionFilter()
    heap: list[tuple[int, int, str, dict[str, Any]]] = []  # (-key, id, caption, extra): a max-heap
    in_heap: set[int] = set()
    ids = _IdSet()
    dropped = {"empty": 0, "too_short": 0, "blocked": 0}
    read = truncated = passed = 0
    for raw in tqdm(read_captions(source, fmt, column), desc="captions", unit=" rows",
                    disable=None if progress else True, mininterval=1.0):
        read += 1
        text, reason = flt.check(normalize_caption(raw.text))
        if text is None:
            dropped[reason] += 1
            continue
        truncated += reason == "truncated"
        passed += 1
        cid = caption_id(text)
        ids.add(cid)
        if cid in in_heap:
            continue
        key = sample_key(seed, cid)
        if len(heap) < n:
            heapq.heappush(heap, (-key, cid, text, raw.extra))
            in_heap.add(cid)
        elif key < -heap[0][0]:
            _, old, _, _ = heapq.heapreplace(heap, (-key, cid, text, raw.extra))
            in_heap.discard(old)
            in_heap.add(cid)
    if read == 0:
        raise CaptionSourceError(f"{source}: empty file (no captions)")
    distinct = ids.distinct()
    dropped["duplicate"] = passed - distinct
    stats = {"source": source, "seed": seed, "requested": n, "read": read, "dropped": dropped,
             "truncated": truncated, "eligible": distinct, "sampled": len(heap)}
    if len(heap) < n and not allow_fewer:
        raise CaptionSourceError(
            f"{source}: only {distinct} distinct captions pass the filters ({read} read, dropped: "
            f"{', '.join(f'{k} {v}' for k, v in dropped.items())}), fewer than the {n} asked; "
            "ask for fewer or allow fewer (--allow-fewer) to use them all")
    rows = sorted(heap, key=lambda item: -item[0])
    return SampleResult(_to_table(rows), stats)


def _to_table(rows: list[tuple[int, int, str, dict[str, Any]]]) -> pa.Table:
    extra_keys: list[str] = []
    for _, _, _, extra in rows:
        extra_keys += [k for k in extra if k not in extra_keys]
    columns: dict[str, list] = {"caption_id": [r[1] for r in rows], "caption": [r[2] for r in rows]}
    for key in extra_keys:
        name = f"source_{key}" if key in RESERVED else key
        columns[name] = [r[3].get(key) for r in rows]
    table = pa.table(columns)
    return table.set_column(0, "caption_id", table.column("caption_id").cast(pa.int64()))


def write_captions(root: str, result: SampleResult) -> str:
    """Write the sample as ROOT/captions.parquet and its statistics as ROOT/captions.json."""
    return write_caption_table(root, result.table, result.stats)
