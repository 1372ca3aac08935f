"""Stable Diffusion (or any diffusers text-to-image pipeline) as a synthesis backend."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from PIL import Image

from stablerep.devices import resolve_device
from stablerep.synthesis.base import GenerationRequest, model_not_found
from stablerep.synthesis.native import resolve_native_defaults
from stablerep.synthesis.speed import SpeedSettings, apply_speed_settings, tensor_to_pil

SCHEDULERS = {"ddim": "DDIMScheduler", "dpm": "DPMSolverMultistepScheduler",
              "euler": "EulerDiscreteScheduler", "pndm": "PNDMScheduler"}


def pipeline_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: fp16 on CUDA, fp32 elsewhere; else fp32, fp16 or bf16."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def load_pipeline(model: str, *, revision: str | None = None, dtype: torch.dtype = torch.float32,
                  allow_download: bool = False, safety_checker: bool = False):
    """diffusers' own from_pretrained, offline unless ``allow_download``; a clear error if missing."""
    from diffusers import StableDiffusionPipeline

    kwargs: dict[str, Any] = {"dtype": dtype, "revision": revision,
                              "local_files_only": not allow_download}
    if not safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        return StableDiffusionPipeline.from_pretrained(model, **kwargs)
    except (OSError, ValueError) as exc:
        raise model_not_found(model, allow_download, exc) from None


class DiffusersBackend:
    """Batches of requests -> images, one torch.Generator per image seeded with its own seed.

    Paper defaults: DDIM, 50 steps, eta 0, guidance 2.0, 512 px; fp16 on CUDA by default, SDPA
    attention (diffusers' default). Each caption's text embedding is computed once per batch for
    all its images and the unconditional one once per backend, then handed to the pipeline
    (``prompt_embeds`` / ``negative_prompt_embeds``): the same tensors the plain call computes
    per image. Speed settings (stablerep.synthesis.speed; ``auto`` = on for CUDA): channels_last,
    fused QKV projections, TF32, torch.compile of the UNet and VAE decoder. With compile on and a
    ``batch_size``, every pipeline call has exactly that many images (a short last batch is
    padded with repeats of its last request, whose extra images are dropped), so the compiled
    graphs see one static shape.
    """

    name = "diffusers"

    def __init__(self, model: str, *, revision: str | None = None, device: str = "auto", dtype: str = "auto",
                 steps: int = 50, guidance: float = 2.0, scheduler: str = "ddim", eta: float = 0.0,
                 resolution: int = 512, negative_prompt: str | None = None, safety_checker: bool = False,
                 allow_download: bool = False, channels_last: str | bool = "auto", fuse_qkv: str | bool = "auto",
                 compile: str | bool = "auto", compile_mode: str = "default", batch_size: int | None = None) -> None:
        import diffusers

        self.device = resolve_device(device)
        self.dtype = pipeline_dtype(dtype, self.device)
        self.model, self.revision = model, revision
        self.steps, self.guidance, self.eta = steps, guidance, eta
        self.resolution, self.negative_prompt = resolution, negative_prompt
        self.speed = SpeedSettings.resolve(self.device, channels_last=channels_last, fuse_qkv=fuse_qkv,
                                           compile=compile, compile_mode=compile_mode)
        self.static_batch = batch_size if self.speed.compile else None
        pipe = load_pipeline(model, revision=revision, dtype=self.dtype, allow_download=allow_download,
                             safety_checker=safety_checker)
        scheduler_cls = getattr(diffusers, SCHEDULERS[scheduler])
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
        self.scheduler_name = type(pipe.scheduler).__name__
        pipe = pipe.to(self.device)
        apply_speed_settings(pipe, self.speed)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self._negative: torch.Tensor | None = None

    @classmethod
    def from_config(cls, cfg, model: str | None = None) -> DiffusersBackend:
        """The backend a SynthesisConfig asks for; unset settings are the backend's own."""
        cfg = resolve_native_defaults(cfg)
        return cls(model or cfg.model, revision=cfg.revision, device=cfg.device, dtype=cfg.dtype,
                   steps=cfg.steps, guidance=cfg.guidance, scheduler=cfg.scheduler, eta=cfg.eta,
                   resolution=cfg.resolution, negative_prompt=cfg.negative_prompt,
                   safety_checker=cfg.safety_checker, allow_download=cfg.allow_download,
                   fuse_qkv=cfg.fuse_qkv, compile=cfg.compile, batch_size=cfg.batch_size)

    @property
    def guided(self) -> bool:
        """Classifier-free guidance on, by the pipeline's own rule."""
        return self.guidance > 1 and self.pipe.unet.config.time_cond_proj_dim is None

    def _text_embeddings(self, captions: list[str]) -> torch.Tensor:
        """(len(captions), 77, D): each distinct caption through the text encoder once."""
        unique = list(dict.fromkeys(captions))
        embeds, _ = self.pipe.encode_prompt(unique, self.device, 1, False)  # (U, 77, D)
        index = {c: i for i, c in enumerate(unique)}
        return embeds[torch.tensor([index[c] for c in captions], device=embeds.device)]

    def _negative_embeddings(self, n: int) -> torch.Tensor:
        """(n, 77, D): the unconditional (or negative prompt's) embedding, computed once."""
        if self._negative is None:
            self._negative, _ = self.pipe.encode_prompt([self.negative_prompt or ""], self.device, 1, False)
        return self._negative.expand(n, -1, -1)

    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest]) -> list[Image.Image]:
        step = self.static_batch or max(1, len(requests))
        return [img for start in range(0, len(requests), step)
                for img in self._generate_batch(requests[start:start + step])]

    def _generate_batch(self, requests: list[GenerationRequest]) -> list[Image.Image]:
        n = len(requests)
        padded = requests + [requests[-1]] * ((self.static_batch or n) - n)
        gen_device = "cpu" if self.device.type == "mps" else self.device
        generators = [torch.Generator(gen_device).manual_seed(r.seed) for r in padded]
        embeds = {"prompt_embeds": self._text_embeddings([r.caption for r in padded])}
        if self.guided:
            embeds["negative_prompt_embeds"] = self._negative_embeddings(len(padded))
        out = self.pipe(**embeds, num_inference_steps=self.steps, guidance_scale=self.guidance, eta=self.eta,
                        height=self.resolution, width=self.resolution, generator=generators,
                        output_type="pt")
        return tensor_to_pil(out.images[:n])

    def lineage(self) -> dict[str, Any]:
        import diffusers

        config = dict(self.pipe.config) if hasattr(self.pipe, "config") else {}
        return {"backend": self.name, "model": self.model, "revision": self.revision,
                "model_commit": config.get("_commit_hash") or getattr(self.pipe, "_commit_hash", None),
                "scheduler": self.scheduler_name, "steps": self.steps, "guidance": self.guidance,
                "eta": self.eta, "resolution": self.resolution, "negative_prompt": self.negative_prompt,
                "dtype": str(self.dtype).removeprefix("torch."), "diffusers": diffusers.__version__,
                "device_type": self.device.type, "speed": dataclasses.asdict(self.speed)}
