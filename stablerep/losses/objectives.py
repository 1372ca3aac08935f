"""Each method's objective on (model output, batch), so the training step calls every method the
same way. The batch holds ``images`` (captions, m, C, H, W), ``labels`` (captions,) caption ids,
and ``tokens`` (text methods) or ``targets`` (captions, tasks) (supervised); the model output holds
``features`` (captions * m, D) from the head, and ``image_embed`` / ``text_embed`` / ``logit_scale``
when there is a text tower."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from stablerep.losses.image_text import ClipLoss, StableRepPlusLoss
from stablerep.losses.multipos import MultiPosConLoss
from stablerep.losses.simclr import NTXentLoss
from stablerep.losses.supervised import MultiTaskCrossEntropy
from stablerep.methods import get_method


class Objective(nn.Module):
    """``objective(out, batch) -> {"loss": scalar, ...}`` around one loss module."""

    def __init__(self, method: str, loss: nn.Module) -> None:
        super().__init__()
        self.method, self.loss = method, loss

    def forward(self, out: dict[str, Any], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]  # (n,)
        m = batch["images"].shape[1]
        image_labels = labels.repeat_interleave(m)  # (n*m,)
        if self.method == "stablerep":
            return self.loss(out["features"], image_labels)
        if self.method == "simclr":
            if m != 2:
                raise ValueError(f"simclr needs 2 views per image, got m={m}")
            z = out["features"].view(-1, 2, out["features"].shape[-1])  # (n, 2, d)
            return self.loss(z[:, 0], z[:, 1])
        if self.method == "clip":
            return self.loss(out["image_embed"], image_labels, out["text_embed"], labels, out["logit_scale"])
        if self.method == "stablerep_plus":
            return self.loss(out["features"], out["image_embed"], image_labels, out["text_embed"], labels,
                             out["logit_scale"])
        return self.loss(out["features"], batch["targets"].repeat_interleave(m, dim=0))  # supervised


def create_loss(cfg, target_classes: Mapping[str, int] | None = None) -> Objective:
    """The objective of ``cfg.method`` (a :class:`stablerep.config.LossConfig`); the supervised one
    takes ``target_classes``, the class count of each of ``cfg.targets``."""
    losses = {
        "stablerep": lambda: MultiPosConLoss(cfg.temperature),
        "simclr": lambda: NTXentLoss(cfg.temperature),
        "clip": lambda: ClipLoss(cfg.max_logit_scale),
        "stablerep_plus": lambda: StableRepPlusLoss(cfg.temperature, cfg.text_weight, cfg.max_logit_scale),
        "supervised": lambda: MultiTaskCrossEntropy({t: target_classes[t] for t in cfg.targets}),
    }
    if cfg.method not in losses:
        raise ValueError(f"unknown loss method {cfg.method!r}")
    if get_method(cfg.method).targets and target_classes is None:
        raise ValueError(f"method {cfg.method!r} needs target_classes (the class count of each target)")
    return Objective(cfg.method, losses[cfg.method]())
