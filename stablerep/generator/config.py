"""The settings of the small latent text-to-image model that `stablerep generator train` builds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GeneratorConfig(BaseModel):
    """A latent diffusion model in miniature, from diffusers' own components.

    AutoencoderKL (``vae_channels``: one level per entry; each level after the first halves the
    size) -> latents of ``latent_channels`` at resolution / 2**(levels - 1); UNet2DConditionModel
    with cross-attention on a CLIP text encoder (our CLIP BPE tokenizer); DDPM noise schedule for
    training, DDIM for sampling. Captions are dropped with ``caption_dropout`` so that
    classifier-free guidance works at sampling time.
    """

    model_config = ConfigDict(extra="forbid")

    resolution: int = Field(32, ge=16, description="image size (px)")
    vae_channels: list[int] = Field(default_factory=lambda: [32, 64, 64])
    latent_channels: int = Field(4, ge=1)
    unet_channels: list[int] = Field(default_factory=lambda: [48, 96])
    unet_layers_per_block: int = Field(1, ge=1)
    text_width: int = Field(32, ge=8)
    text_layers: int = Field(2, ge=1)
    text_heads: int = Field(4, ge=1)
    context_length: int = Field(32, ge=8, description="tokens per caption (the grammar's captions fit in 24)")
    caption_dropout: float = Field(0.1, ge=0, lt=1, description="share of captions replaced by '' (guidance)")
    vae_steps: int = Field(1000, ge=1)
    vae_lr: float = Field(1e-3, gt=0)
    vae_kl_weight: float = Field(1e-4, ge=0)
    unet_steps: int = Field(3000, ge=1)
    unet_lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    pool_images: int = Field(20_000, ge=64, description="real renders drawn once, then sampled for training")
    render_scale: int = Field(2, ge=1, description="render at this multiple of resolution, then downscale")
    seed: int = 0
    # what `stablerep synthesize --backend diffusers --model DIR` uses when not told otherwise
    recommended_steps: int = Field(20, ge=1)
    recommended_guidance: float = Field(2.0, ge=0)
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(250, ge=1)

    @model_validator(mode="after")
    def _sizes(self) -> GeneratorConfig:
        factor = 2 ** (len(self.vae_channels) - 1)
        if self.resolution % factor:
            raise ValueError(f"resolution ({self.resolution}) must be a multiple of the VAE's factor {factor}")
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width ({self.text_width}) must be divisible by text_heads ({self.text_heads})")
        if self.latent_size % 2 ** (len(self.unet_channels) - 1):
            raise ValueError(f"latent size {self.latent_size} must be divisible by the UNet's "
                             f"{2 ** (len(self.unet_channels) - 1)}")
        return self

    @property
    def latent_size(self) -> int:
        return self.resolution // 2 ** (len(self.vae_channels) - 1)
