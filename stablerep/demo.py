"""The offline end-to-end demo: does StableRep learn, against SimCLR, CLIP and random init?

procedural captions -> procedural synthesis (K images per caption) -> Parquet shards, and the
"real" analogue (one render per caption from a separate seed stream) -> train StableRep on the
synthetic shards, SimCLR and CLIP on the real ones (same captions, same tiny ViT, same steps and
captions per batch) -> linear probe, kNN and few-shot on the procedural probe set ->
OUT/summary.json, OUT/results.md, OUT/results.png.

Each stage is a function of URLs so that the Prefect tasks can run them one by one; every stage
skips work already committed (shards, checkpoints), so a rerun resumes.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from stablerep import storage
from stablerep.config import RunConfig, SynthesisConfig, load_config

DemoMethod = Literal["stablerep", "stablerep_plus", "simclr", "clip"]
# Which images each method trains on: synthetic (K per caption) or the "real" renders (1 per caption).
TRAINS_ON = {"stablerep": "synthetic", "stablerep_plus": "synthetic", "simclr": "real", "clip": "real"}


class DemoConfig(BaseModel):
    """The demo's settings; the defaults are the embedded offline run (about 7 minutes on 2 cores)."""

    model_config = ConfigDict(extra="forbid")

    captions: int = Field(512, ge=8, le=20_000, description="procedural captions to sample")
    images_per_caption: int = Field(4, ge=2, le=32, description="synthetic images per caption (K)")
    image_size: int = Field(64, ge=16, le=256, description="stored and trained image size (px)")
    steps: int = Field(1000, ge=1, description="training steps of every method")
    captions_per_batch: int = Field(16, ge=2)
    methods: list[DemoMethod] = Field(default_factory=lambda: ["stablerep", "simclr", "clip"])
    probe_labels: list[Literal["shape", "colour"]] = Field(default_factory=lambda: ["shape", "colour"])
    probe_per_class: int = Field(40, ge=8, description="probe-set training images per class")
    captions_per_shard: int = Field(128, ge=1)
    seed: int = Field(0, description="caption sample, synthesis and training seed")
    real_seed: int = Field(7919, description="seed stream of the 'real' renders")

    @model_validator(mode="after")
    def _check(self) -> DemoConfig:
        if not self.methods:
            raise ValueError("methods: give at least one of stablerep, stablerep_plus, simclr, clip")
        if self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 (the ViT patch), got {self.image_size}")
        if self.captions_per_batch > self.captions:
            raise ValueError(f"captions_per_batch ({self.captions_per_batch}) exceeds captions ({self.captions})")
        if self.seed == self.real_seed:
            raise ValueError("seed and real_seed must differ: the real renders need their own seed stream")
        return self


def dataset_root(out: str, kind: str) -> str:
    return storage.join(out, kind)


def make_captions(out: str, cfg: DemoConfig) -> str:
    """Write OUT/captions.txt (the grammar's captions) and sample them into OUT/synthetic."""
    from stablerep.captions.sample import sample_captions, write_captions
    from stablerep.shards.layout import captions_url
    from stablerep.world import procedural_captions

    root = dataset_root(out, "synthetic")
    if storage.exists(captions_url(root)):
        return root
    source = storage.join(out, "captions.txt")
    storage.write_bytes(source, ("\n".join(procedural_captions(cfg.captions, cfg.seed)) + "\n").encode())
    write_captions(root, sample_captions(source, cfg.captions, cfg.seed, progress=False))
    return root


def synthesis_config(cfg: DemoConfig, kind: str) -> SynthesisConfig:
    """K renders per caption (synthetic) or one from the separate seed stream (real)."""
    real = kind == "real"
    return SynthesisConfig(backend="procedural", images_per_caption=1 if real else cfg.images_per_caption,
                           seed=cfg.real_seed if real else cfg.seed, captions_per_shard=cfg.captions_per_shard,
                           resolution=2 * cfg.image_size, image_size=cfg.image_size, image_format="png")


def run_config(cfg: DemoConfig, method: str) -> RunConfig:
    """The tiny-ViT run of ``method`` at the demo's size, steps and batch."""
    preset = "tiny_cpu_plus" if method in ("stablerep_plus", "clip") else "tiny_cpu"
    views = {"simclr": 2, "clip": 1}.get(method, cfg.images_per_caption)
    return load_config(preset, [f"loss.method={method}", f"data.images_per_caption={views}",
                                f"model.img_size={cfg.image_size}", f"data.image_size={cfg.image_size}",
                                f"data.captions_per_batch={cfg.captions_per_batch}", f"train.steps={cfg.steps}",
                                f"train.log_every={max(1, cfg.steps // 20)}", f"train.seed={cfg.seed}",
                                "train.device=cpu"])


def train_method(out: str, cfg: DemoConfig, method: str, progress: bool = True) -> str:
    """Train ``method`` on its images; returns the run directory (resumes a partial run)."""
    from stablerep.data.shards import build_shard_batches
    from stablerep.training import train

    run = run_config(cfg, method)
    run_dir = storage.join(out, "runs", method)
    train(run, build_shard_batches(dataset_root(out, TRAINS_ON[method]), run), run_dir, progress=progress)
    return run_dir


def evaluate_methods(out: str, cfg: DemoConfig, run_dirs: dict[str, str], progress=None) -> dict[str, Any]:
    from stablerep.evaluation.compare import compare_runs

    return compare_runs(run_dirs, labels=tuple(cfg.probe_labels), per_class=cfg.probe_per_class,
                        progress=progress)


def run_demo(out: str, cfg: DemoConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every stage and write the report; returns the summary (also OUT/summary.json)."""
    from stablerep.evaluation.compare import write_report
    from stablerep.synthesis import build_dataset, create_backend

    cfg = cfg or DemoConfig()
    timings: dict[str, float] = {}
    scorings = (len(cfg.methods) + 1) * len(cfg.probe_labels)  # encoders (+ random init) x labels
    stages = 3 + len(cfg.methods) + scorings  # captions, 2 datasets, trainings, scorings
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
            syn = synthesis_config(cfg, kind)
            stage(f"synthesize {kind}", lambda s=syn, k=kind: build_dataset(
                captions_root, dataset_root(out, k), s, create_backend(s), progress=False))
        runs = {m: stage(f"train {m}", train_method, out, cfg, m, False) for m in cfg.methods}
        t0 = time.perf_counter()

        def scored(message: str) -> None:
            bar.set_postfix_str(f"evaluated {message}")
            bar.update()

        summary = evaluate_methods(out, cfg, runs, progress=scored)
        timings["evaluate"] = round(time.perf_counter() - t0, 2)
        summary["settings"] = cfg.model_dump(mode="json")
        summary["timings_s"] = {**timings, "total": round(sum(timings.values()), 2)}
        summary["runs"] = runs
        summary["datasets"] = {kind: dataset_root(out, kind) for kind in ("synthetic", "real")}
        summary["report"] = write_report(out, summary)
    return summary
