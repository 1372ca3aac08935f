"""Encoders to evaluate, named by a spec string:

- ``RUN_DIR``: a training run (its config.json and newest checkpoint), local or fsspec URL;
- ``random:RUN_DIR``: the same architecture untrained, from the run's seed (the floor);
- ``timm:MODEL[:WEIGHTS]``: a timm model through timm's own create_model, with weights from a local
  file (.safetensors, .pth, .bin), or from the Hugging Face cache when no file is named;
- ``open_clip:ARCH:WEIGHTS``: an open_clip model from a local weights file; ARCH may also be a
  model-config JSON file (registered with open_clip first).

Every encoder gives frozen features (``features``: CLS / pooled, what the linear probe, kNN and
few-shot read) and, when it has a text tower, image embeddings (``embed``) in the joint space with a text
side for zero-shot. Its ``identity`` (a sha256 of the weights and architecture) keys the feature cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stablerep import storage
from stablerep.checkpoint import (
    latest_checkpoint,
    load_model_weights,
    read_checkpoint_meta,
)
from stablerep.config import RunConfig
from stablerep.data.augment import IMAGENET_MEAN, IMAGENET_STD
from stablerep.errors import CheckpointError, EncoderError
from stablerep.evaluation.transforms import EvalTransform
from stablerep.models import CaptionTokenizer, create_model_for_run
from stablerep.world import run_targets


@dataclass
class TextSide:
    """What zero-shot needs: tokenize class prompts and embed them in the image embed space."""

    tokenize: Callable[[list[str]], torch.Tensor]
    encode: Callable[[torch.Tensor], torch.Tensor]  # tokens (T, L) -> (T, E)


@dataclass
class Encoder:
    name: str
    spec: str
    model: nn.Module  # forward(images) -> {"features": (B, D), "embed": (B, E) when there is a text side}
    transform: EvalTransform
    identity: str
    text: TextSide | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "identity": self.identity, "transform": self.transform.key(),
                "zero_shot": self.text is not None, **self.info}


class RunEncoder(nn.Module):
    """A StableRep model's frozen views: backbone CLS features, and the image-text embedding."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.model.backbone(images)  # (B, D)
        out = {"features": h}
        if self.model.image_proj is not None:
            out["embed"] = self.model.image_proj(h)  # (B, E)
        return out


class TimmEncoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": self.model(images)}  # (B, D): pooled features, classifier removed


class OpenClipEncoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.model.encode_image(images)  # (B, E): CLIP's image embedding, as CLIP_benchmark probes it
        return {"features": z, "embed": z}


def _sha256_file(url: str) -> str:
    h = hashlib.sha256()
    fs, path = storage.get_fs(url)
    with fs.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def load_run(run_dir: str, random_init: bool = False) -> tuple[nn.Module, RunConfig, str]:
    """(model, config, identity) of a training run: its newest checkpoint, or with ``random_init``
    the same architecture untrained from the run's seed."""
    config_url = storage.join(run_dir, "config.json")
    if not storage.exists(config_url):
        raise EncoderError(f"no training run at {run_dir}: {config_url} does not exist")
    try:
        run = RunConfig.model_validate(json.loads(storage.read_bytes(config_url)))
    except ValueError as exc:
        raise EncoderError(f"{config_url}: not a valid run config ({str(exc).splitlines()[0]})") from None
    torch.manual_seed(run.train.seed)
    targets = run_targets(run)
    model = create_model_for_run(run, targets.classes if targets else None)
    if random_init:
        arch = json.dumps({"model": run.model.model_dump(mode="json"), "method": run.loss.method,
                           "seed": run.train.seed}, sort_keys=True)
        return model.eval(), run, "random:" + hashlib.sha256(arch.encode()).hexdigest()
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise EncoderError(f"no checkpoint under {run_dir}/checkpoints")
    load_model_weights(ckpt, model)
    return model.eval(), run, "run:" + read_checkpoint_meta(ckpt)["sha256"]


