"""The offline end-to-end demo: a fair comparison of StableRep with SimCLR and CLIP, in miniature.

procedural captions -> procedural synthesis (K images per caption) -> Parquet shards, and the
"real" analogue (one render per caption from a separate seed stream) -> for each training seed:
StableRep on the synthetic shards, SimCLR and CLIP on the real ones, and the supervised ceiling
(the same architecture trained on the synthetic images' caption attributes) -> linear probe, kNN
and few-shot on the procedural probe set against the untrained architecture ->
OUT/summary.json, OUT/results.md, OUT/results.png.

Every method gets one budget (:mod:`stablerep.budget`): the same images encoded per step (views
included), the same steps, the same augmentation. Each stage is a function of URLs, so the Prefect
pipeline runs the same stages as tasks; every stage skips work already committed (shards,
checkpoints), so a rerun resumes.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from stablerep import storage
from stablerep.budget import Budget, budget_of, captions_per_step, matched_run
from stablerep.captions.sample import sample_captions, write_captions
from stablerep.config import AugmentConfig, RunConfig, SynthesisConfig, load_config
from stablerep.evaluation.compare import compare_runs, write_report
from stablerep.generator.shipped import shipped_generator
from stablerep.methods import get_method
from stablerep.shards.layout import captions_url
from stablerep.stages import SynthesisJob, TrainingJob
from stablerep.stages import synthesize as synthesize_stage
from stablerep.stages import train as train_stage
from stablerep.world import write_procedural_captions

DemoMethod = Literal["stablerep", "stablerep_plus", "simclr", "clip"]
CEILING = "supervised"


def _demo_augment() -> AugmentConfig:
    """The paper's augmentations with a gentler crop and blur for 32 px images (tiny_cpu's)."""
    return AugmentConfig(crop_scale=(0.35, 1.0), blur_sigma=(0.1, 1.0))


class DemoConfig(BaseModel):
    """The demo's settings; the defaults are the embedded offline run (under 10 minutes on 2 cores)."""

    model_config = ConfigDict(extra="forbid")

    captions: int = Field(512, ge=8, le=20_000, description="procedural captions to sample")
    images_per_caption: int = Field(4, ge=2, le=32, description="synthetic images per caption (K = StableRep's m)")
    image_size: int = Field(32, ge=16, le=256, description="stored and trained image size (px)")
    backbone: str = Field("resnet_tiny_cpu", description="every method's backbone (a timm name or alias)")
    steps: int = Field(400, ge=1, description="training steps of every method")
    images_per_step: int = Field(64, ge=2, description="images encoded per step by every method (views included)")
    budget: Literal["images", "captions"] = Field(
        "images", description="images: equal images per step (fair compute); captions: equal captions per "
                              "step (images_per_step / K each), as the paper frames it")
    methods: list[DemoMethod] = Field(default_factory=lambda: ["stablerep", "simclr", "clip"])
    ceiling: bool = Field(True, description="also train the supervised ceiling")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="training seeds of every method")
    augment: AugmentConfig = Field(default_factory=_demo_augment, description="every method's augmentation")
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
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: give distinct training seeds, got {self.seeds}")
        if self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8, got {self.image_size}")
        if self.source == "renderer" and (self.generator, self.guidance, self.generation_steps) != (None,) * 3:
            raise ValueError("generator, guidance and generation_steps apply to source=generator only")
        if self.seed == self.real_seed:
            raise ValueError("seed and real_seed must differ: the real renders need their own seed stream")
        budget = demo_budget(self)
        for method in self.training_methods():
            captions = captions_per_step(budget, method, self.images_per_caption)  # checks divisibility
            if captions > self.captions:
                raise ValueError(f"{method} needs {captions} captions per step; the demo has {self.captions}")
        return self

    def training_methods(self) -> list[str]:
        return list(self.methods) + ([CEILING] if self.ceiling else [])


def demo_budget(cfg: DemoConfig) -> Budget:
    """The one budget every method of the demo gets."""
    if cfg.budget == "captions":
        return Budget(match="captions", captions_per_step=max(1, cfg.images_per_step // cfg.images_per_caption),
                      steps=cfg.steps, augment=cfg.augment)
    return Budget(match="images", images_per_step=cfg.images_per_step, steps=cfg.steps, augment=cfg.augment)


def dataset_root(out: str, kind: str) -> str:
    return storage.join(out, kind)


def run_dir(out: str, method: str, seed: int) -> str:
    return storage.join(out, "runs", method, f"seed-{seed}")


def make_captions(out: str, cfg: DemoConfig) -> str:
    """Write OUT/captions.txt (the grammar's captions) and sample them into OUT/synthetic."""
    root = dataset_root(out, "synthetic")
    if storage.exists(captions_url(root)):
        return root
    source = storage.join(out, "captions.txt")
    write_procedural_captions(source, cfg.captions, cfg.seed)
    write_captions(root, sample_captions(source, cfg.captions, cfg.seed, progress=False))
    return root


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
                               steps=cfg.generation_steps, device="cpu", batch_size=64, **common)
    return SynthesisConfig(backend="procedural", images_per_caption=1 if real else cfg.images_per_caption,
                           seed=cfg.real_seed if real else cfg.seed, resolution=2 * cfg.image_size, **common)


