"""One method's loss on one batch: how each training method reads a (captions, m, C, H, W) batch."""

from __future__ import annotations

import torch
from torch import nn


def _flatten(images: torch.Tensor) -> tuple[torch.Tensor, int]:
    if images.ndim != 5:
        raise ValueError(f"batch images must be (captions, m, C, H, W), got shape {tuple(images.shape)}")
    return images.flatten(0, 1), images.shape[1]  # (n*m, C, H, W), m


def compute_loss(method: str, model: nn.Module, loss_fn: nn.Module,
                 batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Forward ``batch`` through ``model`` and apply ``loss_fn`` as ``method`` requires.

    - stablerep: every image of a caption is a positive of every other (multi-positive loss).
    - simclr: m = 2 views of one image; NT-Xent between the two.
    - clip: m = 1 image per caption against its caption's tokens.
    - stablerep_plus: multi-positive loss plus the image-text loss with m images per text.
    """
    images, m = _flatten(batch["images"])
    labels = batch["labels"]  # (n,)
    image_labels = labels.repeat_interleave(m)  # (n*m,)
    tokens = batch.get("tokens")
    if method in ("clip", "stablerep_plus") and tokens is None:
        raise ValueError(f"method {method!r} needs 'tokens' in every batch")
    out = model(images, tokens if method in ("clip", "stablerep_plus") else None)
    if method == "stablerep":
        return loss_fn(out["features"], image_labels)
    if method == "simclr":
        if m != 2:
            raise ValueError(f"simclr needs 2 views per image, got m={m}")
        z = out["features"].view(-1, 2, out["features"].shape[-1])  # (n, 2, d)
        return loss_fn(z[:, 0], z[:, 1])
    if method == "clip":
        return loss_fn(out["image_embed"], image_labels, out["text_embed"], labels, out["logit_scale"])
    if method == "stablerep_plus":
        return loss_fn(out["features"], out["image_embed"], image_labels, out["text_embed"], labels,
                       out["logit_scale"])
    raise ValueError(f"unknown method {method!r}")


def train_step(method: str, module: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, batch: dict[str, torch.Tensor], device: torch.device,
               dtype: torch.dtype, grad_clip: float | None = None) -> dict[str, torch.Tensor]:
    """Forward under autocast, backward, optimiser step. Returns the loss dict (not synchronised)."""
    from stablerep.training.precision import autocast

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
