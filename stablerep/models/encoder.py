"""The encoder trained by every method: backbone, projection heads and optional text tower."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from stablerep.config import ModelConfig
from stablerep.methods import get_method
from stablerep.models.heads import build_mlp_head
from stablerep.models.text import create_text_tower
from stablerep.models.vision import create_backbone
from stablerep.tokenizer import CaptionTokenizer


class StableRepModel(nn.Module):
    """Backbone + optional MLP head (multi-positive / SimCLR features) + optional image-text parts.

    - ``encode_image(x)``: frozen-feature view, the backbone's pooled CLS features (B, D).
    - ``forward(images, tokens=None)``: a dict with ``features`` (B, head_out_dim) when there is a
      head, and ``image_embed`` (B, E), ``text_embed`` (T, E), ``logit_scale`` when there is a
      text tower. The backbone runs once per call.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None,
                 text: nn.Module | None = None, embed_dim: int = 512,
                 init_logit_scale: float = math.log(1 / 0.07)) -> None:
        super().__init__()
        if head is None and text is None:
            raise ValueError("a model needs a projection head, a text tower, or both")
        self.backbone = backbone
        self.head = head
        self.text = text
        if text is not None:
            self.image_proj = nn.Linear(backbone.num_features, embed_dim, bias=False)
            self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        else:
            self.image_proj = None
            self.logit_scale = None

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)  # (B, D)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.text is None:
            raise RuntimeError("this model has no text tower")
        return self.text(tokens)  # (T, E)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor | None = None) -> dict[str, Any]:
        h = self.backbone(images)  # (B, D)
        out: dict[str, Any] = {}
        if self.head is not None:
            out["features"] = self.head(h)  # (B, head_out_dim)
        if self.text is not None:
            out["image_embed"] = self.image_proj(h)  # (B, E)
            out["logit_scale"] = self.logit_scale
            if tokens is not None:
                out["text_embed"] = self.text(tokens)  # (T, E)
        return out


def create_model(config: ModelConfig | str | None = None, *, head: bool = True,
                 init_logit_scale: float = math.log(1 / 0.07), **overrides: Any) -> StableRepModel:
    """Build a StableRep encoder.

    ``create_model("vit_base_patch16_224")`` gives a ViT-B/16 with the paper's 3-layer head
    (768 -> 4096 -> 4096 -> 256). Pass a :class:`ModelConfig`, or a backbone name plus any
    ModelConfig field as keyword (``img_size=32``, ``text={...}``). ``head=False`` drops the MLP head
    (the CLIP baseline); a ``text`` config adds the text tower and image projection (StableRep+, CLIP).
    """
    if config is None or isinstance(config, str):
        fields = dict(overrides)
        if isinstance(config, str):
            fields["backbone"] = config
        config = ModelConfig.model_validate(fields)
    elif overrides:
        config = config.model_copy(update=overrides)
    backbone = create_backbone(config.backbone, config.img_size, **config.backbone_kwargs)
    mlp = (build_mlp_head(backbone.num_features, config.head_hidden_dim, config.head_out_dim,
                          config.head_layers) if head else None)
    text = None
    if config.text is not None:
        t = config.text
        text = create_text_tower(t.width, t.layers, t.heads, t.context_length, t.vocab_size,
                                 output_dim=config.embed_dim)
    return StableRepModel(backbone, mlp, text, config.embed_dim, init_logit_scale)


def create_model_for_run(run, target_classes: Mapping[str, int] | None = None) -> StableRepModel:
    """The model a :class:`stablerep.config.RunConfig` trains: CLIP has no MLP head; the supervised
    method's head ends in the class scores of its targets (side by side), ``target_classes[t]``
    scores for each target ``t`` (the caller knows the label space, e.g.
    :class:`stablerep.world.CaptionTargets`)."""
    spec = get_method(run.loss.method)
    config = run.model
    if spec.targets:
        if target_classes is None:
            raise ValueError(f"method {run.loss.method!r} needs target_classes (the class count of each target)")
        config = config.model_copy(update={"head_out_dim": sum(target_classes[t] for t in run.loss.targets)})
    return create_model(config, head=spec.head, init_logit_scale=run.loss.init_logit_scale)


def create_tokenizer_for_run(run) -> CaptionTokenizer | None:
    """The caption tokenizer the run's text tower reads (None for methods that read no text): what
    the caller hands to the data loader (:func:`stablerep.data.shards.build_shard_batches`)."""
    if not get_method(run.loss.method).text:
        return None
    return CaptionTokenizer(run.model.text.context_length)
