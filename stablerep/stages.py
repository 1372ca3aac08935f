"""The pipeline's heavy stages as functions of URLs and one validated request.

`stablerep synthesize` and `stablerep train` build a request from their options and call these;
the Prefect tasks call them in their own process, or, when a stage needs isolation (a process
group that a timeout can kill, or torchrun's ranks), run the very same function in a child
process from the serialized request (`python -m stablerep.cli.stage STAGE REQUEST.json`, see
``tasks/subprocess_run.py``): the request is validated once, by the same model, and no options
are parsed again. The demo calls them too, so every path runs one code path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stablerep.checkpoint import latest_checkpoint
from stablerep.config import RunConfig, SynthesisConfig
from stablerep.corpora import importer
from stablerep.corpora.importer import ImportConfig
from stablerep.data import RandomCaptionBatches
from stablerep.data.shards import build_shard_batches
from stablerep.devices import resolve_device
from stablerep.evaluation.suite import merged_suite, run_evaluation
from stablerep.models import create_tokenizer_for_run
from stablerep.synthesis import create_backend, synthesize_dataset
from stablerep.training import run_training_loop
from stablerep.world import run_targets


class SynthesisJob(BaseModel):
    """Synthesise the planned shards of ``captions`` (a root holding captions.parquet) into ``out``."""

    model_config = ConfigDict(extra="forbid")

    captions: str = Field(description="dataset root holding captions.parquet")
    out: str = Field(description="dataset root to write (may equal captions)")
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    shards: list[int] | None = Field(None, description="only these planned shards (default: all)")
    owner: str = Field("a dataset build", description="who holds the root's writer lease (named to others)")
    progress: bool = True


class ImportJob(BaseModel):
    """Import the image-caption corpus at ``sources`` into the dataset root ``out``.

    ``phase`` ``all`` runs every phase holding the root's writer lease; a fan-out runs ``index``
    and ``write`` once per input file (``inputs``), between ``plan`` and ``manifest``."""

    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(min_length=1, description="files, folders, globs or brace patterns; local or URL")
    out: str = Field(description="dataset root to write")
    config: ImportConfig = Field(default_factory=ImportConfig)
    phase: Literal["all", "request", "index", "plan", "write", "manifest"] = "all"
    inputs: list[int] | None = Field(None, description="index/write: only these input files (default: all)")
    owner: str = Field("a corpus import", description="who holds the root's writer lease (named to others)")
    lease_wait_s: float | None = Field(None, ge=0, description="wait this long for another writer of the root")
    workers: int = Field(1, ge=1, description="phase all: processes for the per-input phases (a flow runs "
                                              "them as tasks instead)")
    progress: bool = True


class TrainingJob(BaseModel):
    """Train ``run`` on ``data`` (a shard dataset root, or ``random`` for smoke runs) into ``run_dir``."""

    model_config = ConfigDict(extra="forbid")

    run: RunConfig
    data: str = Field("random", description="'random' (random tensors) or a shard dataset root")
    run_dir: str
    resume: bool = True
    progress: bool = True


def synthesize(job: SynthesisJob) -> dict[str, Any]:
    """Build the dataset (committed shards are skipped); what was written and skipped."""
    cfg = job.synthesis
    result = synthesize_dataset(job.captions, job.out, cfg, create_backend(cfg), progress=job.progress,
                                shards=job.shards, owner=job.owner)
    return {"root": job.out, "written": result.written, "skipped": result.skipped,
            "totals": result.manifest.get("totals") if result.manifest else None}


def import_dataset(job: ImportJob) -> dict[str, Any]:
    """Run the import (or one phase of it); committed work is skipped. The summary has counts and
    index ranges, not every shard."""
    cfg, root = job.config, job.out
    if job.phase == "all":
        result = importer.import_corpus(job.sources, root, cfg, owner=job.owner, progress=job.progress,
                                        wait_s=job.lease_wait_s, workers=job.workers)
        return _import_summary(root, result.inputs, result.written, result.skipped, result.manifest)
    if job.phase == "request":
        inputs, chash = importer.open_request(job.sources, root, cfg)
        return {"root": root, "inputs": len(inputs), "config_hash": chash}
    inputs, cfg, chash = importer.load_request(root)
    chosen = range(len(inputs)) if job.inputs is None else job.inputs
    if job.phase == "index":
        marks = [importer.index_input(root, inputs, i, cfg, chash) for i in chosen]
        return {"root": root, "inputs": list(chosen), "rows": sum(m["rows"] for m in marks),
                "usable": sum(m["usable"] for m in marks)}
    if job.phase == "plan":
        plan = importer.plan_import(root, inputs, cfg, chash, wait_s=job.lease_wait_s)
        return {"root": root, "shards": len(plan["bounds"]), "captions": plan["rows"], "images": sum(plan["images"]),
                "inputs_with_shards": sorted(set(plan["inputs"]))}
    if job.phase == "write":
        written, skipped = [], []
        for i in chosen:
            w, s = importer.write_input(root, inputs, i, cfg, chash)
            written += w
            skipped += s
        return {"root": root, "inputs": list(chosen), "written": len(written), "skipped": len(skipped)}
    manifest = importer.finish_import(root, inputs, cfg, chash, wait_s=job.lease_wait_s)
    return _import_summary(root, len(inputs), [], [], manifest)


def _import_summary(root: str, inputs: int, written: list[int], skipped: list[int],
                    manifest: dict[str, Any] | None) -> dict[str, Any]:
    totals = (manifest or {}).get("totals", {})
    lineage = (manifest or {}).get("lineage", {})
    return {"root": root, "inputs": inputs, "captions": totals.get("captions"), "images": totals.get("images"),
            "shards": totals.get("shards"), "written": len(written), "skipped": len(skipped),
            "skipped_rows": lineage.get("rows_skipped", {})}


def train(job: TrainingJob) -> dict[str, Any]:
    """Train on this rank's share (ranks from torchrun's environment); the run's summary."""
    run = job.run
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if job.data == "random":
        context = run.model.text.context_length if run.model.text is not None else None
        source = RandomCaptionBatches(run.data.captions_per_batch, run.data.images_per_caption,
                                      run.data.image_size, context_length=context,
                                      num_captions=max(512, run.data.captions_per_batch),
                                      seed=run.train.seed, rank=rank, world_size=world)
    else:
        pin = resolve_device(run.train.device).type == "cuda"
        source = build_shard_batches(job.data, run, rank, world, pin_memory=pin,
                                     tokenizer=create_tokenizer_for_run(run), targets=run_targets(run))
    result = run_training_loop(run, source, job.run_dir, resume=job.resume, progress=job.progress)
    # Only rank 0 saves checkpoints; the others read the pointer it wrote before the last barrier.
    checkpoint = result.checkpoint if rank == 0 else latest_checkpoint(job.run_dir)
    return {"run_dir": result.run_dir, "steps": result.steps_done, "resumed_from": result.resumed_from,
            "final_loss": result.final_loss, "checkpoint": checkpoint}


