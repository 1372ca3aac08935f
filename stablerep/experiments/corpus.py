"""The paper's comparison on your own image-caption corpus.

Import ``captions`` captions of the corpus with their real images (img2dataset webdataset or
parquet output, WebDataset tars, Hugging Face parquet, a CSV of image paths) -> synthesise K
images for each of the same captions -> StableRep on the synthetic images, SimCLR and CLIP on the
real ones, every method and seed under one budget -> every encoder and each seed's untrained
architecture scored on your labelled evaluation datasets (the evaluation suite's
``NAME=KIND:...`` specs) -> OUT/summary.json, results.md and results.png with 95% intervals and
what the intervals support.

Layout: OUT/real (the imported corpus), OUT/synthetic (its captions' generated images),
OUT/runs/METHOD/seed-SEED, then the report. `stablerep experiment` and the
`stablerep-pipeline/corpus` deployment run it; a rerun resumes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from stablerep import storage
from stablerep.config import Backend, SynthesisConfig
from stablerep.corpora.importer import ImportConfig
from stablerep.data.labelled import parse_dataset_spec
from stablerep.evaluation.suite import DatasetEntry, dataset_short_forms
from stablerep.experiments.compare import comparison_protocols
from stablerep.experiments.plan import (
    ExperimentPlan,
    ImportStep,
    SuiteEvaluation,
    SynthesisStep,
    run_plan,
)
from stablerep.experiments.runs import ComparisonSettings, training_step, trains_on
from stablerep.generator.shipped import shipped_generator
from stablerep.stages import ImportJob, SynthesisJob

CorpusMethod = Literal["stablerep", "stablerep_plus", "simclr", "clip"]
# set once, at the top of the experiment, for the import and the synthesis alike
SHARED = {"reader": {"n": "captions", "seed": "seed", "image_size": "image_size",
                     "captions_per_shard": "captions_per_shard"},
          "synthesis": {"images_per_caption": "images_per_caption", "seed": "seed", "image_size": "image_size",
                        "captions_per_shard": "captions_per_shard"}}


class ExperimentSynthesis(SynthesisConfig):
    """A synthesis request whose default model is the generator shipped with the package, through
    the diffusers backend (any backend works: ``backend: tiny``, ``procedural``, or ``diffusers``
    with ``model`` a local pipeline folder or a cached model id)."""

    backend: Backend = "diffusers"
    model: str = Field(default_factory=lambda: str(shipped_generator()),
                       description="diffusers model id or local path (default: the shipped generator)")
    batch_size: int = Field(32, ge=1, description="images per backend call")


class CorpusExperimentConfig(ComparisonSettings):
    """The request: the corpus, the evaluation datasets, and the comparison's settings."""

    sources: list[str] = Field(min_length=1, description="the corpus: files, folders, globs or brace patterns; "
                                                         "local or URL (s3://...)")
    # a spec string is read as {spec: ...} before validation; the union tells the flow's parameter
    # schema (checked by the Prefect server before a run starts) that a plain string is fine
    suite: dict[str, DatasetEntry | str] = Field(
        min_length=1, description="evaluation datasets, name -> KIND:... spec (imagefolder:PATH, parquet:PATH, "
                                  "torchvision:NAME:ROOT) or its options ({spec: ..., skip_bad_images: true, ...})")
    captions: int | None = Field(None, ge=1, description="captions to sample from the corpus (default: all)")
    seed: int = Field(0, description="caption sample and synthesis seed")
    captions_per_shard: int = Field(1000, ge=1, description="captions per shard, real and synthetic")
    methods: list[CorpusMethod] = Field(default_factory=lambda: ["stablerep", "simclr", "clip"],
                                        description="StableRep(+) train on the synthetic images, SimCLR and CLIP "
                                                    "on the real ones")
    reader: ImportConfig = Field(default_factory=ImportConfig, description="how to read the corpus: format, "
                                 "image_column, caption_column, skip_bad_images, caption filters")
    synthesis: ExperimentSynthesis = Field(default_factory=ExperimentSynthesis, description="how to make the "
                                           "synthetic images: backend, model, steps, guidance, device, ...")
    l2_values: int = Field(12, ge=1, description="linear probe: L2 strengths tried")
    few_shot_episodes: int = Field(100, ge=1, description="5-way 5-shot episodes")
    feature_cache: str | None = Field(None, description="feature cache directory (default: none)")

    @field_validator("suite", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return dataset_short_forms(value)

    @model_validator(mode="after")
    def _check(self) -> CorpusExperimentConfig:
        if not self.methods:
            raise ValueError("methods: give at least one of stablerep, stablerep_plus, simclr, clip")
        for section, shared in SHARED.items():
            nested = getattr(self, section)
            for key in sorted(set(shared) & nested.model_fields_set):
                if getattr(nested, key) != getattr(self, shared[key]):
                    raise ValueError(f"{section}.{key}: set by the experiment; set {shared[key]} instead")
        for name, entry in self.suite.items():
            parse_dataset_spec(entry.spec)  # an unknown kind fails now, not after training
            if "=" in name or not name:
                raise ValueError(f"suite: bad dataset name {name!r}")
        self.check_comparison(list(self.methods), self.captions)
        return self


def import_config(cfg: CorpusExperimentConfig) -> ImportConfig:
    return cfg.reader.model_copy(update={"n": cfg.captions, "seed": cfg.seed, "image_size": cfg.image_size,
                                         "captions_per_shard": cfg.captions_per_shard})


def synthesis_config(cfg: CorpusExperimentConfig) -> SynthesisConfig:
    tree = cfg.synthesis.model_dump()
    tree.update(images_per_caption=cfg.images_per_caption, seed=cfg.seed, image_size=cfg.image_size,
                captions_per_shard=cfg.captions_per_shard)
    return SynthesisConfig.model_validate(tree)


def build_corpus_plan(out: str, cfg: CorpusExperimentConfig) -> ExperimentPlan:
    """The corpus experiment as stage jobs: import -> synthesise the same captions -> every method
    at every seed on its dataset -> the suite comparison."""
    roots = {"real": storage.join(out, "real"), "synthetic": storage.join(out, "synthetic")}
    datasets = [
        ImportStep(name="import real", job=ImportJob(sources=cfg.sources, out=roots["real"],
                                                     config=import_config(cfg), progress=False)),
        SynthesisStep(name="synthesize synthetic", job=SynthesisJob(
            captions=roots["real"], out=roots["synthetic"], synthesis=synthesis_config(cfg), progress=False)),
    ]
    runs = [training_step(out, cfg, m, seed, roots[trains_on(m)]) for seed in cfg.seeds for m in cfg.methods]
    evaluation = SuiteEvaluation(datasets=cfg.suite, device=cfg.device, cache=cfg.feature_cache, seed=cfg.seed,
                                 protocols=comparison_protocols(cfg.l2_values, cfg.few_shot_episodes))
    settings = {**cfg.model_dump(mode="json"), "reader": datasets[0].job.config.model_dump(mode="json"),
                "synthesis": datasets[1].job.synthesis.model_dump(mode="json")}  # as the jobs run them
    return ExperimentPlan(recipe="corpus", out=out, roots=roots, datasets=datasets, runs=runs,
                          evaluation=evaluation, budget_match=cfg.budget, settings=settings)


def run_corpus_experiment(out: str, cfg: CorpusExperimentConfig, progress: bool = True) -> dict[str, Any]:
    """Run every stage and write the report; returns the summary (also OUT/summary.json)."""
    return run_plan(build_corpus_plan(out, cfg), out, progress)
