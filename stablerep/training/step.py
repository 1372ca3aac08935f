"""One training step: forward a (captions, m, C, H, W) batch, the method's objective, backward, update."""

from __future__ import annotations

import torch
from torch import nn

from stablerep.devices import autocast
from stablerep.methods import get_method


def _flatten(images: torch.Tensor) -> tuple[torch.Tensor, int]:
    if images.ndim != 5:
        raise ValueError(f"batch images must be (captions, m, C, H, W), got shape {tuple(images.shape)}")
    return images.flatten(0, 1), images.shape[1]  # (n*m, C, H, W), m


def compute_loss(method: str, model: nn.Module, objective: nn.Module,
                 batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Forward ``batch`` through ``model`` and apply ``method``'s objective (see
    :mod:`stablerep.methods` for what each method reads and :mod:`stablerep.losses.objectives`)."""
    spec = get_method(method)
    images, _ = _flatten(batch["images"])
    tokens = batch.get("tokens")
    if spec.text and tokens is None:
        raise ValueError(f"method {method!r} needs 'tokens' in every batch")
    if spec.targets and batch.get("targets") is None:
        raise ValueError(f"method {method!r} needs 'targets' in every batch")
    out = model(images, tokens if spec.text else None)
    return objective(out, batch)


def train_step(method: str, module: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, batch: dict[str, torch.Tensor], device: torch.device,
               dtype: torch.dtype, grad_clip: float | None = None) -> dict[str, torch.Tensor]:
    """Forward under autocast, backward, optimiser step. Returns the loss dict (not synchronised)."""
    with autocast(device, dtype):
        losses = compute_loss(method, module, loss_fn, batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["loss"]).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return losses
