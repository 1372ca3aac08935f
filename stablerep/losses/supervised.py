"""Cross-entropy on class targets: the supervised ceiling of the demo's comparison."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stablerep.losses.multipos import full_precision


class MultiTaskCrossEntropy(nn.Module):
    """Mean cross-entropy over tasks. Call as ``loss_fn(logits, targets)`` with logits (N, sum(C))
    (the tasks' class scores side by side, in ``classes`` order) and integer targets (N, T).
    Returns ``{"loss", "accuracy_<task>"...}``."""

    def __init__(self, classes: dict[str, int]) -> None:
        super().__init__()
        self.classes = dict(classes)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = full_precision(logits)
        out: dict[str, torch.Tensor] = {}
        losses, start = [], 0
        for t, (name, n) in enumerate(self.classes.items()):
            part = logits[:, start:start + n]  # (N, C_t)
            losses.append(F.cross_entropy(part, targets[:, t]))
            out[f"accuracy_{name}"] = (part.argmax(1) == targets[:, t]).float().mean().detach()
            start += n
        out["loss"] = torch.stack(losses).mean()
        return out
