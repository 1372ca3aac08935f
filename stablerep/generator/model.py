"""The generator's parts, from diffusers and transformers, and its saved form: a Stable Diffusion
pipeline folder (save_pretrained) that diffusers' own from_pretrained loads like SD v1.5, with the
recommended sampling settings beside it in ``stablerep_generation.json``."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from stablerep.generator.config import GeneratorConfig
from stablerep.synthesis.tiny import write_clip_tokenizer_files

GENERATION_FILE = "stablerep_generation.json"
SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def build_vae(cfg: GeneratorConfig) -> AutoencoderKL:
    levels = len(cfg.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=cfg.latent_channels,
                         block_out_channels=tuple(cfg.vae_channels), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                         norm_num_groups=min(16, min(cfg.vae_channels)), sample_size=cfg.resolution,
                         mid_block_add_attention=False)


def build_unet(cfg: GeneratorConfig) -> UNet2DConditionModel:
    levels = len(cfg.unet_channels)
    # cross-attention at every level: at 32 px a shape spans two to four latent pixels, so the
    # caption has to reach the full-resolution level too
    down, up = ("CrossAttnDownBlock2D",) * levels, ("CrossAttnUpBlock2D",) * levels
    return UNet2DConditionModel(sample_size=cfg.latent_size, in_channels=cfg.latent_channels,
                                out_channels=cfg.latent_channels, layers_per_block=cfg.unet_layers_per_block,
                                block_out_channels=tuple(cfg.unet_channels), down_block_types=down,
                                up_block_types=up, cross_attention_dim=cfg.text_width,
                                attention_head_dim=8, norm_num_groups=math.gcd(32, *cfg.unet_channels))


def build_text_encoder(cfg: GeneratorConfig) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(hidden_size=cfg.text_width, intermediate_size=2 * cfg.text_width,
                                        num_attention_heads=cfg.text_heads, num_hidden_layers=cfg.text_layers,
                                        vocab_size=49408, max_position_embeddings=cfg.context_length,
                                        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))


def build_tokenizer(cfg: GeneratorConfig) -> CLIPTokenizer:
    """The CLIP BPE tokenizer from open_clip's bundled vocabulary (ids equal open_clip's)."""
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = write_clip_tokenizer_files(Path(tmp))
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=cfg.context_length)


class GeneratorParts(nn.Module):
    """The trained parts together, so one checkpoint holds them (and resumes exactly)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.vae = build_vae(cfg)
        self.unet = build_unet(cfg)
        self.text_encoder = build_text_encoder(cfg)


def training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE, clip_sample=False)


def sampling_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def save_generator(parts: GeneratorParts, cfg: GeneratorConfig, path: str | Path, provenance: dict) -> Path:
    """A Stable Diffusion pipeline folder, plus the recommended sampling settings and provenance."""
    path = Path(path)
    pipe = StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=build_tokenizer(cfg),
                                   unet=parts.unet, scheduler=sampling_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    # stored in fp16 (half the bytes); the backend loads it in its own dtype (fp32 on CPU)
    pipe.to(torch.float16).save_pretrained(str(path))
    pipe.to(torch.float32)
    generation = {"num_inference_steps": cfg.recommended_steps, "guidance_scale": cfg.recommended_guidance,
                  "resolution": cfg.resolution, "config": cfg.model_dump(mode="json"), "provenance": provenance}
    (path / GENERATION_FILE).write_text(json.dumps(generation, indent=2) + "\n")
    return path


def read_generation_defaults(model: str | Path) -> dict | None:
    """The recommended steps, guidance and resolution saved with a generator, if any."""
    file = Path(model) / GENERATION_FILE
    if not file.is_file():
        return None
    return json.loads(file.read_text())


@torch.no_grad()
def latent_scale(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """1 / std of the VAE's latents over ``images`` (SD's scaling_factor, 0.18215, is this for its VAE)."""
    return float(1.0 / vae.encode(images).latent_dist.mean.std().clamp_min(1e-6))
