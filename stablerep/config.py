"""Pydantic configuration for every stage; YAML presets ship in the package (``stablerep/presets/``).

A run's *resolved* config (defaults filled in, overrides applied, derived values such as the
learning rate computed) is written next to its outputs so the run can be reproduced.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stablerep.methods import get_method

Method = Literal["stablerep", "stablerep_plus", "simclr", "clip", "supervised"]
Attribute = Literal["shape", "colour"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

# Package data: installed with the library, so a preset name works wherever stablerep is installed.
PRESET_DIR = Path(__file__).resolve().parent / "presets"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TextConfig(_Strict):
    """Text tower (StableRep+ and CLIP): an open_clip text transformer with the CLIP BPE tokenizer."""

    width: int = Field(512, gt=0)
    layers: int = Field(12, gt=0)
    heads: int = Field(8, gt=0)
    context_length: int = Field(77, gt=1)
    vocab_size: int = Field(49408, gt=0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TextConfig:
        if self.width % self.heads:
            raise ValueError(f"text.width ({self.width}) must be divisible by text.heads ({self.heads})")
        return self


class ModelConfig(_Strict):
    """Vision backbone (a timm model name or a preset alias such as ``vit_tiny_cpu``) and heads."""

    backbone: str = "vit_base_patch16_224"
    img_size: int = Field(224, gt=0)
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    head_hidden_dim: int = Field(4096, gt=0)
    head_out_dim: int = Field(256, gt=0)
    head_layers: int = Field(3, ge=1)
    embed_dim: int = Field(512, gt=0, description="joint image-text space (StableRep+, CLIP)")
    text: TextConfig | None = None


class LossConfig(_Strict):
    method: Method = "stablerep"
    temperature: float = Field(0.1, gt=0)
    text_weight: float = Field(0.5, ge=0, description="StableRep+: weight of (L_i2t + L_t2i)")
    init_logit_scale: float = Field(math.log(1 / 0.07))
    max_logit_scale: float = Field(math.log(100), gt=0)
    targets: list[Attribute] = Field(default_factory=lambda: ["shape", "colour"],
                                     description="supervised: the caption attributes to classify")


class AugmentConfig(_Strict):
    """The paper's augmentations; each of the m images of a caption gets its own draw."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    color_jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale_p: float = Field(0.2, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = Field(0.5, ge=0, le=1)
    hflip: bool = True
    downsample_p: float = Field(0.0, ge=0, le=1, description="paper's optional: 0.05")
    downsample_sizes: tuple[int, ...] = (64, 128)

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"augment.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"augment.blur_sigma must satisfy 0 < lo <= hi, got {self.blur_sigma}")
        return self


