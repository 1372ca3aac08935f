"""tasks/artifacts.py: artifact keys, the progress bookkeeping, PNG markdown and the dataset card,
on a real dataset. Prefect's artifact calls (an API client) are replaced by recorders where the
test is about what we send them, so no server runs."""

import base64
import re

import httpx
import pytest

import tasks.artifacts as artifacts
from stablerep.plots import sample_grid
from stablerep.shards import dataset_stats, read_manifest
from tasks.artifacts import ShardProgress, artifact_key, dataset_card, png_markdown
from tests.helpers.datasets import write_example_dataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("parts, key", [
    (("training", "stablerep"), "training-stablerep"),
    (("loss-curve", "CLIP"), "loss-curve-clip"),
    (("Dataset Stats",), "dataset-stats"),
    (("eval", "s3://bucket/my_run.v2/"), "eval-s3---bucket-my-run-v2"),
    (("--x--",), "x"),
    (("",), "stablerep"),
    (("***",), "stablerep"),
])
def test_artifact_keys_are_lowercase_letters_digits_and_dashes(parts, key):
    assert artifact_key(*parts) == key


def test_artifact_keys_are_at_most_100_characters():
    key = artifact_key("training", "x" * 300)
    assert len(key) == 100 and key.startswith("training-x") and re.fullmatch(r"[a-z0-9-]+", key)


class Recorder:
    """Stands in for Prefect's create/update_progress_artifact; ``fail`` raises on updates."""

    def __init__(self, fail=()):
        self.created, self.updates, self.fail = [], [], list(fail)

    def create(self, progress, description):
        self.created.append((progress, description))
        return "artifact-id"

    def update(self, artifact_id, progress, description):
        if self.fail:
            raise self.fail.pop(0)
        self.updates.append((artifact_id, progress, description))


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(artifacts, "create_progress_artifact", rec.create)
    monkeypatch.setattr(artifacts, "update_progress_artifact", rec.update)
    return rec


def test_progress_starts_at_the_committed_share(recorder):
    progress = ShardProgress(total_images=3000, done_images=1000, description="build ds")
    assert progress.id == "artifact-id"
    assert recorder.created == [(33.33, "build ds: 1,000 / 3,000 images committed")]


def test_progress_counts_images_in_and_stops_at_the_total(recorder):
    progress = ShardProgress(total_images=40, done_images=0, description="ds")
    progress.add(8)
    progress.add(12)
    assert progress.done == 20 and progress.percent == 50.0
    progress.add(100)  # a rerun's skipped shards never count twice
    assert progress.done == 40 and progress.percent == 100.0
    assert recorder.updates == [("artifact-id", 20.0, "ds: 8 / 40 images committed"),
                                ("artifact-id", 50.0, "ds: 20 / 40 images committed"),
                                ("artifact-id", 100.0, "ds: 40 / 40 images committed")]


def test_progress_of_an_empty_plan_does_not_divide_by_zero(recorder):
    progress = ShardProgress(total_images=0, done_images=0, description="empty")
    assert progress.total == 1 and progress.percent == 0.0
    assert recorder.created == [(0.0, "empty: 0 / 1 images committed")]


def _status_error(code):
    request = httpx.Request("PATCH", "http://127.0.0.1:4200/api/artifacts/artifact-id")
    return httpx.HTTPStatusError(str(code), request=request, response=httpx.Response(code, request=request))


def test_a_busy_api_skips_an_update_and_the_next_one_carries_the_total(monkeypatch):
    rec = Recorder(fail=[_status_error(503), httpx.ConnectError("refused")])
    monkeypatch.setattr(artifacts, "create_progress_artifact", rec.create)
    monkeypatch.setattr(artifacts, "update_progress_artifact", rec.update)
    progress = ShardProgress(total_images=10, done_images=0, description="ds")
    progress.add(2)  # 503: skipped
    progress.add(3)  # connection refused: skipped
    progress.add(1)
    assert rec.updates == [("artifact-id", 60.0, "ds: 6 / 10 images committed")]


