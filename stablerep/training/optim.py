"""AdamW with the paper's parameter groups, and the per-iteration warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and no decay for biases, norms, 1-D parameters, scalars and
    what the backbone lists in ``no_weight_decay()`` (ViT position embedding and CLS token)."""
    skip: set[str] = set()
    for prefix, module in model.named_modules():
        if hasattr(module, "no_weight_decay") and callable(module.no_weight_decay):
            skip |= {f"{prefix}.{n}" if prefix else n for n in module.no_weight_decay()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        clean = name.removeprefix("module.")
        if p.ndim <= 1 or clean.endswith(".bias") or clean in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                    betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-8) -> torch.optim.AdamW:
    fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                             fused=fused or None)


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """Learning rate for 0-indexed ``step``: linear warmup to ``base_lr`` over ``warmup_steps``
    (the first step already gets base_lr / warmup_steps), then cosine down to ``min_lr`` at the
    last step."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
