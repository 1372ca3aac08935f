"""Checkpoints as safetensors + JSON at any fsspec URL; loading never unpickles.

Layout under a run directory::

    checkpoints/step_00000100.safetensors   model, optimiser tensors and RNG states
    checkpoints/step_00000100.json          step, sha256 and size of the tensors file, optimiser
                                            hyper-parameters, scaler state, resolved config
    checkpoints/latest.json                 written last: names the newest complete checkpoint

A checkpoint counts only once ``latest.json`` names it, so a run killed while saving resumes from
the previous one. A tensors file whose sha256 or size differs from its JSON is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from stablerep import storage
from stablerep.errors import CheckpointError

FORMAT_VERSION = 1




@dataclass
class LoadedCheckpoint:
    step: int
    meta: dict[str, Any]


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                plain.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain_state": plain}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, extra in meta["plain_state"].items():
        state.setdefault(int(pid), {}).update(extra)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.cuda"] = torch.cuda.get_rng_state()
    return out


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def save_checkpoint(run_dir: str, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None = None, config: dict[str, Any] | None = None,
                    keep: int = 2) -> str:
    """Write the checkpoint for ``step`` (the number of optimiser steps done) and return its URL."""
    ckpt_dir = storage.join(run_dir, "checkpoints")
    name = checkpoint_name(step)
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    optim_tensors, optim_meta = _split_optimizer(optimizer.state_dict())
    tensors.update(optim_tensors)
    tensors.update(_rng_tensors())
    blob = st_save(tensors, metadata={"format": str(FORMAT_VERSION), "step": str(step)})
    meta = {
        "format": FORMAT_VERSION,
        "step": step,
        "tensors_file": f"{name}.safetensors",
        "bytes": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "optimizer": optim_meta,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "config": config,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_bytes(storage.join(ckpt_dir, f"{name}.safetensors"), blob)
    storage.write_bytes(storage.join(ckpt_dir, f"{name}.json"), json.dumps(meta, indent=1).encode())
    storage.write_bytes(storage.join(ckpt_dir, "latest.json"),
                        json.dumps({"step": step, "name": name}).encode())
    _prune(ckpt_dir, keep, current=step)
    return storage.join(ckpt_dir, name)


def _prune(ckpt_dir: str, keep: int, current: int) -> None:
    fs, path = storage.get_fs(ckpt_dir)
    steps = sorted({int(p.rsplit("/", 1)[-1][5:13]) for p in fs.glob(f"{path}/step_*.json")})
    for old in steps[:-keep]:
        if old == current:
            continue
        for ext in ("safetensors", "json"):
            storage.remove(storage.join(ckpt_dir, f"{checkpoint_name(old)}.{ext}"))


def latest_checkpoint(run_dir: str) -> str | None:
    """URL (without extension) of the newest committed checkpoint, or None."""
    pointer = storage.join(run_dir, "checkpoints", "latest.json")
    if not storage.exists(pointer):
        return None
    try:
        name = json.loads(storage.read_bytes(pointer))["name"]
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{pointer}: unreadable checkpoint pointer ({exc})") from None
    return storage.join(run_dir, "checkpoints", name)


def read_checkpoint_meta(url: str) -> dict[str, Any]:
    """The JSON half of a checkpoint (URL without extension): step, sha256 of the tensors, config."""
    meta_url = f"{url}.json"
    if not storage.exists(meta_url):
        raise CheckpointError(f"checkpoint file missing: {meta_url}")
    try:
        return json.loads(storage.read_bytes(meta_url))
    except ValueError as exc:
        raise CheckpointError(f"{meta_url}: not valid JSON ({exc})") from None


def read_checkpoint(url: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a checkpoint (URL without extension): (tensors, metadata)."""
    meta_url = f"{url}.json"
    tensors_url = f"{url}.safetensors"
    for u in (meta_url, tensors_url):
        if not storage.exists(u):
            raise CheckpointError(f"checkpoint file missing: {u}")
    try:
        meta = json.loads(storage.read_bytes(meta_url))
    except ValueError as exc:
        raise CheckpointError(f"{meta_url}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_url}: unsupported checkpoint format {meta.get('format')!r}")
    blob = storage.read_bytes(tensors_url)
    if len(blob) != meta["bytes"] or hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise CheckpointError(
            f"{tensors_url}: corrupted checkpoint (size or sha256 differs from {meta_url}); refusing to load"
        )
    try:
        tensors = st_load(blob)
    except SafetensorError as exc:
        raise CheckpointError(f"{tensors_url}: not a valid safetensors file ({exc})") from None
    return tensors, meta


def load_model_weights(url: str, model: nn.Module) -> dict[str, Any]:
    """Load only the model weights of a checkpoint into ``model`` (for evaluation)."""
    tensors, meta = read_checkpoint(url)
    load_model_weights_from(tensors, model, url)
    return meta


def load_checkpoint(url: str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scaler: torch.amp.GradScaler | None = None, restore_rng: bool = True) -> LoadedCheckpoint:
    """Restore model, optimiser, scaler and RNG state from a checkpoint written by save_checkpoint."""
    tensors, meta = read_checkpoint(url)
    load_model_weights_from(tensors, model, url)
    if optimizer is not None:
        optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    if restore_rng:
        torch.set_rng_state(tensors["rng.cpu"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
    return LoadedCheckpoint(step=int(meta["step"]), meta=meta)


def load_model_weights_from(tensors: dict[str, torch.Tensor], model: nn.Module, url: str) -> None:
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{url}: weights do not fit the model: {str(exc).splitlines()[0]}") from None