class DataConfig(_Strict):
    images_per_caption: int = Field(6, ge=1, description="m: images of one caption in a batch")
    captions_per_batch: int = Field(1376, ge=1, description="global, across all ranks")
    image_size: int = Field(224, gt=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    num_workers: int = Field(0, ge=0)

    @property
    def images_per_batch(self) -> int:
        return self.images_per_caption * self.captions_per_batch


class OptimConfig(_Strict):
    """AdamW; ``lr`` is derived as ``base_lr * images_per_batch / 256`` unless given."""

    base_lr: float = Field(2e-4, gt=0)
    lr: float | None = Field(None, gt=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(None, gt=0, description="the paper uses none")


class TrainConfig(_Strict):
    steps: int = Field(..., ge=1, description="optimiser steps in the whole run")
    seed: int = 0
    device: str = "auto"
    precision: Precision = "auto"
    compile: bool = Field(False, description="torch.compile the model (GPU runs)")
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(0, ge=0, description="0: only at the end")
    keep_checkpoints: int = Field(2, ge=1)


class RunConfig(_Strict):
    """Everything a training run needs. ``resolve()`` fills derived values."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        spec = get_method(self.loss.method)
        if spec.text and self.model.text is None:
            raise ValueError(f"loss.method={self.loss.method!r} needs a text tower: set model.text")
        if spec.views is not None and self.data.images_per_caption != spec.views:
            what = {1: "one image per caption", 2: "two views per image"}.get(spec.views, f"{spec.views} views")
            raise ValueError(f"loss.method={self.loss.method!r} takes {what}: set "
                             f"data.images_per_caption={spec.views}")
        if spec.targets and not self.loss.targets:
            raise ValueError(f"loss.method={self.loss.method!r} needs loss.targets (attributes to classify)")
        if self.optim.warmup_steps >= self.train.steps and self.train.steps > 1:
            raise ValueError(
                f"optim.warmup_steps ({self.optim.warmup_steps}) must be below train.steps ({self.train.steps})"
            )
        if self.data.image_size != self.model.img_size:
            raise ValueError(
                f"data.image_size ({self.data.image_size}) differs from model.img_size ({self.model.img_size})"
            )
        return self

    @property
    def lr(self) -> float:
        if self.optim.lr is not None:
            return self.optim.lr
        return self.optim.base_lr * self.data.images_per_batch / 256

    def resolved(self) -> dict[str, Any]:
        """The config as saved next to a run's outputs: every default written out, lr computed."""
        out = self.model_dump(mode="json")
        out["optim"]["lr"] = self.lr
        return out


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ValueError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.steps=10", "model.text=null"]`` -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def preset_path(name_or_path: str | Path) -> Path:
    """A preset name (``tiny_cpu``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no preset {str(name_or_path)!r}; known presets: {', '.join(known)}")
    return candidate


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a preset or YAML file, apply ``key=value`` overrides, and validate."""
    path = preset_path(name_or_path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    tree = _merge(_resolve_base(tree, path, ()), parse_overrides(overrides or []))
    return RunConfig.model_validate(tree)


def _resolve_base(tree: dict[str, Any], path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A preset may start from another (``base: vit_b16_paper``) and change only what differs."""
    base = tree.pop("base", None)
    if base is None:
        return tree
    base_path = preset_path(base)
    if base_path in (*seen, path):
        raise ValueError(f"{path}: preset base cycle through {base_path}")
    parent = yaml.safe_load(base_path.read_text(encoding="utf-8")) or {}
    return _merge(_resolve_base(parent, base_path, (*seen, path)), tree)


Backend = Literal["diffusers", "tiny", "procedural"]
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


class SynthesisConfig(_Strict):
    """A synthetic-dataset request. Fields that change the images (or the shard plan) enter the
    dataset's config hash; batch size, device, compile and fuse_qkv do not (they never change an
    image beyond the rounding noise of the device's arithmetic)."""

    backend: Backend = "procedural"
    model: str = Field(SD15, description="diffusers model id or local path (backend=diffusers)")
    revision: str | None = None
    allow_download: bool = Field(False, description="let diffusers fetch a missing model")
    images_per_caption: int = Field(10, ge=1, le=1000)
    seed: int = 0
    captions_per_shard: int = Field(100, ge=1)
    steps: int | None = Field(None, ge=1, le=1000,
                              description="sampler steps; None: the backend's own (diffusers 50, tiny 4)")
    guidance: float | None = Field(None, ge=0, description="classifier-free guidance; None: the model's "
                                   "recommendation if it saved one, else the paper's 2.0")
    scheduler: Literal["ddim", "dpm", "euler", "pndm"] = "ddim"
    eta: float = Field(0.0, ge=0, le=1)
    resolution: int | None = Field(None, gt=0, description="generation size (px); None: the backend's own "
                                   "(diffusers: unet sample size x VAE scale factor, 512 for SD v1.5)")
    negative_prompt: str | None = None
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    safety_checker: bool = False
    image_size: int = Field(256, gt=0, description="stored size: shorter side, antialiased")
    image_format: Literal["jpeg", "webp", "png"] = "jpeg"
    quality: int = Field(95, ge=1, le=100)
    batch_size: int = Field(8, ge=1, description="images per backend call")
    device: str = "auto"
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the UNet and VAE decoder (static batch); auto: on CUDA only")
    fuse_qkv: bool | Literal["auto"] = Field(
        "auto", description="fused attention QKV projections; auto: on CUDA only")

    @model_validator(mode="after")
    def _sizes(self) -> SynthesisConfig:
        if self.backend != "procedural" and self.resolution is not None and self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8 for diffusion models, got {self.resolution}")
        return self

    def native_fields(self) -> tuple[str, ...]:
        """The fields that None leaves to the backend (procedural has no steps or guidance)."""
        return ("resolution",) if self.backend == "procedural" else ("resolution", "steps", "guidance")

    def hashed(self) -> dict[str, Any]:
        """The fields that define the dataset (for its config hash and manifest). Unset backend
        settings must be resolved first (stablerep.synthesis.resolve_native_defaults), so that the
        hash records the values the images were made with."""
        unset = [k for k in self.native_fields() if getattr(self, k) is None]
        if unset:
            raise ValueError(f"synthesis config: {', '.join(unset)} not resolved to the backend's own; "
                             "call stablerep.synthesis.resolve_native_defaults first")
        out = self.model_dump(mode="json", exclude={"batch_size", "device", "allow_download", "compile", "fuse_qkv"})
        if self.backend == "procedural":
            for key in ("model", "revision", "steps", "guidance", "scheduler", "eta", "negative_prompt",
                        "dtype", "safety_checker"):
                out.pop(key)
        return out
