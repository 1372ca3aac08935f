"""The evaluation transform: resize the short side, centre-crop, normalise. No augmentation."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from stablerep.data.augment import normalize_

INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
                  "nearest": InterpolationMode.NEAREST, "lanczos": InterpolationMode.LANCZOS}


@dataclass(frozen=True)
class EvalTransform:
    """``resize`` the short side (antialiased), centre-crop ``size``; then (x / 255 - mean) / std.

    ``resize = size / crop_pct`` (timm's convention); ``resize == size`` keeps the whole image.
    """

    size: int
    resize: int
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r}: use one of {', '.join(INTERPOLATIONS)}")

    def key(self) -> dict:
        out = asdict(self)
        out["mean"], out["std"] = [round(v, 6) for v in self.mean], [round(v, 6) for v in self.std]
        return out

    def geometric(self) -> nn.Module:
        """uint8 (3, H, W) -> uint8 (3, size, size); runs in the loader workers."""
        return T.Compose([T.Resize(self.resize, interpolation=INTERPOLATIONS[self.interpolation], antialias=True),
                          T.CenterCrop(self.size)])

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> float (B, 3, S, S) on the batch's device."""
        return normalize_(batch.float().div_(255), self.mean, self.std)
