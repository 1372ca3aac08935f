"""A dataset root's shard plan: ROOT/plan.json, the row bounds of each shard in captions.parquet.

A shard is (captions_per_shard captions) x (images_per_caption images), in captions.parquet
order; the plan is persisted and only ever extended, so appending captions adds shards and never
changes a committed one."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from stablerep import storage
from stablerep.config import SynthesisConfig
from stablerep.shards.captions import load_captions
from stablerep.shards.layout import captions_url
from stablerep.shards.lease import writer_lease

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class ShardPlan:
    index: int
    captions: tuple[tuple[int, str], ...]  # (caption_id, caption)


def _ids_digest(captions: list[tuple[int, str]]) -> str:
    return hashlib.sha256(b"".join(cid.to_bytes(8, "little", signed=True) for cid, _ in captions)).hexdigest()


def _extended_plan(root: str, cfg: SynthesisConfig) -> tuple[list[ShardPlan], dict[str, Any] | None]:
    """The shard plan with shards for captions appended since it was saved, and the plan to save
    (None when it already covers every caption)."""
    table = load_captions(root)
    captions = list(zip(table.column("caption_id").to_pylist(), table.column("caption").to_pylist(), strict=True))
    if not captions:
        raise ValueError(f"{captions_url(root)} holds no captions")
    url = storage.join(root, PLAN_FILE)
    plan = json.loads(storage.read_bytes(url)) if storage.exists(url) else {
        "captions_per_shard": cfg.captions_per_shard, "bounds": [], "rows": 0, "ids_sha256": _ids_digest([])}
    if plan.get("kind") == "import":
        raise ValueError(f"{root} is an imported corpus (its {PLAN_FILE} plans its real images); synthesise its "
                         "captions into another root: --captions ROOT --out OTHER")
    if plan["captions_per_shard"] != cfg.captions_per_shard:
        raise ValueError(f"{url}: the dataset is planned with captions_per_shard={plan['captions_per_shard']}, "
                         f"not {cfg.captions_per_shard}; use that value or a new dataset root")
    planned = plan["rows"]
    if planned > len(captions) or _ids_digest(captions[:planned]) != plan["ids_sha256"]:
        raise ValueError(f"{captions_url(root)} no longer starts with the {planned} captions {url} planned "
                         "(captions may only be appended); write to a new dataset root")
    grown = None
    if planned < len(captions):
        grown = {**plan, "bounds": list(plan["bounds"])}
        for start in range(planned, len(captions), cfg.captions_per_shard):
            grown["bounds"].append([start, min(start + cfg.captions_per_shard, len(captions))])
        grown.update(rows=len(captions), ids_sha256=_ids_digest(captions))
    return [ShardPlan(i, tuple(captions[a:b])) for i, (a, b) in enumerate((grown or plan)["bounds"])], grown


def load_plan(root: str, cfg: SynthesisConfig) -> list[ShardPlan]:
    """The shard plan of dataset ``root``: its persisted plan (ROOT/plan.json) extended with new
    shards for captions appended to captions.parquet since. Planned shards never change, so adding
    captions never touches a committed shard. Extending the plan takes the root's writer lease."""
    plans, grown = _extended_plan(root, cfg)
    if grown is None:
        return plans
    with writer_lease(root, "a shard plan extension"):
        plans, grown = _extended_plan(root, cfg)  # again: another writer may have extended it meanwhile
        if grown is not None:
            storage.write_bytes(storage.join(root, PLAN_FILE), json.dumps(grown).encode())
        return plans
