"""Frozen features: the backbone's CLS features of a labelled image set."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from stablerep.data.augment import build_eval_transform, normalize_
from stablerep.training.precision import autocast, resolve_dtype


def images_to_batch(images: list[Image.Image], size: int) -> torch.Tensor:
    """PIL images -> normalised float (B, 3, size, size): resize the short side, centre crop."""
    transform = build_eval_transform(size)
    batch = torch.stack([transform(TF.pil_to_tensor(im.convert("RGB"))) for im in images])
    return normalize_(batch.float().div_(255))


@torch.no_grad()
def extract_features(model: torch.nn.Module, images: Iterable[Image.Image], size: int,
                     device: torch.device | str = "cpu", batch_size: int = 128, precision: str = "auto",
                     progress: bool = False) -> torch.Tensor:
    """(N, D) float32 CLS features from ``model.encode_image`` (eval mode, no augmentation)."""
    device = torch.device(device)
    dtype = resolve_dtype(precision, device)
    was_training = model.training
    model.eval()
    feats, buffer = [], []

    def flush():
        x = images_to_batch(buffer, size).to(device)
        with autocast(device, dtype):
            feats.append(model.encode_image(x).float().cpu())
        buffer.clear()

    for img in tqdm(images, desc="features", unit="img", disable=None if progress else True):
        buffer.append(img)
        if len(buffer) == batch_size:
            flush()
    if buffer:
        flush()
    model.train(was_training)
    return torch.cat(feats) if feats else torch.empty(0)
