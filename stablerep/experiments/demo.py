"""The offline end-to-end demo: a fair comparison of StableRep with SimCLR and CLIP, in miniature.

procedural captions -> procedural synthesis (K images per caption) -> Parquet shards, and the
"real" analogue (one render per caption from a separate seed stream) -> for each training seed:
StableRep on the synthetic shards, SimCLR and CLIP on the real ones, and the supervised ceiling
(the same architecture trained on the synthetic images' caption attributes) -> linear probe, kNN
and few-shot on the procedural probe set against the untrained architecture ->
OUT/summary.json, OUT/results.md, OUT/results.png.

Every method gets one budget (:mod:`stablerep.experiments.budget`): the same images encoded per
step (views included), the same steps, the same augmentation. :func:`build_demo_plan` writes the
recipe down as a plan of stage jobs; :func:`run_demo` executes it (stablerep.experiments.plan),
and the Prefect pipeline flow executes the same plan as tasks. Every stage skips work already
committed (captions, shards, checkpoints), so a rerun resumes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from stablerep import storage
from stablerep.config import SynthesisConfig
from stablerep.experiments.plan import (
    CaptionsStep,
    ExperimentPlan,
    ProbeEvaluation,
    SynthesisStep,
    run_plan,
)
from stablerep.experiments.runs import ComparisonSettings, training_step, trains_on
from stablerep.generator.shipped import shipped_generator
from stablerep.stages import SynthesisJob

DemoMethod = Literal["stablerep", "stablerep_plus", "simclr", "clip"]
CEILING = "supervised"


class DemoConfig(ComparisonSettings):
    """The demo's settings; the defaults are the embedded offline run (under 10 minutes on 2 cores)."""

    captions: int = Field(512, ge=8, le=20_000, description="procedural captions to sample")
    methods: list[DemoMethod] = Field(default_factory=lambda: ["stablerep", "simclr", "clip"])
    ceiling: bool = Field(True, description="also train the supervised ceiling")
    probe_labels: list[Literal["shape", "colour"]] = Field(default_factory=lambda: ["shape", "colour"])
    probe_per_class: int = Field(100, ge=8, description="probe-set training images per class")
    probe_test_per_class: int = Field(150, ge=6, description="probe-set test images per class (5-shot episodes "
                                      "need the shots and at least one query)")
    captions_per_shard: int = Field(128, ge=1)
    source: Literal["renderer", "generator"] = Field(
        "renderer", description="the synthetic images' source: the procedural renderer (a perfect generator: the "
                                "scene its caption describes) or a text-to-image model through the diffusers "
                                "backend (the shipped one unless `generator` names another)")
    generator: str | None = Field(None, description="source=generator: a diffusers pipeline folder (default: the "
                                                    "generator shipped in stablerep/assets)")
    guidance: float | None = Field(None, ge=0, description="source=generator: classifier-free guidance (default: "
                                                           "the model's recommended)")
    generation_steps: int | None = Field(None, ge=1, description="source=generator: sampler steps (default: the "
                                                                 "model's recommended)")
    seed: int = Field(0, description="caption sample and synthesis seed")
    real_seed: int = Field(7919, description="seed stream of the 'real' renders")

    @model_validator(mode="after")
    def _check(self) -> DemoConfig:
        if not self.methods:
            raise ValueError("methods: give at least one of stablerep, stablerep_plus, simclr, clip")
        if self.source == "renderer" and (self.generator, self.guidance, self.generation_steps) != (None,) * 3:
            raise ValueError("generator, guidance and generation_steps apply to source=generator only")
        if self.seed == self.real_seed:
            raise ValueError("seed and real_seed must differ: the real renders need their own seed stream")
        self.check_comparison(self.training_methods(), self.captions)
        return self

    def training_methods(self) -> list[str]:
        return list(self.methods) + ([CEILING] if self.ceiling else [])


def synthesis_config(cfg: DemoConfig, kind: str) -> SynthesisConfig:
    """K images per caption (synthetic) or one render from the separate seed stream (real). Renders
    are made at twice the stored size and downscaled (antialiased), as a diffusion model's output
    would be; with source=generator the synthetic images come from the text-to-image model through
    the diffusers backend, at the model's own size, steps and guidance unless the demo sets them."""
    real = kind == "real"
    common = {"captions_per_shard": cfg.captions_per_shard, "image_size": cfg.image_size, "image_format": "png"}
    if not real and cfg.source == "generator":
        return SynthesisConfig(backend="diffusers", model=str(cfg.generator or shipped_generator()),
                               images_per_caption=cfg.images_per_caption, seed=cfg.seed, guidance=cfg.guidance,
                               steps=cfg.generation_steps, device=cfg.device, batch_size=64, **common)
    return SynthesisConfig(backend="procedural", images_per_caption=1 if real else cfg.images_per_caption,
                           seed=cfg.real_seed if real else cfg.seed, resolution=2 * cfg.image_size, **common)


def captions_step(out: str, cfg: DemoConfig, root: str, name: str = "captions") -> CaptionsStep:
    """The grammar's captions written to OUT/captions.txt and sampled into ``root``."""
    return CaptionsStep(name=name, root=root, source=storage.join(out, "captions.txt"), n=cfg.captions,
                        seed=cfg.seed, procedural=True)


def synthesis_step(cfg: DemoConfig, kind: str, captions_root: str, root: str, name: str | None = None
                   ) -> SynthesisStep:
    """The ``kind`` (synthetic or real) dataset of the captions in ``captions_root``, into ``root``."""
    return SynthesisStep(name=name or f"synthesize {kind}", job=SynthesisJob(
        captions=captions_root, out=root, synthesis=synthesis_config(cfg, kind), progress=False))


def probe_evaluation(cfg: DemoConfig) -> ProbeEvaluation:
    return ProbeEvaluation(labels=cfg.probe_labels, per_class=cfg.probe_per_class,
                           test_per_class=cfg.probe_test_per_class, render_size=2 * cfg.image_size)


def build_demo_plan(out: str, cfg: DemoConfig | None = None) -> ExperimentPlan:
    """The demo as stage jobs: captions, the synthetic and real datasets, every method at every
    seed on its dataset, the probe comparison."""
    cfg = cfg or DemoConfig()
    roots = {kind: storage.join(out, kind) for kind in ("synthetic", "real")}
    runs = [training_step(out, cfg, m, seed, roots[trains_on(m)]) for seed in cfg.seeds
            for m in cfg.training_methods()]
    datasets = [captions_step(out, cfg, roots["synthetic"])]
    datasets += [synthesis_step(cfg, kind, roots["synthetic"], root) for kind, root in roots.items()]
    return ExperimentPlan(recipe="demo", out=out, roots=roots, datasets=datasets, runs=runs,
                          evaluation=probe_evaluation(cfg), budget_match=cfg.budget,
                          settings=cfg.model_dump(mode="json"))


def run_demo(out: str, cfg: DemoConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every stage and write the report; returns the summary (also OUT/summary.json)."""
    return run_plan(build_demo_plan(out, cfg), out, progress)
