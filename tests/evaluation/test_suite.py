import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stablerep.config import load_config
from stablerep.data import RandomCaptionBatches
from stablerep.evaluation.suite import evaluate_encoder, load_encoder, probe_split
from stablerep.training import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run = load_config("tiny_cpu", ["train.steps=2", "optim.warmup_steps=0"])
    train(run, RandomCaptionBatches(16, 4, 32), str(out), progress=False)
    return out


def test_probe_split_uses_separate_seed_streams():
    data = probe_split(4, 32)
    assert len(data["train_images"]) == 32 and len(data["test_images"]) == 16
    assert data["train_labels"].tolist()[:4] == [0, 0, 0, 0]
    assert data["train_images"][0].tobytes() != data["test_images"][0].tobytes()


def test_evaluate_trained_and_random_init(run_dir):
    trained, cfg = load_encoder(str(run_dir))
    floor, _ = load_encoder(str(run_dir), random_init=True)
    assert not torch.equal(trained.backbone.pos_embed, floor.backbone.pos_embed)
    data = probe_split(8, cfg.data.image_size)
    result = evaluate_encoder(trained, data, cfg.data.image_size, l2_grid=[1e-2, 1.0], few_shot_episodes=5)
    for key in ("linear_probe", "knn", "few_shot_5way_5shot"):
        assert 0.0 <= result[key] <= 1.0
    assert result["train_images"] == 64 and result["test_images"] == 32


def test_evaluate_cli(run_dir, tmp_path):
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "stablerep", "evaluate", "--run", str(run_dir), "--per-class", "8",
                           "--l2-values", "3", "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert set(results) == {run_dir.name, "random_init"}
    assert "| encoder | linear probe | kNN | 5-way 5-shot |" in proc.stderr
    missing = subprocess.run([sys.executable, "-m", "stablerep", "evaluate", "--run", str(tmp_path / "nope")],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert missing.returncode == 2 and "no training run at" in missing.stderr
