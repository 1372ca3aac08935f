"""The pipeline flow with a corpus request (the `stablerep-pipeline/corpus` deployment's flow) runs
the corpus experiment's plan as tasks (import, synthesis, training in child processes, the
comparison) and gives the figures of the same plan run in one process, seed for seed."""

import csv
import json

import pytest

from stablerep.experiments.corpus import CorpusExperimentConfig, run_corpus_experiment
from stablerep.shards import read_manifest
from tests.helpers.datasets import digits_images, digits_split

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _corpus_and_suite(tmp_path):
    """A CSV corpus of 64 captioned digit scans (the training split) and an image folder of the
    test split's digits (20 train / 10 test a class) to evaluate on."""
    images, labels, _ = digits_images()
    splits = digits_split(labels)
    rows, seen = [], {}
    for i, (data, label, split) in enumerate(zip(images, labels, splits, strict=True)):
        if split == "train" and len(rows) < 64:
            (tmp_path / "scans").mkdir(exist_ok=True)
            (tmp_path / "scans" / f"{i:04d}.png").write_bytes(data)
            rows.append((f"scans/{i:04d}.png", f"a handwritten {WORDS[label]}, scan number {i}"))
        elif split == "test":
            part = "train" if seen.get(label, 0) < 20 else "test"
            if seen.get(label, 0) < 30:
                seen[label] = seen.get(label, 0) + 1
                path = tmp_path / "digits" / part / str(label) / f"{i:04d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    with open(tmp_path / "corpus.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)
    return str(tmp_path / "corpus.csv"), f"imagefolder:{tmp_path / 'digits'}"


def test_pipeline_flow_runs_the_corpus_experiment_with_the_cli_s_figures(tmp_path, tiny_sd):
    from flows.pipeline import stablerep_pipeline

    source, suite = _corpus_and_suite(tmp_path)
    cfg = CorpusExperimentConfig.model_validate({
        "sources": [source], "suite": {"digits": suite}, "images_per_caption": 2, "synthesis": {"backend": "tiny"},
        "steps": 8, "images_per_step": 16, "seeds": [0, 1], "captions_per_shard": 32, "l2_values": 4,
        "few_shot_episodes": 20})
    flow_out, local_out = tmp_path / "flow", tmp_path / "local"
    summary = stablerep_pipeline(str(flow_out), corpus=cfg, launcher="subprocess")
    local = run_corpus_experiment(str(local_out), cfg, progress=False)
    saved = json.loads((flow_out / "summary.json").read_text())
    assert set(summary["linear_probe"]) == {"stablerep", "simclr", "clip", "random_init"}
    for kind in ("real", "synthetic"):
        assert read_manifest(str(flow_out / kind))["shards"] == read_manifest(str(local_out / kind))["shards"]
    assert read_manifest(str(flow_out / "real"))["totals"]["captions"] == 64
    for key in ("per_seed", "by_dataset", "differences"):
        assert saved[key] == local[key], key
    assert saved["budget"] == local["budget"] and (flow_out / "results.png").stat().st_size > 1000
