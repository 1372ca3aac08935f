"""Dataset flows under a real (temporary) Prefect server, on the procedural backend."""

import json

import pytest

from stablerep import storage
from stablerep.shards import read_manifest, verify_dataset
from stablerep.synthesis import procedural_captions

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _corpus(tmp_path, n):
    path = tmp_path / f"corpus{n}.txt"
    path.write_text("\n".join(procedural_captions(n, seed=3)) + "\n")
    return str(path)


def _request(root, source, n, **kw):
    from flows.dataset import DatasetRequest

    return DatasetRequest.model_validate({
        "root": root, "captions": {"source": source, "n": n, "seed": 0},
        "synthesis": {"backend": "procedural", "images_per_caption": 3, "captions_per_shard": 4,
                      "resolution": 48, "image_size": 32, "image_format": "png"},
        "shards_per_task": 2, "executor": "inline", **kw})


def _fingerprint(root):
    return [(s["index"], s["sha256"], s["rows"]) for s in read_manifest(root)["shards"]]


def _marks(root):
    return {i: storage.read_bytes(f"{root}/shards/{i:06d}.json") for i, _, _ in _fingerprint(root)}


def test_build_then_rebuild_commits_nothing_new(tmp_path):
    from flows.dataset import build_dataset

    root = str(tmp_path / "ds")
    first = build_dataset(_request(root, _corpus(tmp_path, 18), 18, concurrency=2))
    assert first["shards"] == 5 and first["shards_written"] == 5 and first["totals"]["images"] == 54
    assert verify_dataset(root, deep=True).ok
    manifest = storage.read_bytes(f"{root}/manifest.json")
    marks = _marks(root)
    again = build_dataset(_request(root, _corpus(tmp_path, 18), 18))
    assert again["shards_written"] == 0 and again["captions_added"] == 0
    assert storage.read_bytes(f"{root}/manifest.json") == manifest  # not even rewritten
    assert _marks(root) == marks


def test_regeneration_appends_new_captions_without_touching_committed_shards(tmp_path):
    from flows.dataset import build_dataset, regenerate_dataset

    root = str(tmp_path / "ds")
    build_dataset(_request(root, _corpus(tmp_path, 30), 10))
    before, marks = _fingerprint(root), _marks(root)
    result = regenerate_dataset(_request(root, _corpus(tmp_path, 30), 17))
    # the sample of 17 contains the sample of 10 (same seed): 7 new captions -> 2 new shards
    assert result["captions_added"] == 7 and result["shards_written"] == 2
    after = _fingerprint(root)
    assert after[:len(before)] == before and len(after) == len(before) + 2
    assert all(_marks(root)[i] == blob for i, blob in marks.items())
    assert read_manifest(root)["totals"]["captions"] == 17
    plan = json.loads(storage.read_bytes(f"{root}/plan.json"))
    assert plan["bounds"][:3] == [[0, 4], [4, 8], [8, 10]]  # the old partial shard stays as it was


def test_a_shard_task_that_fails_once_is_retried_and_the_dataset_is_identical(tmp_path, monkeypatch, fast_retries):
    from flows.dataset import build_dataset
    from stablerep.synthesis import worker

    clean = str(tmp_path / "clean")
    build_dataset(_request(clean, _corpus(tmp_path, 12), 12))
    real_write, calls = worker.write_shard, {"n": 0}

    def flaky_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the store fails on the second shard, once
            raise OSError("simulated store outage: connection reset")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(worker, "write_shard", flaky_write)
    flaky = str(tmp_path / "flaky")
    result = build_dataset(_request(flaky, _corpus(tmp_path, 12), 12))
    assert calls["n"] == 4  # shards 0, 1 (failed), 1 (retried), 2
    assert result["shards"] == 3 and verify_dataset(flaky, deep=True).ok
    assert _fingerprint(flaky) == _fingerprint(clean)


def test_bad_parameters_fail_before_any_work(tmp_path):
    from pydantic import ValidationError

    from flows.dataset import DatasetRequest

    with pytest.raises(ValidationError, match="images_per_caption"):
        DatasetRequest.model_validate({"root": str(tmp_path / "x"), "synthesis": {"images_per_caption": -1}})
    with pytest.raises(ValidationError, match="devices"):
        DatasetRequest.model_validate({"root": str(tmp_path / "x"), "concurrency": 2, "devices": ["cuda:0"]})
    assert not (tmp_path / "x").exists()


def test_pipeline_flow_gives_the_cli_demo_s_figures(tmp_path):
    """The pipeline flow (training in child processes, as the offline-demo deployment runs it) and
    `stablerep demo` on the same settings: the same datasets, and every figure of every seed equal."""
    import subprocess
    import sys
    from pathlib import Path

    from flows.pipeline import stablerep_pipeline
    from stablerep.experiments.demo import DemoConfig

    settings = {"captions": 32, "steps": 15, "probe_per_class": 8, "probe_test_per_class": 8,
                "captions_per_shard": 16, "methods": ["stablerep", "simclr"], "seeds": [0, 1], "images_per_step": 16}
    flow_out, cli_out = tmp_path / "pipe", tmp_path / "cli"
    summary = stablerep_pipeline(str(flow_out), DemoConfig(**settings), launcher="subprocess")
    cli = subprocess.run([str(Path(sys.executable).parent / "stablerep"), "demo", "--out", str(cli_out),
                          *[a for k, v in settings.items() for a in ("--set", f"{k}={json.dumps(v)}")]],
                         capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-2000:]
    demo = json.loads((cli_out / "summary.json").read_text())
    assert set(summary["linear_probe"]) == {"stablerep", "simclr", "supervised", "random_init"}
    for kind in ("synthetic", "real"):
        assert read_manifest(str(flow_out / kind))["shards"] == read_manifest(str(cli_out / kind))["shards"]
    saved = json.loads(storage.read_bytes(f"{flow_out}/summary.json"))
    for metric in ("linear_probe", "knn", "few_shot_5way_5shot"):
        assert saved["per_seed"][metric] == demo["per_seed"][metric], metric
        assert summary[metric] == demo[metric], metric
    assert saved["by_label"] == demo["by_label"] and (flow_out / "results.png").stat().st_size > 1000
