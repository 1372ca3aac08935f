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
from diffusers import AutoencoderKL
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


def unet_step(parts: GeneratorParts, latents: torch.Tensor, tokens: torch.Tensor, scheduler,
              g: torch.Generator) -> dict[str, torch.Tensor]:
    """Noise prediction on scaled latents (B, C, h, w) conditioned on caption tokens (B, L)."""
    noise = torch.randn(latents.shape, generator=g)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=g)
    text = parts.text_encoder(tokens)[0]  # (B, L, E)
    pred = parts.unet(scheduler.add_noise(latents, noise, t), t, text).sample
    return {"loss": F.mse_loss(pred, noise)}


@torch.no_grad()
def encode_pool(parts: GeneratorParts, images: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen VAE's posterior (mean, std) of every pool image, once: each UNet step then
    samples its latents from these instead of running the encoder again."""
    means, stds = [], []
    for s in range(0, len(images), batch):
        dist = parts.vae.encode(images[s:s + batch]).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                     return_tensors="pt").input_ids


def drop_captions(tokens: torch.Tensor, empty: torch.Tensor, dropout: float, g: torch.Generator) -> torch.Tensor:
    """Replace a ``dropout`` share of rows by the empty caption's tokens (classifier-free guidance)."""
    drop = torch.rand(len(tokens), generator=g) < dropout
    return torch.where(drop[:, None], empty[None, :], tokens)


def _run_stage(parts, cfg, out, stage, steps, lr, params, fn, history, progress, stop_after=None) -> None:
    """Train one stage from its newest checkpoint under OUT/STAGE; the checkpoint holds every part.
    ``stop_after`` ends it early (same schedule: the first steps of the full run)."""
    run_dir = storage.join(out, stage)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    start = 0
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        start = load_checkpoint(ckpt, parts, opt).step
    bar = tqdm(total=steps, initial=start, desc=f"generator {stage}", unit="step", disable=None if progress else True)
    t0 = time.perf_counter()
    for step in range(start, min(steps, stop_after or steps)):
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


def train_generator(out: str, cfg: GeneratorConfig | None = None, progress: bool = True, *,
                    stop_after: int | None = None, vae_from: str | None = None, vae_only: bool = False,
                    command: str = "stablerep generator train", pool: RenderPool | None = None) -> dict:
    """Both stages into OUT (checkpoints under OUT/vae and OUT/unet, resumable), then the pipeline
    folder OUT/model, OUT/train_log.jsonl and OUT/loss_curve.png. Returns a summary.

    ``stop_after``: run only the first N steps of each stage (the full run's schedule; no model is
    saved), to check that a rebuild follows the shipped log. ``vae_from``: a generator folder
    whose trained autoencoder (and latent scale) to use instead of training one. ``vae_only``:
    stop after the autoencoder stage (no model is saved). ``pool``: the training renders, when
    already made by ``make_pool(cfg)`` (they depend on the config alone)."""
    cfg = cfg or GeneratorConfig()
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    parts = GeneratorParts(cfg)
    storage.write_bytes(storage.join(out, "generator_config.json"), json.dumps(cfg.model_dump(mode="json"),
                                                                               indent=2).encode())
    if pool is not None and tuple(pool.images.shape) != (cfg.pool_images, 3, cfg.resolution, cfg.resolution):
        raise ValueError(f"the given pool holds {tuple(pool.images.shape)} images; the config asks for "
                         f"{cfg.pool_images} at {cfg.resolution} px")
    pool = pool if pool is not None else make_pool(cfg, progress)
    history: list[dict] = []

    def vae_fn(step: int):
        return vae_step(parts, pool.images[_batch_indices(cfg, "vae", step)], cfg.vae_kl_weight)

    if vae_from is None:
        _run_stage(parts, cfg, out, "vae", cfg.vae_steps, cfg.vae_lr, list(parts.vae.parameters()), vae_fn,
                   history, progress, stop_after)
        scale = latent_scale(parts.vae.eval(), pool.images[:1024])
        if vae_only:
            _write_log(out, history)
            return {"model": None, "latent_scale": scale, "seconds": round(time.perf_counter() - started, 1),
                    "final": {"vae": history[-1]["loss"]} if history else {}, "log": history}
    else:
        trained = AutoencoderKL.from_pretrained(vae_from, subfolder="vae", torch_dtype=torch.float32)
        parts.vae.load_state_dict(trained.state_dict())
        scale = float(trained.config.scaling_factor)
    parts.vae.requires_grad_(False).eval()
    parts.vae.register_to_config(scaling_factor=scale)
    means, stds = encode_pool(parts, pool.images)
    tokenizer, scheduler = build_tokenizer(cfg), training_scheduler()
    tokens, empty = tokenize(tokenizer, pool.captions), tokenize(tokenizer, [""])[0]

    def unet_fn(step: int):
        idx = _batch_indices(cfg, "unet", step)
        g = torch.Generator().manual_seed(mix_seed(cfg.seed, 3, step))
        latents = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)) * scale
        return unet_step(parts, latents, drop_captions(tokens[idx], empty, cfg.caption_dropout, g), scheduler, g)

    params = list(parts.unet.parameters()) + list(parts.text_encoder.parameters())
    _run_stage(parts, cfg, out, "unet", cfg.unet_steps, cfg.unet_lr, params, unet_fn, history, progress, stop_after)
    _write_log(out, history)
    final = {stage: next(h for h in reversed(history) if h["stage"] == stage)["loss"]
             for stage in ("vae", "unet") if any(h["stage"] == stage for h in history)}
    seconds = round(time.perf_counter() - started, 1)
    if stop_after is not None and stop_after < max(cfg.vae_steps, cfg.unet_steps):
        return {"model": None, "latent_scale": scale, "seconds": seconds, "final": final, "log": history}
    provenance = {"command": command, "seed": cfg.seed, "torch": torch.__version__, "seconds": seconds}
    model_dir = storage.join(out, "model")
    save_generator(parts, cfg, model_dir, provenance)
    return {"model": model_dir, "latent_scale": scale, "seconds": seconds, "final": final}


def _write_log(out: str, history: list[dict]) -> None:
    storage.write_bytes(storage.join(out, "train_log.jsonl"), ("\n".join(json.dumps(h) for h in history) + "\n").encode())
    unet = [h for h in history if h["stage"] == "unet"]
    if unet:
        storage.write_bytes(storage.join(out, "loss_curve.png"), loss_curve(unet, "generator: UNet noise loss"))
