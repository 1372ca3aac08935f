"""SimCLR's NT-Xent loss for two views per image (the real-image baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stablerep.distributed import gather_with_grad
from stablerep.losses.multipos import full_precision


class NTXentLoss(nn.Module):
    """NT-Xent (SimCLR). Call as ``loss_fn(z1, z2)`` with the two views' features (N, D).

    For each of the 2N views the positive is the other view of the same image and the negatives
    are the other 2N - 2 views of the (global) batch. Written in the classic index-target form,
    independently of :class:`MultiPosConLoss` (which reduces to this with 2 images per label).
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
        if z1.shape != z2.shape or z1.ndim != 2:
            raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
        z1 = F.normalize(full_precision(z1), dim=-1)
        z2 = F.normalize(full_precision(z2), dim=-1)
        g1, offset = gather_with_grad(z1)  # (G, D)
        g2, _ = gather_with_grad(z2)
        n, g = z1.shape[0], g1.shape[0]
        keys = torch.cat([g1, g2])  # (2G, D)
        idx = torch.arange(n, device=z1.device) + offset
        losses = []
        for anchors, own, partner in ((z1, idx, idx + g), (z2, idx + g, idx)):
            logits = anchors @ keys.T / self.temperature  # (N, 2G)
            logits[torch.arange(n), own] = float("-inf")  # drop self
            losses.append(F.cross_entropy(logits, partner))
        return {"loss": (losses[0] + losses[1]) / 2}
