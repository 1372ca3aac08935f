"""What the Prefect UI shows: progress, dataset statistics, dataset cards, result tables, plots.

Images travel inside markdown artifacts as data URIs, so the UI shows them without the store
being reachable from the browser.
"""

from __future__ import annotations

import base64
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks.retry import is_transient_api_error


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:100] or "stablerep"


class ShardProgress:
    """A progress artifact: images committed out of the images planned."""

    def __init__(self, total_images: int, done_images: int, description: str) -> None:
        self.total, self.done = max(1, total_images), done_images
        self.description = description
        self.id = create_progress_artifact(progress=self.percent, description=self._text())

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.total, 2)

    def _text(self) -> str:
        return f"{self.description}: {self.done:,} / {self.total:,} images committed"

    def add(self, images: int) -> None:
        """Count ``images`` in; a busy API skips this update (the next one carries the total)."""

        self.done = min(self.total, self.done + images)
        try:
            update_progress_artifact(self.id, progress=self.percent, description=self._text())
        except Exception as exc:
            if not is_transient_api_error(exc):
                raise


def png_markdown(title: str, png: bytes, caption: str = "") -> str:
    data = base64.b64encode(png).decode()
    return f"### {title}\n\n![{title}](data:image/png;base64,{data})\n\n{caption}\n"


def publish_dataset_artifacts(root: str, stats: dict[str, Any], manifest: dict[str, Any], sample_png: bytes | None) -> None:
    """A statistics table and a markdown dataset card (lineage) for dataset ``root``."""
    totals = stats["totals"]
    create_table_artifact(
        key=artifact_key("dataset-stats"),
        table=[{"root": root, "shards": totals["shards"], "captions": totals["captions"],
                "images": totals["images"], "megabytes": round(totals["bytes"] / 1e6, 2),
                "images_per_caption": ", ".join(str(v) for v in stats["images_per_caption"]),
                "config_hash": stats["config_hash"]}],
        description=f"Dataset statistics: {root}")
    create_markdown_artifact(key=artifact_key("dataset-card"), markdown=dataset_card(root, stats, manifest, sample_png),
                             description=f"Dataset card: {root}")


def dataset_card(root: str, stats: dict[str, Any], manifest: dict[str, Any], sample_png: bytes | None) -> str:
    lineage = dict(manifest.get("lineage", {}))
    packages = lineage.pop("packages", {})
    config = manifest.get("config", {})
    lines = [f"# Dataset card: `{root}`", "",
             f"{stats['totals']['images']:,} images of {stats['totals']['captions']:,} captions in "
             f"{stats['totals']['shards']} Parquet shards; config hash `{stats['config_hash']}`; "
             f"manifest written {stats['created']}.", "", "## Request", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in sorted(config.items())]
    lines += ["", "## Lineage", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in sorted(lineage.items())]
    lines += ["", "## Packages", "", ", ".join(f"{k} {v}" for k, v in sorted(packages.items())), ""]
    if sample_png:
        lines.append(png_markdown("Samples (one row per caption)", sample_png))
    return "\n".join(lines)
