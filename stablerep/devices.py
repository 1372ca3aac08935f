"""Device and mixed-precision selection (used by training, synthesis and evaluation): devices are
parameters, CPU always works."""

from __future__ import annotations

import contextlib
import os

import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto``: this rank's CUDA device when there is one, else CPU. Any torch device string works."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asked for, but CUDA is not available here")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA, fp32 on CPU (CPU bf16 autocast is slower than fp32 on most CPUs)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
