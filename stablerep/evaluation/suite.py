"""The evaluation suite: linear probe, kNN and few-shot of one encoder on one labelled set."""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from stablerep import storage
from stablerep.config import RunConfig
from stablerep.evaluation.features import extract_features
from stablerep.evaluation.few_shot import few_shot
from stablerep.evaluation.knn import knn_accuracy
from stablerep.evaluation.linear_probe import lbfgs_probe
from stablerep.models import StableRepModel, create_model_for_run
from stablerep.training.checkpoint import latest_checkpoint, load_model_weights


def load_encoder(run_dir: str, random_init: bool = False) -> tuple[StableRepModel, RunConfig]:
    """The model of a training run from its config.json and newest checkpoint (or, with
    ``random_init``, the same architecture untrained: the floor every method must beat)."""
    config_url = storage.join(run_dir, "config.json")
    if not storage.exists(config_url):
        raise FileNotFoundError(f"no training run at {run_dir}: {config_url} does not exist")
    run = RunConfig.model_validate(json.loads(storage.read_bytes(config_url)))
    torch.manual_seed(run.train.seed)
    model = create_model_for_run(run)
    if not random_init:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"no checkpoint under {run_dir}/checkpoints")
        load_model_weights(ckpt, model)
    return model.eval(), run


def probe_split(per_class: int, size: int, label: str = "shape", seed: int = 1) -> dict[str, Any]:
    """Train and test halves of the procedural probe set, from separate seed streams."""
    from stablerep.synthesis.procedural import probe_set

    train = probe_set(per_class, seed=seed, size=size, label=label)
    test = probe_set(max(1, per_class // 2), seed=seed + 10_000, size=size, label=label)
    return {"train_images": [r["image"] for r in train], "train_labels": torch.tensor([r["label"] for r in train]),
            "test_images": [r["image"] for r in test], "test_labels": torch.tensor([r["label"] for r in test])}


def evaluate_encoder(model: torch.nn.Module, data: dict[str, Any], size: int, *, device: str = "cpu",
                     l2_grid: list[float] | None = None, knn_k: int = 20, few_shot_episodes: int = 100,
                     seed: int = 0) -> dict[str, Any]:
    """Accuracies in [0, 1]: L-BFGS linear probe, kNN, and 5-way 5-shot episodes (on test)."""
    t0 = time.perf_counter()
    train = extract_features(model, data["train_images"], size, device)
    test = extract_features(model, data["test_images"], size, device)
    t1 = time.perf_counter()
    probe = lbfgs_probe(train, data["train_labels"], test, data["test_labels"], l2_grid=l2_grid, seed=seed)
    knn = knn_accuracy(train, data["train_labels"], test, data["test_labels"], k=knn_k)
    shots = few_shot(torch.cat([train, test]), torch.cat([data["train_labels"], data["test_labels"]]),
                     n_way=5, k_shot=5, queries=5, episodes=few_shot_episodes, seed=seed)
    return {"linear_probe": probe.accuracy, "linear_probe_l2": probe.best, "knn": knn,
            "few_shot_5way_5shot": shots.accuracy, "few_shot_ci95": shots.ci95,
            "train_images": len(train), "test_images": len(test),
            "seconds": {"features": t1 - t0, "probes": time.perf_counter() - t1}}