class EvaluationJob(BaseModel):
    """Score encoders on labelled datasets: a suite file and/or suite fields given inline (see
    :func:`stablerep.evaluation.suite.merged_suite` for how they merge), reported under ``out``."""

    model_config = ConfigDict(extra="forbid")
    out: str | None = Field(description="directory for summary.json, results.md, results.png (None: no report)")
    suite_file: str | None = Field(None, description="a suite YAML; the inline fields go on top of it")
    suite: dict[str, Any] = Field(default_factory=dict, description="suite fields: datasets, encoders, "
                                  "protocols, features, seed")
    skip_bad_images: bool = Field(False, description="skip (and count) unreadable images in every dataset")
    progress: bool = True


def evaluate(job: EvaluationJob, on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every encoder on every dataset of the job's suite (linear probe, kNN, few-shot, zero-shot);
    the summary (``results[dataset][encoder][metric]``, settings, timings, cache, report)."""
    suite = merged_suite(job.suite_file, job.suite, job.skip_bad_images)
    return run_evaluation(suite, job.out, progress=job.progress, on_step=on_step)


STAGES = {"synthesize": (SynthesisJob, synthesize), "train": (TrainingJob, train),
          "evaluate": (EvaluationJob, evaluate),
          "import": (ImportJob, import_dataset)}
