"""Contrastive losses, one per file: multi-positive (StableRep), image-text (CLIP, StableRep+),
NT-Xent (SimCLR). ``create_loss(LossConfig)`` builds the one a training method needs."""

from __future__ import annotations

from stablerep.losses.image_text import ClipLoss, ImageTextLoss, StableRepPlusLoss
from stablerep.losses.multipos import MultiPosConLoss, multi_positive_cross_entropy
from stablerep.losses.simclr import NTXentLoss

__all__ = [
    "ClipLoss",
    "ImageTextLoss",
    "MultiPosConLoss",
    "NTXentLoss",
    "StableRepPlusLoss",
    "create_loss",
    "multi_positive_cross_entropy",
]


def create_loss(cfg):
    """The loss module for ``cfg.method`` (a :class:`stablerep.config.LossConfig`)."""
    if cfg.method == "stablerep":
        return MultiPosConLoss(cfg.temperature)
    if cfg.method == "simclr":
        return NTXentLoss(cfg.temperature)
    if cfg.method == "clip":
        return ClipLoss(cfg.max_logit_scale)
    if cfg.method == "stablerep_plus":
        return StableRepPlusLoss(cfg.temperature, cfg.text_weight, cfg.max_logit_scale)
    raise ValueError(f"unknown loss method {cfg.method!r}")
