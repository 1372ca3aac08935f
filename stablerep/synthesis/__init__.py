"""Text-to-image synthesis: backends (diffusers, tiny, procedural) and the shard worker."""

from stablerep.shards.images import encode_image
from stablerep.synthesis.base import Backend, GenerationRequest
from stablerep.synthesis.native import resolve_native_defaults
from stablerep.synthesis.procedural import ProceduralBackend
from stablerep.synthesis.worker import (
    BuildResult,
    ShardPlan,
    build_dataset,
    load_plan,
    synthesize_shard,
)
from stablerep.world import probe_set, procedural_captions

__all__ = [
    "Backend",
    "BuildResult",
    "GenerationRequest",
    "ProceduralBackend",
    "ShardPlan",
    "build_dataset",
    "create_backend",
    "encode_image",
    "load_plan",
    "probe_set",
    "procedural_captions",
    "resolve_native_defaults",
    "synthesize_shard",
]


def create_backend(cfg) -> Backend:
    """The backend a :class:`stablerep.config.SynthesisConfig` asks for (unset settings: its own)."""
    cfg = resolve_native_defaults(cfg)
    if cfg.backend == "procedural":
        return ProceduralBackend(size=cfg.resolution)
    from stablerep.synthesis.diffusers_backend import DiffusersBackend

    if cfg.backend == "tiny":
        from stablerep.synthesis.tiny import tiny_pipeline_path

        return DiffusersBackend.from_config(cfg, model=str(tiny_pipeline_path()))
    return DiffusersBackend.from_config(cfg)
