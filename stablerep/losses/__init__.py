"""Contrastive losses, one per file: multi-positive (StableRep), image-text (CLIP, StableRep+),
NT-Xent (SimCLR), and cross-entropy (the supervised ceiling). ``create_loss(LossConfig)`` builds a
method's objective, called the same way for every method: ``objective(model_output, batch)``."""

from __future__ import annotations

from stablerep.losses.image_text import ClipLoss, ImageTextLoss, StableRepPlusLoss
from stablerep.losses.multipos import MultiPosConLoss, multi_positive_cross_entropy
from stablerep.losses.objectives import Objective, create_loss
from stablerep.losses.simclr import NTXentLoss
from stablerep.losses.supervised import MultiTaskCrossEntropy

__all__ = [
    "ClipLoss",
    "ImageTextLoss",
    "MultiPosConLoss",
    "MultiTaskCrossEntropy",
    "NTXentLoss",
    "Objective",
    "StableRepPlusLoss",
    "create_loss",
    "multi_positive_cross_entropy",
]
