"""Train the generator on "real" procedural renders and their captions, in two stages as latent
diffusion does: the autoencoder first (reconstruction + a small KL term), then the UNet and the
text encoder on its frozen latents (noise prediction, captions dropped for classifier-free
guidance). Seeded, resumable from checkpoints, with a progress bar and a loss curve."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from stablerep import storage
from stablerep.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from stablerep.generator.config import GeneratorConfig
from stablerep.generator.model import (
    GeneratorParts,
    build_tokenizer,
    latent_scale,
    save_generator,
    training_scheduler,
)
from stablerep.plots import loss_curve
from stablerep.seeding import mix_seed
from stablerep.training.optim import lr_at, set_lr
from stablerep.world import parse_caption, random_scene, render


@dataclass
class RenderPool:
    """Real renders and their captions, drawn once from the seed: (N, 3, S, S) in [-1, 1]."""

    images: torch.Tensor
    captions: list[str]


def make_pool(cfg: GeneratorConfig, progress: bool = True) -> RenderPool:
    """``pool_images`` scenes of the grammar, each rendered at render_scale x resolution and
    downscaled (antialiased), as the demo stores its images."""
    rng = random.Random(mix_seed(cfg.seed, 17))
    size = cfg.resolution * cfg.render_scale
    images = torch.empty(cfg.pool_images, 3, cfg.resolution, cfg.resolution, dtype=torch.uint8)
    captions = []
    for i in tqdm(range(cfg.pool_images), desc="renders", unit="img", disable=None if progress else True):
        caption = random_scene(rng).caption()
        seed = rng.randrange(2**62)
        img = render(parse_caption(caption, random.Random(seed ^ 0x5EED)), seed, size)
        img = img.resize((cfg.resolution, cfg.resolution), Image.Resampling.LANCZOS)
        images[i] = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
        captions.append(caption)
    return RenderPool(images.float().div_(127.5).sub_(1), captions)


def _batch_indices(cfg: GeneratorConfig, stage: str, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(mix_seed(cfg.seed, {"vae": 1, "unet": 2}[stage], step))
    return torch.randint(0, cfg.pool_images, (cfg.batch_size,), generator=g)


def vae_step(parts: GeneratorParts, x: torch.Tensor, kl_weight: float) -> dict[str, torch.Tensor]:
    posterior = parts.vae.encode(x).latent_dist
    recon = parts.vae.decode(posterior.sample()).sample
    rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
    kl = posterior.kl().mean() / x[0].numel()
    return {"loss": rec + kl_weight * kl, "reconstruction": rec.detach(), "kl": kl.detach()}


def unet_step(parts: GeneratorParts, x: torch.Tensor, tokens: torch.Tensor, scheduler,
              g: torch.Generator, scale: float) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        latents = parts.vae.encode(x).latent_dist.sample(generator=g) * scale
    noise = torch.randn(latents.shape, generator=g)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x),), generator=g)
    text = parts.text_encoder(tokens)[0]  # (B, L, E)
    pred = parts.unet(scheduler.add_noise(latents, noise, t), t, text).sample
    return {"loss": F.mse_loss(pred, noise)}


def _tokens(tokenizer, captions: list[str], dropout: float, g: torch.Generator) -> torch.Tensor:
    drop = torch.rand(len(captions), generator=g) < dropout
    texts = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
    return tokenizer(texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                     return_tensors="pt").input_ids


def _run_stage(parts, cfg, out, stage, steps, lr, params, fn, history, progress) -> None:
    """Train one stage from its newest checkpoint under OUT/STAGE; the checkpoint holds every part."""
    run_dir = storage.join(out, stage)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    start = 0
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        start = load_checkpoint(ckpt, parts, opt).step
    bar = tqdm(total=steps, initial=start, desc=f"generator {stage}", unit="step", disable=None if progress else True)
    t0 = time.perf_counter()
    for step in range(start, steps):
        set_lr(opt, lr_at(step, steps, lr, warmup_steps=min(200, steps // 10)))
        losses = fn(step)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        value = float(losses["loss"].detach())
        if not math.isfinite(value):
            raise RuntimeError(f"generator {stage} step {step + 1}: loss is {value}")
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == steps:
            record = {"stage": stage, "step": done, "loss": value, "seconds": time.perf_counter() - t0,
                      **{k: float(v) for k, v in losses.items() if k != "loss"}}
            history.append(record)
            bar.set_postfix(loss=f"{value:.4f}")
        if done % cfg.checkpoint_every == 0 or done == steps:
            save_checkpoint(run_dir, done, parts, opt, keep=1)
    bar.close()


def train_generator(out: str, cfg: GeneratorConfig | None = None, progress: bool = True) -> dict:
    """Both stages into OUT (checkpoints under OUT/vae and OUT/unet, resumable), then the pipeline
    folder OUT/model, OUT/train_log.jsonl and OUT/loss_curve.png. Returns a summary."""
    cfg = cfg or GeneratorConfig()
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    parts = GeneratorParts(cfg)
    storage.write_bytes(storage.join(out, "generator_config.json"), json.dumps(cfg.model_dump(mode="json"),
                                                                               indent=2).encode())
    pool = make_pool(cfg, progress)
    history: list[dict] = []

    def vae_fn(step: int):
        return vae_step(parts, pool.images[_batch_indices(cfg, "vae", step)], cfg.vae_kl_weight)

    _run_stage(parts, cfg, out, "vae", cfg.vae_steps, cfg.vae_lr, list(parts.vae.parameters()), vae_fn, history,
               progress)
    parts.vae.requires_grad_(False).eval()
    scale = latent_scale(parts.vae, pool.images[:1024])
    parts.vae.register_to_config(scaling_factor=scale)
    tokenizer, scheduler = build_tokenizer(cfg), training_scheduler()

    def unet_fn(step: int):
        idx = _batch_indices(cfg, "unet", step)
        g = torch.Generator().manual_seed(mix_seed(cfg.seed, 3, step))
        tokens = _tokens(tokenizer, [pool.captions[i] for i in idx.tolist()], cfg.caption_dropout, g)
        return unet_step(parts, pool.images[idx], tokens, scheduler, g, scale)

    params = list(parts.unet.parameters()) + list(parts.text_encoder.parameters())
    _run_stage(parts, cfg, out, "unet", cfg.unet_steps, cfg.unet_lr, params, unet_fn, history, progress)
    provenance = {"command": "stablerep generator train", "seed": cfg.seed, "torch": torch.__version__,
                  "seconds": round(time.perf_counter() - started, 1)}
    model_dir = storage.join(out, "model")
    save_generator(parts, cfg, model_dir, provenance)
    _write_log(out, history)
    return {"model": model_dir, "latent_scale": scale, "seconds": provenance["seconds"],
            "final": {stage: next(h for h in reversed(history) if h["stage"] == stage)["loss"]
                      for stage in ("vae", "unet") if any(h["stage"] == stage for h in history)}}


def _write_log(out: str, history: list[dict]) -> None:
    storage.write_bytes(storage.join(out, "train_log.jsonl"), ("\n".join(json.dumps(h) for h in history) + "\n").encode())
    unet = [h for h in history if h["stage"] == "unet"]
    if unet:
        storage.write_bytes(storage.join(out, "loss_curve.png"), loss_curve(unet, "generator: UNet noise loss"))
