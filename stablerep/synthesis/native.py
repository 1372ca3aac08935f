"""Each backend's own generation settings, filled in where a request leaves them unset (None).

A diffusers model generates at its UNet's sample size times the VAE's scale factor, as diffusers'
pipelines do (512 px for SD v1.5), with their 50 steps; a generator trained by this project
(``stablerep.generator``) saves its recommended steps, guidance and size, and those win. The tiny
backend is a diffusers pipeline too (so its own size comes the same way) but takes few steps: its
weights are random, more steps only cost time. The procedural renderer's native size is 512 px.
Guidance, when unset and not recommended by the model, is the paper's 2.0.

The resolved values replace the None fields of the request, so they are what the dataset's config
hash, manifest and lineage record: an unset field and an explicit value equal to the backend's
own give the same dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stablerep.config import SynthesisConfig
from stablerep.synthesis.base import model_not_found
from stablerep.synthesis.tiny import tiny_pipeline_path

PROCEDURAL_SIZE = 512
DIFFUSERS_STEPS = 50   # diffusers' pipelines' default num_inference_steps
TINY_STEPS = 4
PAPER_GUIDANCE = 2.0
GENERATION_FILE = "stablerep_generation.json"  # written by stablerep.generator.model.save_generator


def model_native_size(model: str, revision: str | None = None, allow_download: bool = False) -> int:
    """unet.sample_size x 2 ** (len(vae.block_out_channels) - 1), read from the model's configs
    (no weights are loaded). A model that cannot be found raises ModelNotFoundError."""
    # diffusers is imported here, not at the top: `import stablerep.synthesis` stays light for
    # the CLI and the procedural backend (diffusers costs seconds to import).
    from diffusers import AutoencoderKL, UNet2DConditionModel

    kwargs: dict[str, Any] = {"revision": revision, "local_files_only": not allow_download}
    try:
        unet = UNet2DConditionModel.load_config(model, subfolder="unet", **kwargs)
        vae = AutoencoderKL.load_config(model, subfolder="vae", **kwargs)
    except (OSError, ValueError) as exc:
        raise model_not_found(model, allow_download, exc) from None
    return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)


def _saved_recommendation(model: str) -> dict[str, Any]:
    file = Path(model) / GENERATION_FILE
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}


def native_settings(cfg: SynthesisConfig, fields: tuple[str, ...] = ("resolution", "steps", "guidance"),
                    ) -> dict[str, Any]:
    """The backend's own values of ``fields`` for this request (its model's, for diffusers). A
    model's configs are read only when its size is asked for."""
    if cfg.backend == "procedural":
        return {"resolution": PROCEDURAL_SIZE}
    saved = _saved_recommendation(cfg.model) if cfg.backend == "diffusers" else {}
    if saved:
        return {"resolution": saved["resolution"], "steps": saved["num_inference_steps"],
                "guidance": saved["guidance_scale"]}
    out: dict[str, Any] = {"steps": TINY_STEPS if cfg.backend == "tiny" else DIFFUSERS_STEPS,
                           "guidance": PAPER_GUIDANCE}
    if "resolution" in fields:
        if cfg.backend == "tiny":
            out["resolution"] = model_native_size(str(tiny_pipeline_path()))
        else:
            out["resolution"] = model_native_size(cfg.model, cfg.revision, cfg.allow_download)
    return out


def resolve_native_defaults(cfg: SynthesisConfig) -> SynthesisConfig:
    """``cfg`` with every unset (None) generation setting filled with the backend's own; a fully
    set request is returned as it is, without reading any model."""
    unset = tuple(k for k in cfg.native_fields() if getattr(cfg, k) is None)
    if not unset:
        return cfg
    native = native_settings(cfg, unset)
    return SynthesisConfig.model_validate({**cfg.model_dump(), **{k: native[k] for k in unset}})
