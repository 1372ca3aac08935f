"""StableRep's multi-positive contrastive loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stablerep.distributed import gather_no_grad, gather_with_grad

SELF_MASK_VALUE = 1e9  # subtracted from the self logit, as in the official implementation


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """Losses run in fp32 (or fp64 when given it), even under autocast."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def multi_positive_cross_entropy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of H(p, softmax(logits)), with p the row-normalised positive mask.

    logits (N, M); positives (N, M) in {0, 1}. A row with no positive contributes 0 (the count is
    clamped to 1) but still counts in the mean, as in the paper's code.
    """
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # stabilise
    p = positives / positives.sum(dim=1, keepdim=True).clamp(min=1)
    log_q = F.log_softmax(logits, dim=1)
    return -(p * log_q).sum(dim=1).mean()


class MultiPosConLoss(nn.Module):
    """Multi-positive contrastive loss (StableRep, arXiv 2306.00984).

    Call as ``loss_fn(features, labels)`` with features (N, D) (L2-normalised inside) and integer
    caption labels (N,): every other sample with the same label is a positive. The positive mask
    is rebuilt from the labels on every call, so labels may be arbitrary ids (hashes), not
    positions. Under an initialised torch.distributed group, features are gathered from all ranks
    with gradients and labels without, so each local anchor is contrasted with the global batch;
    the rank losses then average to the loss of the concatenated batch.

    Returns ``{"loss": scalar}``.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if features.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
        if labels.shape != features.shape[:1]:
            raise ValueError(f"labels must be (N,)={features.shape[0]}, got shape {tuple(labels.shape)}")
        feats = F.normalize(full_precision(features), dim=-1)  # (N, D)
        all_feats, offset = gather_with_grad(feats)  # (G, D)
        all_labels = gather_no_grad(labels)  # (G,)
        n = feats.shape[0]

        logits = feats @ all_feats.T / self.temperature  # (N, G)
        self_mask = torch.zeros_like(logits, dtype=torch.bool)
        idx = torch.arange(n, device=logits.device)
        self_mask[idx, idx + offset] = True
        logits = logits - self_mask.to(logits.dtype) * SELF_MASK_VALUE

        positives = (labels[:, None] == all_labels[None, :]) & ~self_mask  # (N, G)
        loss = multi_positive_cross_entropy(logits, positives.to(logits.dtype))
        return {"loss": loss}
