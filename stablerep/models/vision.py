"""Vision backbones from timm, built from scratch (StableRep trains without pretrained weights)."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

# Aliases for small architectures that train on a CPU. Values: (timm architecture, its kwargs).
BACKBONE_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "vit_tiny_cpu": (
        "vit_tiny_patch16_224",
        {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0},
    ),
    "vit_small_cpu": (
        "vit_small_patch16_224",
        {"patch_size": 8, "embed_dim": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0},
    ),
    # a small ResNet (one block a stage, 32-96 channels, 0.5M parameters): the demo's backbone at
    # 32 px, where it learns the procedural world's shapes from few steps (a tiny ViT did not)
    "resnet_tiny_cpu": (
        "resnet18",
        {"layers": [1, 1, 1, 1], "channels": [32, 48, 64, 96], "stem_width": 16, "stem_type": "deep",
         "avg_down": True},
    ),
}


def create_backbone(name: str, img_size: int = 224, **kwargs: Any) -> nn.Module:
    """A timm model with its classifier removed: ``forward(x)`` gives pooled (CLS) features (B, D).

    ``name`` is any timm architecture (``vit_small_patch16_224``, ``vit_base_patch16_224``,
    ``vit_large_patch16_224``...) or an alias from :data:`BACKBONE_ALIASES`. ``kwargs`` override
    the architecture's arguments. The model's width is ``backbone.num_features``.
    """
    arch, preset = BACKBONE_ALIASES.get(name, (name, {}))
    if arch not in timm.list_models():
        raise ValueError(
            f"unknown backbone {name!r}: not a timm architecture nor one of {sorted(BACKBONE_ALIASES)}"
        )
    args = {**preset, **kwargs}
    try:
        try:  # ViTs are built for their input size
            return timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size, **args)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            return timm.create_model(arch, pretrained=False, num_classes=0, **args)  # convolutional: any size
    except TypeError as exc:  # e.g. a kwarg the architecture does not take
        raise ValueError(f"backbone {name!r} rejected its arguments {args}: {exc}") from None
