"""Speed settings of a diffusers pipeline that do not change what an image looks like.

Each one changes only the order or grouping of the same arithmetic (fp16 rounding noise on a GPU;
on CPU fp32 the images stay within one 8-bit level of the plain call's, which tests/synthesis
checks): channels_last convolutions, fused QKV projections (diffusers' own
``fuse_qkv_projections``), TF32 for what stays fp32 and cuDNN autotuning (CUDA only; these two
are process-wide switches), and ``torch.compile`` of the UNet and the VAE decoder with static
shapes (the backend pads the last batch of a shard to the compiled batch size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

SWITCHES = ("auto", "on", "off")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def resolve_switch(value: str | bool, device: torch.device, name: str) -> bool:
    """``auto`` is on for CUDA and off elsewhere (CPU inductor builds take minutes and gain little)."""
    if isinstance(value, bool):
        return value
    if value not in SWITCHES:
        raise ValueError(f"{name} must be one of {', '.join(SWITCHES)}, got {value!r}")
    return device.type == "cuda" if value == "auto" else value == "on"


@dataclass(frozen=True)
class SpeedSettings:
    """What was switched on, resolved for one device (reported in the dataset's lineage)."""

    channels_last: bool
    fuse_qkv: bool
    compile: bool
    compile_mode: str = "default"
    tf32: bool = False

    @classmethod
    def resolve(cls, device: torch.device, *, channels_last: str | bool = "auto", fuse_qkv: str | bool = "auto",
                compile: str | bool = "auto", compile_mode: str = "default") -> SpeedSettings:
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {compile_mode!r}")
        return cls(channels_last=resolve_switch(channels_last, device, "channels_last"),
                   fuse_qkv=resolve_switch(fuse_qkv, device, "fuse_qkv"),
                   compile=resolve_switch(compile, device, "compile"), compile_mode=compile_mode,
                   tf32=device.type == "cuda")


def enable_tf32() -> None:
    """TF32 tensor cores for fp32 matmuls and convolutions (whatever stays fp32 in the pipeline),
    and cuDNN's autotuner, which pays off because every call has the same shapes."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def apply_speed_settings(pipe, settings: SpeedSettings) -> None:
    """Apply ``settings`` to a pipeline already on its device (in place)."""
    if settings.tf32:
        enable_tf32()
    if settings.fuse_qkv:
        pipe.fuse_qkv_projections(unet=True, vae=True)
    if settings.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if settings.compile:
        # Static shapes: one graph per (batch, resolution); the backend keeps the batch fixed.
        pipe.unet.compile(mode=settings.compile_mode, dynamic=False, fullgraph=True)
        pipe.vae.decoder.compile(mode=settings.compile_mode, dynamic=False, fullgraph=True)


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] on any device -> PIL images, exactly as diffusers' ``output_type="pil"``
    rounds them (float32 x 255, round half to even, uint8), but converted on the device so that a
    quarter of the bytes cross to the host."""
    pixels = (images.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # (B, H, W, 3)
    return [Image.fromarray(a) for a in np.ascontiguousarray(pixels.cpu().numpy())]