def _run_encoder(name: str, spec: str, run_dir: str, random_init: bool) -> Encoder:
    model, run, identity = load_run(run_dir, random_init)
    size = run.data.image_size
    text = None
    if model.text is not None:
        tokenizer = CaptionTokenizer(run.model.text.context_length)
        text = TextSide(tokenizer, model.encode_text)
    transform = EvalTransform(size=size, resize=size, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return Encoder(name, spec, RunEncoder(model).eval(), transform, identity, text,
                   {"kind": "random_init" if random_init else "run", "method": run.loss.method,
                    "backbone": run.model.backbone, "steps": run.train.steps})


def _timm_encoder(name: str, spec: str, rest: str) -> Encoder:
    import timm
    from timm.data import resolve_data_config

    arch, _, weights = rest.partition(":")
    if arch not in timm.list_models():
        raise EncoderError(f"encoder {spec!r}: {arch!r} is not a timm architecture")
    try:
        if weights:
            if not storage.exists(weights):
                raise EncoderError(f"encoder {spec!r}: weights file {weights} does not exist")
            model = timm.create_model(arch, pretrained=True, num_classes=0,
                                      pretrained_cfg_overlay={"file": weights, "hf_hub_id": None, "url": None})
        else:
            model = timm.create_model(arch, pretrained=True, num_classes=0)
    except EncoderError:
        raise
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        where = weights or "the Hugging Face cache (downloads are off)"
        raise EncoderError(f"encoder {spec!r}: could not load timm {arch} weights from {where}: "
                           f"{str(exc).splitlines()[0][:200]}") from None
    cfg = resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    transform = EvalTransform(size=size, resize=int(round(size / cfg.get("crop_pct", 1.0))),
                              interpolation=cfg.get("interpolation", "bicubic"),
                              mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    identity = f"timm:{arch}:" + (_sha256_file(weights) if weights else str(model.pretrained_cfg.get("hf_hub_id")))
    return Encoder(name, spec, TimmEncoder(model).eval(), transform, identity, None,
                   {"kind": "timm", "architecture": arch, "weights": weights or "hf-cache"})


def _open_clip_encoder(name: str, spec: str, rest: str) -> Encoder:
    import open_clip

    arch, sep, weights = rest.partition(":")
    if not sep or not weights:
        raise EncoderError(f"encoder {spec!r}: give the weights file, as open_clip:ARCH:WEIGHTS")
    if arch.endswith(".json"):
        if not Path(arch).is_file():
            raise EncoderError(f"encoder {spec!r}: model config {arch} does not exist")
        open_clip.add_model_config(Path(arch))
        arch = Path(arch).stem
    if arch not in open_clip.list_models():
        raise EncoderError(f"encoder {spec!r}: {arch!r} is not an open_clip architecture")
    if not storage.exists(weights):
        raise EncoderError(f"encoder {spec!r}: weights file {weights} does not exist")
    try:
        model = open_clip.create_model(arch, pretrained=weights, load_weights=True)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise EncoderError(f"encoder {spec!r}: weights {weights} do not fit {arch}: "
                           f"{str(exc).splitlines()[0][:200]}") from None
    visual = model.visual
    size = visual.image_size[0] if isinstance(visual.image_size, tuple | list) else int(visual.image_size)
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    transform = EvalTransform(size=size, resize=size, interpolation="bicubic", mean=mean, std=std)
    try:
        tokenizer = open_clip.get_tokenizer(arch)
        text = TextSide(lambda texts: tokenizer(texts), model.encode_text)
    except (OSError, ValueError, RuntimeError):
        text = None  # a tokenizer that would need a download: no zero-shot
    return Encoder(name, spec, OpenClipEncoder(model).eval(), transform, f"open_clip:{arch}:" + _sha256_file(weights),
                   text, {"kind": "open_clip", "architecture": arch, "weights": weights})


def load_encoder(name: str, spec: str) -> Encoder:
    """Load the encoder ``spec``; errors are one line naming the encoder and what is wrong."""
    kind, sep, rest = spec.partition(":")
    try:
        if sep and kind == "random":
            return _run_encoder(name, spec, rest, random_init=True)
        if sep and kind == "timm":
            return _timm_encoder(name, spec, rest)
        if sep and kind == "open_clip":
            return _open_clip_encoder(name, spec, rest)
        if sep and kind not in ("s3", "gs", "gcs", "az", "abfs", "file", "memory", "http", "https") \
                and "/" not in kind and len(kind) > 1:
            raise EncoderError(f"encoder {spec!r}: unknown kind {kind!r}; use RUN_DIR, random:RUN_DIR, "
                               "timm:MODEL[:WEIGHTS] or open_clip:ARCH:WEIGHTS")
        return _run_encoder(name, spec, spec, random_init=False)
    except CheckpointError as exc:
        raise EncoderError(f"encoder {name!r}: {exc}") from None
