"""Accuracy as the paper reports it: plain top-1, or mean per-class top-1 (Aircraft, Caltech-101,
Flowers, Pets)."""

from __future__ import annotations

import torch


def score(pred: torch.Tensor, target: torch.Tensor, metric: str = "accuracy") -> float:
    """Top-1 accuracy of ``pred`` against ``target`` in [0, 1]; ``mean_per_class`` averages the
    accuracy of each class present in ``target``."""
    pred, target = torch.as_tensor(pred).long().cpu(), torch.as_tensor(target).long().cpu()
    if len(target) == 0:
        raise ValueError("no samples to score")
    correct = (pred == target).float()
    if metric == "accuracy":
        return float(correct.mean())
    if metric == "mean_per_class":
        classes = torch.unique(target)
        return float(torch.stack([correct[target == c].mean() for c in classes]).mean())
    raise ValueError(f"unknown metric {metric!r}: use accuracy or mean_per_class")
