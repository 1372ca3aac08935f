"""A tiny Stable-Diffusion-architecture pipeline with random weights, built locally.

UNet (32, 64 channels, cross-attention), a 2-block VAE, a 32-wide CLIP text model, DDIM, and a
CLIPTokenizer made from the CLIP BPE vocabulary that open_clip ships (ids equal open_clip's). It
is saved with save_pretrained and loaded with from_pretrained, so tests and offline runs go
through diffusers' real code path without downloading anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

TINY_VERSION = 1


def default_cache_dir() -> Path:
    root = os.environ.get("STABLEREP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "stablerep")
    return Path(root)


def write_clip_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt of the CLIP BPE, from open_clip's bundled vocabulary."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    # open_clip names its special tokens differently; the HF tokenizer expects CLIP's names
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    encoder = {names.get(token, token): index for token, index in tok.encoder.items()}
    vocab.write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    ranked = sorted(tok.bpe_ranks.items(), key=lambda kv: kv[1])
    merges.write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for (a, b), _ in ranked) + "\n", encoding="utf-8")
    return vocab, merges


def build_tiny_pipeline(path: Path, seed: int = 0) -> Path:
    """Build the tiny pipeline with deterministic random weights and save it at ``path``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=16,
        attention_head_dim=8)
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=16,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, vocab_size=49408,
        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = write_clip_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(path))
    return path


def tiny_pipeline_path(cache_dir: Path | None = None) -> Path:
    """Path of the tiny pipeline, built on first use (into a temp folder, then renamed)."""
    target = (cache_dir or default_cache_dir()) / f"tiny-sd-v{TINY_VERSION}"
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="tiny-sd-", dir=target.parent))
    try:
        build_tiny_pipeline(staging)
        with contextlib.suppress(OSError):  # another process built it first
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