def trains_on(method: str) -> str:
    """``synthetic`` (K images per caption) or ``real`` (the one real render per caption)."""
    return get_method(method).trains_on


def run_config(cfg: DemoConfig, method: str, seed: int) -> RunConfig:
    """The run of ``method`` at the demo's backbone and size, under the demo's budget, from ``seed``."""
    preset = "tiny_cpu_plus" if get_method(method).text else "tiny_cpu"
    base = load_config(preset, [f"model.img_size={cfg.image_size}", f"data.image_size={cfg.image_size}",
                                f"model.backbone={cfg.backbone}",
                                f"train.log_every={max(1, cfg.steps // 20)}", f"train.seed={seed}",
                                "train.device=cpu", f"train.steps={cfg.steps}"])
    return matched_run(base, method, demo_budget(cfg), cfg.images_per_caption)


def train_method(out: str, cfg: DemoConfig, method: str, seed: int, progress: bool = True,
                 kind: str | None = None) -> str:
    """Train ``method`` from ``seed`` on its images (stablerep.stages.train, the path of `stablerep
    train` and the training task); returns the run directory (resumes a partial run). ``kind``
    (synthetic or real) overrides the method's usual dataset (the guidance study trains SimCLR on
    generated images too)."""
    directory = run_dir(out, method, seed)
    train_stage(TrainingJob(run=run_config(cfg, method, seed), data=dataset_root(out, kind or trains_on(method)),
                            run_dir=directory, progress=progress))
    return directory


def synthesize_kind(out: str, cfg: DemoConfig, kind: str, captions_root: str, progress: bool = False
                    ) -> dict[str, Any]:
    """The synthetic or the real dataset (stablerep.stages.synthesize, the path of `stablerep
    synthesize` and the shard task)."""
    return synthesize_stage(SynthesisJob(captions=captions_root, out=dataset_root(out, kind),
                                         synthesis=synthesis_config(cfg, kind), progress=progress))


def compare_methods(out: str, cfg: DemoConfig, runs: dict[str, dict[int, str]], progress=None) -> dict[str, Any]:
    """Every run and each seed's untrained architecture on the probe set; means, intervals, budget."""
    summary = compare_runs(runs, labels=tuple(cfg.probe_labels), per_class=cfg.probe_per_class,
                           test_per_class=cfg.probe_test_per_class, render_size=2 * cfg.image_size,
                           progress=progress)
    summary["budget"] = {m: budget_of(run_config(cfg, m, cfg.seeds[0])) for m in runs}
    summary["budget_match"] = cfg.budget
    return summary


def run_demo(out: str, cfg: DemoConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every stage and write the report; returns the summary (also OUT/summary.json)."""
    cfg = cfg or DemoConfig()
    timings: dict[str, float] = {}
    methods = cfg.training_methods()
    scorings = (len(methods) + 1) * len(cfg.seeds) * len(cfg.probe_labels)  # runs (+ random init) x labels
    stages = 3 + len(methods) * len(cfg.seeds) + scorings
    with tqdm(total=stages, desc="demo", unit="stage", disable=None if progress else True, position=0) as bar:
        def stage(name: str, fn, *args):
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            value = fn(*args)
            timings[name] = round(time.perf_counter() - t0, 2)
            bar.update()
            return value

        captions_root = stage("captions", make_captions, out, cfg)
        for kind in ("synthetic", "real"):
            stage(f"synthesize {kind}", synthesize_kind, out, cfg, kind, captions_root)
        runs: dict[str, dict[int, str]] = {m: {} for m in methods}
        for seed in cfg.seeds:
            for m in methods:
                runs[m][seed] = stage(f"train {m} seed {seed}", train_method, out, cfg, m, seed, False)
        t0 = time.perf_counter()

        def scored(message: str) -> None:
            bar.set_postfix_str(f"evaluated {message}")
            bar.update()

        summary = compare_methods(out, cfg, runs, progress=scored)
        timings["evaluate"] = round(time.perf_counter() - t0, 2)
        summary["settings"] = cfg.model_dump(mode="json")
        summary["timings_s"] = {**timings, "total": round(sum(timings.values()), 2)}
        summary["runs"] = runs
        summary["datasets"] = {kind: dataset_root(out, kind) for kind in ("synthetic", "real")}
        summary["report"] = write_report(out, summary)
    return summary
