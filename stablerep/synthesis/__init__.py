"""Text-to-image synthesis: backends (diffusers, tiny, procedural) and the shard worker."""

from stablerep.shards.images import encode_image
from stablerep.synthesis.base import Backend, GenerationRequest
from stablerep.synthesis.native import resolve_native_defaults
from stablerep.synthesis.procedural import ProceduralBackend
from stablerep.synthesis.tiny import tiny_pipeline_path
from stablerep.synthesis.worker import (
    BuildResult,
    ShardPlan,
    load_plan,
    synthesize_dataset,
    synthesize_shard,
)
from stablerep.world import probe_set, procedural_captions

__all__ = [
    "Backend",
    "BuildResult",
    "GenerationRequest",
    "ProceduralBackend",
    "ShardPlan",
    "synthesize_dataset",
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
    # imported here: the diffusers backend loads torch (2.5 s measured), which the procedural
    # backend and `import stablerep.synthesis` (0.4 s) do not need
    from stablerep.synthesis.diffusers_backend import DiffusersBackend

    if cfg.backend == "tiny":
        return DiffusersBackend.from_config(cfg, model=str(tiny_pipeline_path()))
    return DiffusersBackend.from_config(cfg)
