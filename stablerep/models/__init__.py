"""Encoders: timm backbones, projection heads, the open_clip text tower."""

from stablerep.models.encoder import (
    StableRepModel,
    create_model,
    create_model_for_run,
    create_tokenizer_for_run,
)
from stablerep.models.heads import build_mlp_head
from stablerep.models.text import CaptionTokenizer, create_text_tower
from stablerep.models.vision import BACKBONE_ALIASES, create_backbone

__all__ = [
    "BACKBONE_ALIASES",
    "CaptionTokenizer",
    "StableRepModel",
    "build_mlp_head",
    "create_backbone",
    "create_model",
    "create_model_for_run",
    "create_tokenizer_for_run",
    "create_text_tower",
]
