"""Models for the synthesis benchmark: the SD v1.5 architecture with random weights, and FLOPs.

Throughput does not depend on weight values, and nothing may be downloaded, so the benchmark
builds SD v1.5's exact architecture (UNet 320-640-1280-1280, 4-block VAE, CLIP ViT-L/14 text
model) with random weights, saves it with save_pretrained and loads it through from_pretrained
like any model. At these initialisations the UNet's activations stay below 10 in magnitude (fp32
check on CPU), so fp16 neither overflows nor turns the images into noise of its own.

FLOPs are counted by torch.utils.flop_counter on the meta device (no memory, no time): one guided
step is the UNet on a batch of 2 (unconditional + conditional) latents, the decode is the VAE
decoder on one latent. For SD v1.5 at 512 px that gives 1.607 TFLOP per guided step, of which
0.252 are attention's score and value products (the 1.354 TFLOP figure leaves those out), and
2.515 TFLOP per decode.
"""

from __future__ import annotations

from pathlib import Path

import torch


def build_sd15_random(path: Path, device: torch.device, dtype: torch.dtype) -> Path:
    """Save the SD v1.5 architecture with random weights (initialised on ``device``, stored in
    ``dtype``) at ``path``; returns ``path``."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from stablerep.synthesis.tiny import write_clip_tokenizer_files

    if (path / "model_index.json").is_file():
        return path
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1 B parameters is seconds on a GPU, a minute on CPU
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
                            down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                            num_hidden_layers=12, max_position_embeddings=77, vocab_size=49408,
                                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    vocab, merges = write_clip_tokenizer_files(path.parent / "_tokenizer")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, unet=unet, scheduler=scheduler,
                                   tokenizer=CLIPTokenizer(str(vocab), str(merges), model_max_length=77),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(dtype=dtype).save_pretrained(str(path))
    return path


def count_flops_per_image(model_dir: str, resolution: int, steps: int, guided: bool = True) -> dict[str, float]:
    """FLOPs of one image: ``steps`` UNet calls on 2 latents (guided) or 1, plus one VAE decode."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    unet_cfg = UNet2DConditionModel.load_config(model_dir, subfolder="unet")
    vae_cfg = AutoencoderKL.load_config(model_dir, subfolder="vae")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(vae_cfg)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        side = resolution // factor
        batch = 2 if guided else 1
        latents = torch.empty(batch, unet.config.in_channels, side, side)
        text = torch.empty(batch, 77, unet.config.cross_attention_dim)
        with FlopCounterMode(display=False) as counter:
            unet(latents, torch.tensor(500), encoder_hidden_states=text)
        step = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            vae.decode(torch.empty(1, vae.config.latent_channels, side, side))
        decode = counter.get_total_flops()
    return {"unet_step": float(step), "vae_decode": float(decode), "per_image": float(step * steps + decode)}