def test_an_update_the_api_refuses_is_an_error(monkeypatch):
    rec = Recorder(fail=[_status_error(422)])
    monkeypatch.setattr(artifacts, "create_progress_artifact", rec.create)
    monkeypatch.setattr(artifacts, "update_progress_artifact", rec.update)
    progress = ShardProgress(total_images=10, done_images=0, description="ds")
    with pytest.raises(httpx.HTTPStatusError, match="422"):
        progress.add(2)
    assert progress.done == 2  # the count itself went in


def _data_uri_png(markdown: str) -> bytes:
    match = re.search(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, markdown[:200]
    return base64.b64decode(match.group(1))


def test_png_markdown_embeds_the_exact_bytes():
    png = PNG_MAGIC + bytes(range(256))
    text = png_markdown("Accuracies", png, "linear probe, 3 seeds")
    assert text.startswith("### Accuracies\n\n![Accuracies](data:image/png;base64,")
    assert text.endswith(")\n\nlinear probe, 3 seeds\n")
    assert _data_uri_png(text) == png


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("artifacts") / "ds")
    write_example_dataset(root, n_captions=7, images_per_caption=3, captions_per_shard=3, size=32)
    return root


def test_the_dataset_card_describes_the_dataset(dataset):
    stats, manifest = dataset_stats(dataset), read_manifest(dataset)
    manifest = {**manifest, "lineage": {**manifest["lineage"], "packages": {"torch": "2.5.1", "pyarrow": "18.0"}}}
    card = dataset_card(dataset, stats, manifest, None)
    lines = card.splitlines()
    assert lines[0] == f"# Dataset card: `{dataset}`"
    assert lines[2] == (f"21 images of 7 captions in 3 Parquet shards; config hash `{stats['config_hash']}`; "
                        f"manifest written {stats['created']}.")
    request = lines[lines.index("## Request") + 4:lines.index("## Lineage") - 1]
    assert request == ["| captions_per_shard | `3` |", "| example | `True` |", "| images_per_caption | `3` |",
                       "| seed | `0` |", "| size | `32` |"]  # the manifest's config, sorted
    lineage = lines[lines.index("## Lineage") + 4:lines.index("## Packages") - 1]
    assert "| generator | `tests.helpers.datasets` |" in lineage
    assert not any(line.startswith("| packages ") for line in lineage)  # listed under Packages instead
    assert lines[lines.index("## Packages") + 2] == "pyarrow 18.0, torch 2.5.1"
    assert "data:image/png" not in card


def test_the_dataset_card_shows_the_sample_grid(dataset):
    grid = sample_grid(dataset)
    assert grid.startswith(PNG_MAGIC)
    card = dataset_card(dataset, dataset_stats(dataset), read_manifest(dataset), grid)
    assert "### Samples (one row per caption)" in card
    assert _data_uri_png(card) == grid


def test_dataset_artifacts_are_a_statistics_table_and_the_card(dataset, monkeypatch):
    made = {}
    monkeypatch.setattr(artifacts, "create_table_artifact", lambda **kw: made.setdefault("table", kw))
    monkeypatch.setattr(artifacts, "create_markdown_artifact", lambda **kw: made.setdefault("markdown", kw))
    stats, manifest = dataset_stats(dataset), read_manifest(dataset)
    artifacts.publish_dataset_artifacts(dataset, stats, manifest, None)
    totals = manifest["totals"]
    assert made["table"] == {
        "key": "dataset-stats", "description": f"Dataset statistics: {dataset}",
        "table": [{"root": dataset, "shards": 3, "captions": 7, "images": 21,
                   "megabytes": round(totals["bytes"] / 1e6, 2), "images_per_caption": "3.0",
                   "config_hash": manifest["config_hash"]}]}
    assert made["markdown"] == {"key": "dataset-card", "description": f"Dataset card: {dataset}",
                                "markdown": dataset_card(dataset, stats, manifest, None)}
